//! Memory budgets, enforced at poll boundaries.
//!
//! A `GlobalAlloc` must not unwind, and a null return aborts the process, so a budget cannot stop
//! an allocation inside a poll. Instead, after every poll the hook folds the poll's counters into the
//! request's account and judges the request's **peak net bytes** against its grant:
//!
//! - `peak ≥ 50 %` / `≥ 90 %` of `mem_hard`: checkpoint flags (the runtime may re-predict);
//! - `peak > mem_soft`: the soft checkpoint flag (the runtime may extend the grant);
//! - `peak > mem_hard`: `Cancel(BudgetExceeded(Memory))`; the executor drops the future before its
//!   next poll, which returns its memory, and the HTTP layer answers 503.
//!
//! **Overshoot.** The check runs after the poll, so a request can exceed `mem_hard` by what *one
//! poll* allocates. That overshoot is bounded by admission, not here: the policy sizes headroom in
//! the process-wide [`MemoryPool`](crate::MemoryPool) for the predicted upper quantile of a poll's
//! allocation plus a fixed process headroom, so one runaway poll eats headroom rather than the
//! process.

use pagegen_core::{CheckpointLevel, Grant};

/// What one post-poll check found.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemCheck {
    /// Peak crossed 50 % of the hard limit.
    pub half: bool,
    /// Peak crossed 90 % of the hard limit.
    pub ninety: bool,
    /// Peak crossed the soft limit.
    pub soft: bool,
    /// Peak crossed the hard limit: cancel.
    pub over: bool,
}

impl MemCheck {
    /// Judges `peak` (bytes of peak net allocation) against soft and hard limits (`u64::MAX`:
    /// unlimited).
    pub fn judge(peak: i64, soft: u64, hard: u64) -> MemCheck {
        if peak <= 0 {
            return MemCheck::default();
        }
        let p = peak as u128;
        let limited = |l: u64| l != u64::MAX;
        MemCheck {
            half: limited(hard) && p * 2 >= hard as u128,
            ninety: limited(hard) && p * 10 >= hard as u128 * 9,
            soft: limited(soft) && p > soft as u128,
            over: limited(hard) && p > hard as u128,
        }
    }

    /// Judges `peak` against a grant.
    pub fn against(peak: i64, grant: &Grant) -> MemCheck {
        MemCheck::judge(peak, grant.mem_soft.min(grant.mem_hard), grant.mem_hard)
    }

    /// The checkpoint levels this check reached, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = CheckpointLevel> {
        [
            (self.half, CheckpointLevel::Half),
            (self.ninety, CheckpointLevel::Ninety),
            (self.soft, CheckpointLevel::Soft),
        ]
        .into_iter()
        .filter_map(|(hit, l)| hit.then_some(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_fire_in_order() {
        let hard = 1000;
        assert_eq!(MemCheck::judge(0, 800, hard), MemCheck::default());
        assert_eq!(MemCheck::judge(-50, 0, 0), MemCheck::default());
        let c = MemCheck::judge(500, 800, hard);
        assert!(c.half && !c.ninety && !c.soft && !c.over);
        let c = MemCheck::judge(900, 800, hard);
        assert!(c.half && c.ninety && c.soft && !c.over);
        assert!(
            !MemCheck::judge(1000, 800, hard).over,
            "reaching the limit is allowed"
        );
        assert!(MemCheck::judge(1001, 800, hard).over);
        assert_eq!(MemCheck::judge(1001, 800, hard).levels().count(), 3);
        assert_eq!(
            MemCheck::judge(i64::MAX, u64::MAX, u64::MAX),
            MemCheck::default(),
            "unlimited grants never checkpoint"
        );
    }

    proptest! {
        #[test]
        fn over_implies_every_level(peak in 0i64..1 << 40, soft in 0u64..1 << 40, hard in 0u64..1 << 40) {
            let soft = soft.min(hard);
            let c = MemCheck::judge(peak, soft, hard);
            prop_assert_eq!(c.over, peak as u64 > hard);
            if c.over {
                prop_assert!(c.half && c.ninety && c.soft);
            }
            if c.ninety {
                prop_assert!(c.half);
            }
        }
    }
}
