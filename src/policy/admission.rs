//! Admission: may a granted request start now?
//!
//! A request is admitted when both hold:
//! 1. **memory**: its hard limit (`Grant::mem_hard`) can be reserved from the process-wide
//!    [`MemoryPool`], so the sum of live budgets never passes the pool; and
//! 2. **queueing**: the predicted delay before it runs in its pool — the central CPU estimates of the
//!    pool's admitted, unfinished requests divided by the pool's workers — plus its own central CPU
//!    fits its wall-clock budget (`Grant::wall_ns`). A request that would time out waiting is better
//!    refused now, while a retry elsewhere can still help.
//!
//! Otherwise it waits — bounded by the configured admission wait, woken whenever a ticket is
//! released — and is then shed with a [`Refusal`] (the HTTP edge answers 503 + `Retry-After`). A
//! budget larger than the whole pool (for a budget above the pool's small size: the pool less its
//! small-grant reserve, `mem_reserve`) is refused at once ([`Refusal::TooLarge`]): no wait can help.
//!
//! A [`Ticket`] is the admitted request's hold on both: dropping it releases the reservation and the
//! pool load and wakes waiters. Load is tracked per pool and per class (the shares policy reads the
//! per-class count of outstanding requests).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use pagegen_alloc::{AllocError, MemoryPool, Reservation};
use pagegen_core::{ClassId, Demand, Grant, PoolId};
use tokio::sync::Notify;

use crate::policy::counters::{Decision, Decisions};

/// Why a request was not admitted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// The memory pool had no room for its budget within the admission wait.
    Memory {
        /// Bytes asked.
        needed: u64,
        /// Bytes free for a budget of its size when it gave up (less the small-grant reserve for a
        /// budget above the pool's small size), as the pool's last attempt saw them.
        available: u64,
    },
    /// Its pool's predicted queueing delay did not fit its deadline within the admission wait.
    Overloaded {
        /// Predicted delay, ns.
        delay_ns: u64,
        /// Its wall-clock budget, ns.
        deadline_ns: u64,
    },
    /// Its budget is larger than the whole memory pool.
    TooLarge {
        /// Bytes asked.
        needed: u64,
        /// The most a budget of this size may hold: the pool's capacity, less the small-grant
        /// reserve for a budget above the pool's small size.
        capacity: u64,
    },
}

impl Refusal {
    /// The decision counter it maps to.
    pub fn decision(self) -> Decision {
        match self {
            Refusal::Memory { .. } => Decision::ShedMemory,
            Refusal::Overloaded { .. } => Decision::ShedOverload,
            Refusal::TooLarge { .. } => Decision::ShedTooLarge,
        }
    }
    /// Whether retrying later can help (a `Retry-After` is worth sending).
    pub fn retryable(self) -> bool {
        !matches!(self, Refusal::TooLarge { .. })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Memory { needed, available } => write!(
                f,
                "overloaded: no memory for this request ({needed} bytes needed, {available} free)"
            ),
            Refusal::Overloaded {
                delay_ns,
                deadline_ns,
            } => write!(
                f,
                "overloaded: predicted wait {} µs exceeds the {} µs deadline",
                delay_ns / 1000,
                deadline_ns / 1000
            ),
            Refusal::TooLarge { needed, capacity } => write!(
                f,
                "request budget {needed} bytes exceeds the {capacity} bytes one budget of this size may \
                 hold (`memory_pool`, less `mem_reserve` for budgets above the small size)"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

#[derive(Debug, Default)]
struct Load {
    /// Sum of the central CPU estimates of admitted, unfinished requests, ns.
    cpu_ns: AtomicU64,
    /// Admitted, unfinished requests.
    requests: AtomicU64,
}

/// The admission controller of one runtime.
#[derive(Debug)]
pub struct Admission {
    memory: Arc<MemoryPool>,
    pools: Box<[(Load, u64)]>,
    classes: Box<[AtomicU64]>,
    released: Notify,
    /// Requests waiting in [`Admission::admit`]: a release notifies only when some wait, so the
    /// common path never touches the `Notify`'s lock.
    waiting: AtomicU64,
    decisions: Arc<Decisions>,
}

struct WaitingGuard<'a>(&'a AtomicU64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An admitted request's hold on its memory and its pool's load; released on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    reservation: Option<Reservation>,
    pool: usize,
    class: ClassId,
    cpu_ns: u64,
}

impl Ticket {
    /// Bytes reserved.
    pub fn reserved(&self) -> u64 {
        self.reservation.as_ref().map_or(0, Reservation::bytes)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        drop(self.reservation.take());
        let (load, _) = &self.admission.pools[self.pool];
        load.cpu_ns.fetch_sub(self.cpu_ns, Relaxed);
        load.requests.fetch_sub(1, Relaxed);
        if let Some(c) = self.admission.classes.get(self.class.index()) {
            c.fetch_sub(1, Relaxed);
        }
        if self
            .admission
            .waiting
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            self.admission.released.notify_waiters();
        }
    }
}

impl Admission {
    /// A controller over `memory`, for pools of `workers[i]` workers each.
    pub fn new(memory: Arc<MemoryPool>, workers: &[usize], decisions: Arc<Decisions>) -> Arc<Self> {
        Arc::new(Admission {
            memory,
            pools: workers
                .iter()
                .map(|&w| (Load::default(), w.max(1) as u64))
                .collect(),
            classes: (0..ClassId::MAX_CLASSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            released: Notify::new(),
            waiting: AtomicU64::new(0),
            decisions,
        })
    }

    /// The memory pool.
    pub fn memory(&self) -> &Arc<MemoryPool> {
        &self.memory
    }

    /// Predicted delay before a new request runs in `pool`, ns.
    pub fn predicted_delay_ns(&self, pool: PoolId) -> u64 {
        let (load, workers) = &self.pools[self.pool_index(pool)];
        load.cpu_ns.load(Relaxed) / workers
    }

    /// Admitted, unfinished requests of `class`.
    pub fn outstanding(&self, class: ClassId) -> u64 {
        self.classes
            .get(class.index())
            .map_or(0, |c| c.load(Relaxed))
    }

    fn pool_index(&self, pool: PoolId) -> usize {
        (pool.0 as usize).min(self.pools.len() - 1)
    }

    /// One attempt, no waiting.
    ///
    /// # Errors
    /// The [`Refusal`] that applies now.
    pub fn try_admit(self: &Arc<Self>, grant: &Grant, demand: &Demand) -> Result<Ticket, Refusal> {
        let needed = grant.mem_hard;
        // A large budget may not take the pool's small-grant reserve (pagegen_alloc::pool).
        let capacity = self.memory.max_grant(needed);
        if needed > capacity {
            return Err(Refusal::TooLarge { needed, capacity });
        }
        let pool = self.pool_index(grant.pool);
        let cpu = demand.cpu_ns.central;
        let delay_ns = self.predicted_delay_ns(grant.pool);
        if delay_ns.saturating_add(cpu) > grant.wall_ns {
            return Err(Refusal::Overloaded {
                delay_ns,
                deadline_ns: grant.wall_ns,
            });
        }
        let reservation = self
            .memory
            .try_reserve(needed)
            .map_err(|e| Refusal::Memory {
                needed,
                // What the pool's reservation attempt saw free for a budget of this size.
                available: match e {
                    AllocError::PoolExhausted { available, .. } => available,
                    _ => 0,
                },
            })?;
        let (load, _) = &self.pools[pool];
        load.cpu_ns.fetch_add(cpu, Relaxed);
        load.requests.fetch_add(1, Relaxed);
        if let Some(c) = self.classes.get(grant.class.index()) {
            c.fetch_add(1, Relaxed);
        }
        Ok(Ticket {
            admission: Arc::clone(self),
            reservation: Some(reservation),
            pool,
            class: grant.class,
            cpu_ns: cpu,
        })
    }

    /// Admits the request, waiting at most `wait` (woken by every release), counting the decision.
    ///
    /// # Errors
    /// The last [`Refusal`] when the wait ran out (or at once for [`Refusal::TooLarge`]).
    pub async fn admit(
        self: &Arc<Self>,
        grant: &Grant,
        demand: &Demand,
        wait: Duration,
    ) -> Result<Ticket, Refusal> {
        // Fast path: no lock, no timer.
        match self.try_admit(grant, demand) {
            Ok(t) => {
                self.decisions.count(grant.class, Decision::Admitted);
                return Ok(t);
            }
            Err(r @ Refusal::TooLarge { .. }) => {
                self.decisions.count(grant.class, r.decision());
                return Err(r);
            }
            Err(r) if wait.is_zero() => {
                self.decisions.count(grant.class, r.decision());
                return Err(r);
            }
            Err(_) => {}
        }
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _waiting = WaitingGuard(&self.waiting);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the next release before trying again, so a release between the try
            // and the wait is not missed (Notify's `enable` protocol); a release reads `waiting`
            // after giving back, and it was raised before this try (both SeqCst).
            let notified = self.released.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.try_admit(grant, demand) {
                Ok(t) => {
                    self.decisions
                        .count(grant.class, Decision::AdmittedAfterWait);
                    return Ok(t);
                }
                Err(r) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        self.decisions.count(grant.class, r.decision());
                        return Err(r);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::Estimate;

    fn grant(class: u32, mem: u64, wall: u64, pool: PoolId) -> Grant {
        Grant {
            mem_hard: mem,
            mem_soft: mem,
            wall_ns: wall,
            pool,
            ..Grant::unlimited(ClassId::from_raw(class))
        }
    }
    fn cpu(ns: u64) -> Demand {
        Demand {
            cpu_ns: Estimate::exact(ns),
            ..Demand::default()
        }
    }

    #[test]
    fn memory_bounds_the_sum_of_live_budgets() {
        let a = Admission::new(MemoryPool::with_capacity(100), &[1, 1], Arc::default());
        let g = grant(1, 40, u64::MAX, PoolId::LATENCY);
        let t1 = a.try_admit(&g, &cpu(0)).unwrap();
        let t2 = a.try_admit(&g, &cpu(0)).unwrap();
        assert_eq!(
            a.try_admit(&g, &cpu(0)).unwrap_err(),
            Refusal::Memory {
                needed: 40,
                available: 20
            }
        );
        assert_eq!(a.outstanding(ClassId::from_raw(1)), 2);
        drop(t1);
        assert_eq!(t2.reserved(), 40);
        let _t3 = a.try_admit(&g, &cpu(0)).unwrap();
        let huge = grant(1, 101, u64::MAX, PoolId::LATENCY);
        let r = a.try_admit(&huge, &cpu(0)).unwrap_err();
        assert!(!r.retryable() && r.decision() == Decision::ShedTooLarge);
    }

    #[test]
    fn large_budgets_leave_the_small_reserve_to_light_requests() {
        // 100 bytes, the last 20 only for budgets of at most 5.
        let a = Admission::new(
            MemoryPool::with_small_reserve(100, 20, 5),
            &[1, 1],
            Arc::default(),
        );
        let hog = grant(1, 40, u64::MAX, PoolId::BULK);
        let _h = [
            a.try_admit(&hog, &cpu(0)).unwrap(),
            a.try_admit(&hog, &cpu(0)).unwrap(),
        ];
        assert_eq!(
            a.try_admit(&hog, &cpu(0)).unwrap_err(),
            Refusal::Memory {
                needed: 40,
                available: 0
            },
            "the hogs stop at the reserve"
        );
        let light = grant(2, 5, u64::MAX, PoolId::LATENCY);
        let lights: Vec<Ticket> = (0..4)
            .map(|_| {
                a.try_admit(&light, &cpu(0))
                    .expect("the reserve is the light pages'")
            })
            .collect();
        assert_eq!(lights.iter().map(Ticket::reserved).sum::<u64>(), 20);
        assert!(matches!(
            a.try_admit(&light, &cpu(0)),
            Err(Refusal::Memory { .. })
        ));
        // A large budget that fits the pool but not the pool less the reserve can never start.
        let r = a
            .try_admit(&grant(1, 90, u64::MAX, PoolId::BULK), &cpu(0))
            .unwrap_err();
        assert_eq!(
            r,
            Refusal::TooLarge {
                needed: 90,
                capacity: 80
            }
        );
        let why = r.to_string();
        assert!(
            why.contains("90 bytes exceeds the 80 bytes") && why.contains("mem_reserve"),
            "{why}"
        );
    }

    #[test]
    fn queueing_delay_must_fit_the_deadline_per_pool() {
        let a = Admission::new(MemoryPool::with_capacity(1 << 30), &[2, 1], Arc::default());
        let slow = grant(1, 1, u64::MAX, PoolId::BULK);
        let _busy = a.try_admit(&slow, &cpu(50_000_000)).unwrap();
        assert_eq!(a.predicted_delay_ns(PoolId::BULK), 50_000_000);
        assert_eq!(a.predicted_delay_ns(PoolId::LATENCY), 0);
        let tight = grant(2, 1, 10_000_000, PoolId::BULK);
        assert!(matches!(
            a.try_admit(&tight, &cpu(1)),
            Err(Refusal::Overloaded {
                delay_ns: 50_000_000,
                deadline_ns: 10_000_000
            })
        ));
        // The latency pool is not loaded by the bulk pool's work.
        let light = grant(2, 1, 10_000_000, PoolId::LATENCY);
        assert!(a.try_admit(&light, &cpu(1)).is_ok());
    }

    #[test]
    fn a_waiting_request_is_admitted_when_a_ticket_is_released() {
        let a = Admission::new(MemoryPool::with_capacity(10), &[1], Arc::default());
        let g = grant(3, 10, u64::MAX, PoolId::LATENCY);
        let held = a.try_admit(&g, &cpu(0)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let waiter = {
                let a = a.clone();
                tokio::spawn(async move {
                    a.admit(&g, &cpu(0), Duration::from_secs(5))
                        .await
                        .map(|t| t.reserved())
                })
            };
            tokio::task::yield_now().await;
            drop(held);
            waiter.await.unwrap()
        });
        assert_eq!(got, Ok(10));
        assert_eq!(a.decisions.snapshot().get(Decision::AdmittedAfterWait), 1);
        // With the pool full and nobody releasing, the wait ends in a refusal (paused clock:
        // the timeout fires without real time passing).
        let _held = a.try_admit(&g, &cpu(0)).unwrap();
        let r = rt.block_on(a.admit(&g, &cpu(0), Duration::from_millis(50)));
        assert!(matches!(r, Err(Refusal::Memory { .. })));
        assert_eq!(a.decisions.snapshot().get(Decision::ShedMemory), 1);
    }
}
