//! Class virtual time: the pure arithmetic of weighted-fair CPU sharing.
//!
//! The idea is CFS's (and Seastar's/glommio's for task queues), written here afresh: each class keeps
//! a *virtual runtime* that grows by the CPU its tasks used, divided by its weight; the scheduler runs
//! the runnable class whose virtual runtime is smallest. Two always-runnable classes with shares
//! `a : b` then receive CPU in the ratio `a : b`, whatever the lengths of their polls, because a
//! class is picked again only once the others have caught up in virtual time.
//!
//! Rules kept here (the executor's `class.rs` applies them with atomics):
//! - **charge**: `vruntime += cpu_ns * BASE / shares`, so a class at the default shares accrues
//!   virtual time at the rate of real CPU time;
//! - **pick**: the smallest virtual runtime among runnable classes; ties go to the lower class id;
//! - **placement**: a class that was idle (its virtual runtime far behind) is lifted to
//!   `floor - SLACK_NS` before it is charged, where `floor` is the smallest virtual runtime the
//!   scheduler has recently picked. An idle class therefore cannot save up credit and then starve
//!   the others when it comes back; it gets at most `SLACK_NS` of head start.
#![forbid(unsafe_code)]

use pagegen_core::Shares;

/// The weight at which virtual time runs at real-time speed: the default shares (100).
pub(crate) const BASE: u64 = Shares::DEFAULT.get() as u64;

/// Virtual head start a newly runnable class keeps, ns of default-weight CPU. 3 ms is the CFS
/// minimum-granularity range (0.75–3 ms): long enough that a class waking from idle runs ahead of
/// busy ones at once (that is the latency win of being idle), short enough that it cannot hoard.
pub(crate) const SLACK_NS: u64 = 3_000_000;

/// Virtual time `cpu_ns` of CPU costs a class of weight `shares`.
#[inline]
pub(crate) fn weighted(cpu_ns: u64, shares: u64) -> u64 {
    let shares = shares.clamp(1, Shares::MAX.get() as u64);
    // u128: 1 hour of CPU times BASE overflows nothing, but a saturating clock could hand us u64::MAX.
    ((cpu_ns as u128 * BASE as u128) / shares as u128).min(u64::MAX as u128) as u64
}

/// The virtual runtime a class at `vruntime` is charged from, given the scheduler's `floor`.
#[inline]
pub(crate) fn placed(vruntime: u64, floor: u64) -> u64 {
    vruntime.max(floor.saturating_sub(SLACK_NS))
}

/// The position in `candidates` (`(class index, vruntime)`) of the class to run next: the smallest
/// virtual runtime, ties to the lower class index. `None` when there is none.
#[cfg(test)]
pub(crate) fn pick(candidates: &[(usize, u64)]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(_, &(class, vr))| (vr, class))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_shares_run_at_real_time() {
        assert_eq!(weighted(1_000, 100), 1_000);
        assert_eq!(weighted(1_000, 300), 333);
        assert_eq!(weighted(1_000, 1), 100_000);
        assert_eq!(weighted(1_000, 0), 100_000, "zero shares clamp to 1");
        assert_eq!(weighted(u64::MAX, 1), u64::MAX, "saturates");
    }

    #[test]
    fn placement_caps_the_credit_of_an_idle_class() {
        assert_eq!(placed(0, 10 * SLACK_NS), 9 * SLACK_NS);
        assert_eq!(
            placed(50, 10),
            50,
            "a class ahead of the floor keeps its time"
        );
        assert_eq!(placed(0, SLACK_NS / 2), 0, "no underflow near zero");
    }

    #[test]
    fn pick_takes_the_smallest_then_the_lowest_id() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[(3, 10), (1, 5), (2, 5)]), Some(1));
        assert_eq!(pick(&[(3, 10), (2, 5), (1, 5)]), Some(2));
    }

    /// A virtual-clock simulation of `workers` workers sharing always-runnable classes: at each step
    /// the worker whose clock is earliest picks the class of least virtual time and runs one poll of
    /// that class's next length. Returns the CPU each class received.
    fn simulate(shares: &[u64], polls: &[Vec<u64>], workers: usize, steps: usize) -> Vec<u64> {
        let n = shares.len();
        let mut vr = vec![0u64; n];
        let mut cpu = vec![0u64; n];
        let mut next = vec![0usize; n];
        let mut clocks = vec![0u64; workers];
        let mut floor = 0u64;
        for _ in 0..steps {
            let w = (0..workers).min_by_key(|&w| clocks[w]).unwrap();
            let cands: Vec<(usize, u64)> = (0..n).map(|c| (c, vr[c])).collect();
            let c = cands[pick(&cands).unwrap()].0;
            floor = floor.max(vr[c]);
            let len = polls[c][next[c] % polls[c].len()];
            next[c] += 1;
            vr[c] = placed(vr[c], floor) + weighted(len, shares[c]);
            cpu[c] += len;
            clocks[w] += len;
        }
        cpu
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Share ratios converge to the weights: each class's fraction of the CPU is within 2 % (of
        /// the total) of its fraction of the shares, for any weights and any poll lengths between
        /// 1 µs and 2 ms, on one or several workers.
        #[test]
        fn cpu_split_converges_to_shares(
            shares in prop::collection::vec(1u64..=1000, 2..5),
            lens in prop::collection::vec(prop::collection::vec(1_000u64..2_000_000, 1..8), 5),
            workers in 1usize..4,
        ) {
            let polls = &lens[..shares.len()];
            let cpu = simulate(&shares, polls, workers, 40_000);
            let total_cpu: u64 = cpu.iter().sum();
            let total_shares: u64 = shares.iter().sum();
            // The longest poll bounds how far one class can run past its fair point; on 40 000
            // polls that is a small fraction of the total.
            for (c, &s) in shares.iter().enumerate() {
                let got = cpu[c] as f64 / total_cpu as f64;
                let want = s as f64 / total_shares as f64;
                prop_assert!(
                    (got - want).abs() < 0.02,
                    "class {c}: got {got:.4} of the CPU, shares say {want:.4} ({shares:?})"
                );
            }
        }

        /// A class that was idle while another ran comes back with at most SLACK_NS of credit: it
        /// runs alone for no more than SLACK_NS * shares / BASE of CPU before the busy class runs.
        #[test]
        fn a_returning_class_cannot_hoard(
            shares in 1u64..=1000,
            idle_ns in 0u64..10_000_000_000,
            poll in 1_000u64..1_000_000,
        ) {
            // The busy class ran alone for `idle_ns`: the floor followed it.
            let busy_vr = weighted(idle_ns, 100);
            let floor = busy_vr;
            let mut back = placed(0, floor);
            let mut alone = 0u64;
            while back <= busy_vr {
                back += weighted(poll, shares);
                alone += poll;
            }
            // Plus one poll (the one that crosses), plus 1 % for the rounding down of each charge.
            let bound = SLACK_NS * shares / BASE * 101 / 100 + 2 * poll;
            prop_assert!(alone <= bound, "ran {alone} ns alone, bound {bound}");
        }
    }
}
