//! The per-class EWMA baseline.
//!
//! Per class and resource it keeps an exponentially weighted mean `m` and variance `s²` of
//! `y = ln(1 + v)`, with weight `max(1/n, alpha)` so the first requests form a plain running mean (a
//! new class is learned from its first observation) and later ones forget at rate `alpha`.
//! Central = `m` (the geometric mean, the median of a log-normal); upper = `m + z·s` with
//! `z = Φ⁻¹(0.99)`, but never more than twice the largest value the class has shown. A censored
//! record only moves `m` up: it says "at least this much".
//!
//! The cap: a route whose requests differ by orders of magnitude (`/synthetic?mem_kb=` serving a
//! replay of 1–20 MiB calls after a storm of 64–256 MiB ones) has a log-space spread of several
//! units, and `m + z·s` then lands at 10⁵ times anything seen: 282,493 GiB of memory and 114,478 s
//! of CPU for that route in a harness run. Every request was refused as larger than the pool
//! (`TooLarge`), a refused request is censored and cannot bring `m` down, so the class stayed
//! shut until a restart. Twice the largest observation still covers the class's known tail, and a
//! request past it is the checkpoints' business, not admission's.
//!
//! Until a class has one uncensored record its estimates are never below the prior's: lower
//! bounds alone (a shed request used nothing) would otherwise read as a class that needs nothing,
//! and a memory hog whose requests were all shed would be granted the latency pool
//! (benches/RESULTS.md, 2026-12-08; the recurrent model serves the prior in that case).

use std::sync::Mutex;

use pagegen_core::{ClassId, Demand, Features, ProfileRecord};

use crate::predictor::Predictor;
use crate::published::{Prior, Published, Z_UPPER};
use crate::table::ClassTable;
use crate::target::{targets, vacuous, Targets, RESOURCES};

/// EWMA settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EwmaConfig {
    /// Weight of a new observation once the class has `1/alpha` observations.
    pub alpha: f32,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        // 0.05: a half-life of ~14 requests; plucked from thin air (short enough to follow a
        // deploy within seconds at web rates), and shared with the model's running statistics.
        EwmaConfig { alpha: 0.05 }
    }
}

#[derive(Debug, Default)]
struct State {
    n: u32,
    /// Uncensored records seen (saturating).
    measured: u32,
    mean: Targets,
    var: Targets,
    /// Largest target seen (censored ones included: the usage was at least that).
    max: Targets,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    out: Published,
}

/// Per-class EWMA of log demand.
#[derive(Debug, Default)]
pub struct EwmaPredictor {
    config: EwmaConfig,
    prior: Prior,
    classes: ClassTable<Slot>,
}

impl EwmaPredictor {
    /// A predictor that has seen nothing.
    pub fn new(config: EwmaConfig, prior: Prior) -> Self {
        EwmaPredictor {
            config,
            prior,
            classes: ClassTable::new(),
        }
    }
}

impl EwmaPredictor {
    /// [`observe`](Predictor::observe) with the record's [`targets`] already computed (by
    /// [`Deployed`](crate::Deployed), which shares them among its predictors).
    pub(crate) fn observe_targets(&self, record: &ProfileRecord, y: &Targets) {
        if vacuous(record, y) {
            return;
        }
        let Some(slot) = self.classes.get_or_init(record.class, Slot::default) else {
            return;
        };
        let censored = record.censored();
        let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        st.n = st.n.saturating_add(1);
        if !censored {
            st.measured = st.measured.saturating_add(1);
        }
        let w = (1.0 / st.n as f32).max(self.config.alpha);
        let mut c = [0f32; RESOURCES];
        let mut u = [0f32; RESOURCES];
        for i in 0..RESOURCES {
            let d = y[i] - st.mean[i];
            if !(censored && d <= 0.0) {
                st.mean[i] += w * d;
                st.var[i] = (1.0 - w) * (st.var[i] + w * d * d);
            }
            // Targets are ≥ 0 (`ln(1 + v)`), so the zeroed state needs no first-observation case.
            st.max[i] = st.max[i].max(y[i]);
            c[i] = st.mean[i];
            u[i] = (st.mean[i] + Z_UPPER * st.var[i].max(0.0).sqrt())
                .min(st.max[i] + std::f32::consts::LN_2)
                .max(c[i]);
            if st.measured == 0 {
                self.prior.floor(i, &mut c[i], &mut u[i]);
            }
        }
        slot.out.store(&c, &u);
    }
}

impl Predictor for EwmaPredictor {
    fn name(&self) -> &'static str {
        "ewma"
    }
    fn predict(&self, class: ClassId, _features: &Features) -> Demand {
        match self.classes.get(class) {
            Some(s) => s.out.demand(),
            None => self.prior.demand(),
        }
    }
    fn observe(&self, record: &ProfileRecord) {
        self.observe_targets(record, &targets(record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{CancelReason, Outcome, Resource, Usage};

    fn rec(cpu: u64) -> ProfileRecord {
        let mut u = Usage::default();
        u.cpu.cpu_ns = cpu;
        ProfileRecord::new(0, ClassId::from_raw(1), u)
    }

    #[test]
    fn learns_a_level_and_a_spread() {
        let p = EwmaPredictor::new(EwmaConfig::default(), Prior::default());
        for i in 0..200u64 {
            p.observe(&rec(if i % 2 == 0 { 1_000_000 } else { 2_000_000 }));
        }
        let d = p.predict(ClassId::from_raw(1), &Features::default());
        assert!(
            d.cpu_ns.central > 1_200_000 && d.cpu_ns.central < 1_700_000,
            "{d:?}"
        );
        assert!(d.cpu_ns.upper > 2_000_000);
    }

    #[test]
    fn the_upper_estimate_stays_within_twice_the_largest_observation() {
        let p = EwmaPredictor::new(EwmaConfig::default(), Prior::default());
        // One route, two populations five orders of magnitude apart.
        for i in 0..200u64 {
            p.observe(&rec(if i % 2 == 0 { 1_000 } else { 100_000_000 }));
        }
        let d = p.predict(ClassId::from_raw(1), &Features::default());
        // m + z·s alone: about exp(11.5 + 2.33 · 5.7) ns, some minutes.
        assert!(d.cpu_ns.upper >= 100_000_000, "{d:?}");
        assert!(d.cpu_ns.upper <= 200_010_000, "{d:?}");
        // A steady class keeps its own spread, far inside the cap.
        let q = EwmaPredictor::new(EwmaConfig::default(), Prior::default());
        for i in 0..200u64 {
            q.observe(&rec(1_000_000 + (i % 3) * 100_000));
        }
        let d = q.predict(ClassId::from_raw(1), &Features::default());
        assert!(
            d.cpu_ns.upper > 1_200_000 && d.cpu_ns.upper < 2_000_000,
            "{d:?}"
        );
    }

    #[test]
    fn censored_records_only_raise() {
        let p = EwmaPredictor::new(EwmaConfig::default(), Prior::default());
        for _ in 0..50 {
            p.observe(&rec(1_000_000));
        }
        let before = p.predict(ClassId::from_raw(1), &Features::default());
        let mut low = rec(10);
        low.outcome = Outcome::Shed;
        for _ in 0..50 {
            p.observe(&low);
        }
        assert_eq!(
            p.predict(ClassId::from_raw(1), &Features::default()),
            before
        );
        let mut high = rec(5_000_000);
        high.demoted = true;
        p.observe(&high);
        assert!(
            p.predict(ClassId::from_raw(1), &Features::default())
                .cpu_ns
                .central
                > before.cpu_ns.central
        );
    }

    #[test]
    fn a_class_known_only_from_below_is_never_predicted_under_the_prior() {
        let p = EwmaPredictor::new(EwmaConfig::default(), Prior::default());
        let prior = Prior::default().demand();
        let c = ClassId::from_raw(1);
        crate::predictor::testing::shed_before_running(&p, c, 20);
        // Cancelled past its memory budget after 300 ms of CPU: still only a lower bound.
        let mut cut = rec(300_000_000);
        cut.outcome = Outcome::Cancelled(CancelReason::BudgetExceeded(Resource::Memory));
        p.observe(&cut);
        let d = p.predict(c, &Features::default());
        for r in Resource::ALL {
            assert!(d.get(r).central >= prior.get(r).central, "{r:?}: {d:?}");
            assert!(d.get(r).upper >= prior.get(r).upper, "{r:?}: {d:?}");
        }
        // One request that ran to the end: from then on the class is its own measure.
        for _ in 0..50 {
            p.observe(&rec(10_000));
        }
        let d = p.predict(c, &Features::default());
        assert!(d.cpu_ns.central < prior.cpu_ns.central, "{d:?}");
    }
}
