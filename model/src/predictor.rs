//! The [`Predictor`] trait: what every predictor (baselines, the recurrent model, the deployed
//! champion) offers the runtime.
//!
//! Contracts:
//! - [`predict`](Predictor::predict) sits on the request path: it is cheap, takes no lock that a
//!   writer holds for long, and never allocates. Every estimate it returns is finite, `central <=
//!   upper`, and at most `exp(Y_MAX)` (see [`crate::target`]); the features may be anything (the
//!   predictor sanitizes them).
//! - [`observe`](Predictor::observe) runs on the completion path with the finished record. It may
//!   buffer and fold later (the recurrent model folds at most once per rate-limit interval per class).
//!   A censored record ([`ProfileRecord::censored`]) is a lower bound and is treated so.
//! - Predictors are object-safe and `Send + Sync`: the runtime holds them as `Arc<dyn Predictor>`.

use std::fmt;

use pagegen_core::{ClassId, Demand, Features, ProfileRecord};

/// Predicts a request's [`Demand`] from its class and features, and learns from completions.
pub trait Predictor: Send + Sync + fmt::Debug {
    /// Short stable name for reports (`"ewma"`, `"histogram"`, `"recurrent"`).
    fn name(&self) -> &'static str;
    /// The predicted demand of a request about to run. Allocation-free.
    fn predict(&self, class: ClassId, features: &Features) -> Demand;
    /// Learns from a finished request.
    fn observe(&self, record: &ProfileRecord);
}

/// Test support shared by the predictors' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Predictor;
    use crate::published::Prior;
    use pagegen_core::{ClassId, Features, Outcome, ProfileRecord, Usage};

    /// Shows `p` `n` requests of `class` shed before they ran (censored, zero usage), then checks
    /// that it still predicts the class at the prior, as a class it never saw
    /// (`target::vacuous`).
    pub(crate) fn shed_before_running(p: &dyn Predictor, class: ClassId, n: u64) {
        for i in 0..n {
            let mut shed = ProfileRecord::new(i, class, Usage::default());
            shed.outcome = Outcome::Shed;
            p.observe(&shed);
        }
        assert_eq!(
            p.predict(class, &Features::default()),
            Prior::default().demand(),
            "{} after {n} shed requests",
            p.name()
        );
    }
}
