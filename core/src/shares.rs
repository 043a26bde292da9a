//! The periodic re-weighting of classes.
//!
//! Every adjustment period (the policy's [`SharesPolicy::period`]) the executor gathers one
//! [`ClassLoad`] per registered class and calls [`SharesPolicy::adjust`]; the policy writes the new
//! shares of the classes it wants to change into `out`. The executor applies them at once (virtual time
//! is already weighted per class, so a change affects only CPU used from then on).
//!
//! Contract: `adjust` runs on one executor thread, off the poll path, and must not block. A policy
//! that returns nothing leaves shares as registered ([`StaticShares`]).

use std::time::Duration;

use crate::class::{ClassId, Shares};

/// What one class did during the last adjustment period.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClassLoad {
    /// The class.
    pub class: ClassId,
    /// Its shares during the period.
    pub shares: Shares,
    /// CPU its tasks used during the period, ns.
    pub cpu_ns: u64,
    /// Polls during the period.
    pub polls: u64,
    /// Tasks runnable at the end of the period.
    pub runnable: u64,
    /// 99th percentile of scheduled delay (wake → poll) of the class's polls during the period, ns:
    /// the executor keeps log2 buckets, so this is the upper bound of the bucket the p99 falls in (at
    /// most 2× the true value, never below it); 0 when no poll of the class was timed in the period
    /// (poll timing off, or a runtime with one class, where there is nothing to share).
    pub sched_delay_p99_ns: u64,
}

/// Decides class shares from observed load.
pub trait SharesPolicy: Send + 'static {
    /// How often to call [`adjust`](Self::adjust). 100 ms: long enough to average over many polls of a
    /// busy class, short enough to follow a burst (plucked from the range CFS and Seastar use).
    fn period(&self) -> Duration {
        Duration::from_millis(100)
    }
    /// Looks at the last period's loads and pushes `(class, new shares)` for every class to change.
    fn adjust(&mut self, loads: &[ClassLoad], out: &mut Vec<(ClassId, Shares)>);
}

/// The policy that keeps shares as registered.
#[derive(Clone, Copy, Debug, Default)]
pub struct StaticShares;

impl SharesPolicy for StaticShares {
    fn adjust(&mut self, _loads: &[ClassLoad], _out: &mut Vec<(ClassId, Shares)>) {}
}
