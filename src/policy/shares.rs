//! [`OutstandingShares`]: each period, a class's CPU weight follows the admitted requests it has
//! outstanding (queued or running), so the CPU is split per *request* rather than per class — a class
//! with one heavy request does not get as much CPU as a class with forty light ones waiting
//! (processor sharing among requests, the fairness a user of a plain runtime expects, kept even
//! when one class floods its queue).
//!
//! weight(class) = clamp(100 × outstanding, 1, 1000) for classes with outstanding requests; a class
//! with none returns to the default weight (100, one request's worth). Only classes whose weight
//! changes are written, so an idle site costs nothing. The default class (unclassified background
//! work) is left as registered.

use std::sync::Arc;

use pagegen_core::{ClassId, ClassLoad, Shares, SharesPolicy};

use crate::policy::admission::Admission;

/// Weight per outstanding request (the default shares, so one request weighs a default class).
const PER_REQUEST: u64 = 100;

/// The shares policy; see the module docs.
#[derive(Debug)]
pub struct OutstandingShares {
    admission: Arc<Admission>,
}

impl OutstandingShares {
    /// A policy reading outstanding requests from `admission`.
    pub fn new(admission: Arc<Admission>) -> Self {
        OutstandingShares { admission }
    }

    /// The weight a class should have with `outstanding` requests.
    pub fn weight(outstanding: u64) -> Shares {
        if outstanding == 0 {
            Shares::DEFAULT
        } else {
            Shares::saturating(outstanding.saturating_mul(PER_REQUEST))
        }
    }
}

impl SharesPolicy for OutstandingShares {
    fn adjust(&mut self, loads: &[ClassLoad], out: &mut Vec<(ClassId, Shares)>) {
        for l in loads.iter().filter(|l| l.class != ClassId::DEFAULT) {
            let w = Self::weight(self.admission.outstanding(l.class));
            if w != l.shares {
                out.push((l.class, w));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_alloc::MemoryPool;
    use pagegen_core::{Demand, Grant, PoolId};

    #[test]
    fn weights_follow_outstanding_requests() {
        assert_eq!(OutstandingShares::weight(0), Shares::DEFAULT);
        assert_eq!(Some(OutstandingShares::weight(1)), Shares::new(100));
        assert_eq!(Some(OutstandingShares::weight(40)), Shares::new(1000));
        let a = Admission::new(MemoryPool::with_capacity(1 << 20), &[1], Arc::default());
        let class = ClassId::from_raw(4);
        let g = Grant {
            mem_hard: 1,
            pool: PoolId::LATENCY,
            ..Grant::unlimited(class)
        };
        let _t = [
            a.try_admit(&g, &Demand::default()).unwrap(),
            a.try_admit(&g, &Demand::default()).unwrap(),
        ];
        let mut p = OutstandingShares::new(a);
        let load = |c: u32| ClassLoad {
            class: ClassId::from_raw(c),
            shares: Shares::DEFAULT,
            cpu_ns: 0,
            polls: 0,
            runnable: 0,
            sched_delay_p99_ns: 0,
        };
        let mut out = Vec::new();
        let mut after_burst = load(6);
        after_burst.shares = Shares::new(700).unwrap();
        let mut default = load(0);
        default.shares = Shares::new(5).unwrap();
        p.adjust(&[load(4), load(5), after_burst, default], &mut out);
        assert_eq!(
            out,
            vec![
                (class, Shares::new(200).unwrap()),
                (ClassId::from_raw(6), Shares::DEFAULT)
            ]
        );
    }
}
