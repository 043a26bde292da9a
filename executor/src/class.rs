//! The executor's per-class state: shares, virtual runtime, CPU used, the background context of
//! `spawn_in`, and the periodic [`SharesPolicy`] call.
//!
//! The table learns classes as a [`ClassObserver`] of the runtime's [`ClassRegistry`]: registering a
//! class (on the builder or at run time) or changing its shares (`ClassRegistry::set_shares`,
//! `Handle::set_shares`, a policy) reaches every worker through one relaxed atomic per class.
//!
//! Virtual time is shared coarsely, not under a lock: each class has one atomic virtual runtime that
//! workers add their charges to (batched per worker, see `worker.rs`), and one atomic `floor` (the
//! smallest virtual runtime recently picked) places classes that come back from idle
//! (`vruntime.rs`). Slots are cache-line aligned so two workers charging two classes do not share a
//! line. A class id beyond [`ClassId::MAX_CLASSES`] (only `ClassId::from_raw` can make one) is
//! scheduled as `default`.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pagegen_core::{
    ClassId, ClassLoad, ClassObserver, ClassRegistry, ClassSpec, Grant, PoolId, RequestCtx, Shares,
    SharesPolicy,
};

use crate::vruntime;

/// One class's scheduling state.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// 0 = never registered (scheduled at default shares).
    shares: AtomicU32,
    vruntime: AtomicU64,
    cpu_ns: AtomicU64,
    polls: AtomicU64,
    /// The class's starting pool (`ClassSpec::pool`).
    pool: AtomicU8,
    /// Scheduled delays since the policy's last call, as [`DelayBuckets`] counts; allocated at the
    /// class's first recorded delay (4096 slots exist, few are used).
    sched: OnceLock<Box<[AtomicU32; DELAY_BUCKETS]>>,
    /// Context of tasks spawned with `spawn_in(class, …)` outside any request.
    ctx: OnceLock<Arc<RequestCtx>>,
}

/// Number of log2 buckets of scheduled delay per class: bucket `b` holds delays in
/// `[2^b, 2^(b+1))` ns (bucket 0 also holds 0); the last one everything from 2^31 ns (2.1 s) up.
pub(crate) const DELAY_BUCKETS: usize = 32;

/// A worker's scheduled delays of one class not yet handed to the class table: log2 buckets (one
/// `leading_zeros` and one increment per poll), added into the table with the class's CPU charge.
#[derive(Clone, Copy)]
pub(crate) struct DelayBuckets {
    counts: [u32; DELAY_BUCKETS],
    any: bool,
}

impl DelayBuckets {
    pub(crate) const fn new() -> Self {
        DelayBuckets {
            counts: [0; DELAY_BUCKETS],
            any: false,
        }
    }

    #[inline]
    fn bucket(ns: u64) -> usize {
        ((63 - (ns | 1).leading_zeros()) as usize).min(DELAY_BUCKETS - 1)
    }

    /// Counts one scheduled delay of `ns`.
    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.any = true;
    }
}

/// The `q` quantile of the counts in `counts` (log2 buckets), as the **upper bound** of the bucket it
/// falls in (so within a factor of 2, never below the true value); 0 when there are none.
fn quantile_upper(counts: &[u64; DELAY_BUCKETS], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (b, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return if b == DELAY_BUCKETS - 1 {
                u64::MAX
            } else {
                (2u64 << b) - 1
            };
        }
    }
    u64::MAX
}

/// What the runtime knows of a class's scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassSchedStats {
    /// Current shares.
    pub shares: Shares,
    /// CPU its tasks used so far, ns (measured poll CPU; a nominal 1 µs a poll with poll timing off).
    pub cpu_ns: u64,
    /// Polls so far.
    pub polls: u64,
    /// Its virtual runtime, ns of default-weight CPU.
    pub vruntime: u64,
}

/// The policy and what it saw at its last call.
struct PolicyState {
    policy: Box<dyn SharesPolicy>,
    period: Duration,
    last: Instant,
    /// `(cpu_ns, polls)` per class at the last call.
    seen: Vec<(u64, u64)>,
    loads: Vec<ClassLoad>,
    out: Vec<(ClassId, Shares)>,
}

/// The per-class table, shared by every worker.
pub(crate) struct Classes {
    slots: Box<[Slot]>,
    /// Highest registered class index: workers scan lanes `0..=hi`.
    hi: AtomicUsize,
    /// Smallest virtual runtime recently picked (`vruntime.rs`, placement).
    floor: AtomicU64,
    policy: Mutex<Option<PolicyState>>,
    /// `Instant` of the next policy call, ns since `epoch` (u64::MAX: no policy).
    policy_due: AtomicU64,
    epoch: Instant,
}

impl Classes {
    pub(crate) fn new(policy: Option<Box<dyn SharesPolicy>>) -> Self {
        let epoch = Instant::now();
        let (state, due) = match policy {
            Some(policy) => {
                let period = policy.period();
                (
                    Some(PolicyState {
                        policy,
                        period,
                        last: epoch,
                        seen: Vec::new(),
                        loads: Vec::new(),
                        out: Vec::new(),
                    }),
                    period.as_nanos().min(u64::MAX as u128 - 1) as u64,
                )
            }
            None => (None, u64::MAX),
        };
        Classes {
            slots: (0..ClassId::MAX_CLASSES).map(|_| Slot::default()).collect(),
            hi: AtomicUsize::new(0),
            floor: AtomicU64::new(0),
            policy: Mutex::new(state),
            policy_due: AtomicU64::new(due),
            epoch,
        }
    }

    /// The table index of `class` (`default`'s for an id out of range).
    #[inline]
    pub(crate) fn index(class: ClassId) -> usize {
        if class.index() < ClassId::MAX_CLASSES {
            class.index()
        } else {
            0
        }
    }

    /// Highest class index registered so far.
    #[inline]
    pub(crate) fn hi(&self) -> usize {
        self.hi.load(Ordering::Relaxed)
    }

    fn shares_of(&self, i: usize) -> u64 {
        match self.slots[i].shares.load(Ordering::Relaxed) {
            0 => vruntime::BASE,
            s => s as u64,
        }
    }

    /// Virtual runtime of class index `i`.
    #[inline]
    pub(crate) fn vruntime(&self, i: usize) -> u64 {
        self.slots[i].vruntime.load(Ordering::Relaxed)
    }

    /// Records that a worker picked a class at virtual runtime `vr`: the floor moves up to it. Written
    /// only when it moves by a sizeable step, so picking does not write a shared line every poll.
    #[inline]
    pub(crate) fn picked(&self, vr: u64) {
        let floor = self.floor.load(Ordering::Relaxed);
        if vr > floor.saturating_add(vruntime::SLACK_NS / 8) {
            self.floor.fetch_max(vr, Ordering::Relaxed);
        }
    }

    /// Charges class index `i` for `cpu_ns` of CPU over `polls` polls.
    pub(crate) fn charge(&self, i: usize, cpu_ns: u64, polls: u64) {
        let s = &self.slots[i];
        let floor = self.floor.load(Ordering::Relaxed);
        let vr = s.vruntime.load(Ordering::Relaxed);
        let placed = vruntime::placed(vr, floor);
        if placed > vr {
            s.vruntime.fetch_max(placed, Ordering::Relaxed);
        }
        s.vruntime.fetch_add(
            vruntime::weighted(cpu_ns, self.shares_of(i)),
            Ordering::Relaxed,
        );
        s.cpu_ns.fetch_add(cpu_ns, Ordering::Relaxed);
        s.polls.fetch_add(polls, Ordering::Relaxed);
    }

    /// Adds a worker's pending scheduled delays of class index `i` into the table (one relaxed add
    /// per non-empty bucket) and empties them.
    pub(crate) fn add_delays(&self, i: usize, d: &mut DelayBuckets) {
        if !d.any {
            return;
        }
        let slots = self.slots[i]
            .sched
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU32::new(0))));
        for (slot, n) in slots.iter().zip(d.counts.iter_mut()) {
            if *n != 0 {
                slot.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        d.any = false;
    }

    /// Takes the scheduled delays of class index `i` recorded since the last call and returns their
    /// p99 (ns, the upper bound of its log2 bucket; 0 when none were recorded).
    fn take_delay_p99(&self, i: usize) -> u64 {
        let Some(slots) = self.slots[i].sched.get() else {
            return 0;
        };
        let mut counts = [0u64; DELAY_BUCKETS];
        for (c, s) in counts.iter_mut().zip(slots.iter()) {
            *c = s.swap(0, Ordering::Relaxed) as u64;
        }
        quantile_upper(&counts, 0.99)
    }

    /// The context `spawn_in(class, …)` gives a task spawned outside any request.
    pub(crate) fn ctx(&self, class: ClassId) -> Arc<RequestCtx> {
        let s = &self.slots[Self::index(class)];
        s.ctx
            .get_or_init(|| {
                let pool = PoolId(s.pool.load(Ordering::Relaxed));
                RequestCtx::new(
                    pagegen_core::RequestId::BACKGROUND,
                    Grant {
                        pool,
                        ..Grant::unlimited(class)
                    },
                    0,
                )
            })
            .clone()
    }

    /// What is known of `class`; `None` when it was never registered.
    pub(crate) fn stats(&self, class: ClassId) -> Option<ClassSchedStats> {
        let s = self.slots.get(class.index())?;
        let shares = Shares::new(s.shares.load(Ordering::Relaxed) as u16)?;
        Some(ClassSchedStats {
            shares,
            cpu_ns: s.cpu_ns.load(Ordering::Relaxed),
            polls: s.polls.load(Ordering::Relaxed),
            vruntime: s.vruntime.load(Ordering::Relaxed),
        })
    }

    /// Whether the shares policy is due (one relaxed load: the workers' check between ticks).
    #[inline]
    pub(crate) fn policy_due(&self) -> bool {
        let due = self.policy_due.load(Ordering::Relaxed);
        due != u64::MAX && self.epoch.elapsed().as_nanos() as u64 >= due
    }

    /// Calls the policy if it is due and no other worker is calling it; applies its changes through
    /// `registry` (so every observer hears them). `runnable` counts queued tasks of a class index.
    pub(crate) fn run_policy(&self, registry: &ClassRegistry, runnable: impl Fn(usize) -> u64) {
        let Ok(mut guard) = self.policy.try_lock() else {
            return;
        };
        let Some(st) = guard.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now < st.last + st.period {
            return;
        }
        st.last = now;
        let next = (now + st.period).duration_since(self.epoch).as_nanos() as u64;
        self.policy_due.store(next, Ordering::Relaxed);
        let hi = self.hi();
        st.seen.resize(hi + 1, (0, 0));
        st.loads.clear();
        for i in 0..=hi {
            let s = &self.slots[i];
            let Some(shares) = Shares::new(s.shares.load(Ordering::Relaxed) as u16) else {
                continue;
            };
            let cpu = s.cpu_ns.load(Ordering::Relaxed);
            let polls = s.polls.load(Ordering::Relaxed);
            let (cpu0, polls0) = std::mem::replace(&mut st.seen[i], (cpu, polls));
            st.loads.push(ClassLoad {
                class: ClassId::from_raw(i as u32),
                shares,
                cpu_ns: cpu - cpu0,
                polls: polls - polls0,
                runnable: runnable(i),
                sched_delay_p99_ns: self.take_delay_p99(i),
            });
        }
        st.out.clear();
        let PolicyState {
            policy, loads, out, ..
        } = st;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.adjust(loads, out)))
            .is_err()
        {
            tracing::warn!("the shares policy panicked; shares left as they were");
            return;
        }
        let changes = std::mem::take(out);
        // Outside the policy lock: the registry calls every observer, this table included.
        drop(guard);
        for (class, shares) in changes {
            registry.set_shares(class, shares);
        }
    }
}

impl ClassObserver for Classes {
    fn class_registered(&self, id: ClassId, spec: &ClassSpec) {
        if id.index() >= ClassId::MAX_CLASSES {
            return;
        }
        let s = &self.slots[id.index()];
        if s.shares.swap(spec.shares.get() as u32, Ordering::Relaxed) == 0 {
            // A new class starts at the floor, not at 0: it cannot claim the CPU others used
            // before it existed.
            let floor = self.floor.load(Ordering::Relaxed);
            s.vruntime
                .fetch_max(floor.saturating_sub(vruntime::SLACK_NS), Ordering::Relaxed);
        }
        s.pool.store(spec.pool.0, Ordering::Relaxed);
        if let Some(ctx) = s.ctx.get() {
            ctx.grant().set_pool(spec.pool);
        }
        self.hi.fetch_max(id.index(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Halve;
    impl SharesPolicy for Halve {
        fn period(&self) -> Duration {
            Duration::ZERO
        }
        fn adjust(&mut self, loads: &[ClassLoad], out: &mut Vec<(ClassId, Shares)>) {
            for l in loads {
                if l.cpu_ns > 0 {
                    out.push((l.class, Shares::saturating(l.shares.get() as u64 / 2)));
                }
            }
        }
    }

    #[test]
    fn registration_sets_shares_and_charges_weigh_by_them() {
        let reg = ClassRegistry::in_memory();
        let t = Arc::new(Classes::new(None));
        reg.subscribe(t.clone());
        let a = reg
            .register(ClassSpec::new("a").with_shares(Shares::new(300).unwrap()))
            .unwrap();
        assert_eq!(t.hi(), a.index());
        t.charge(a.index(), 3_000, 1);
        t.charge(0, 3_000, 1);
        assert_eq!(t.vruntime(a.index()), 1_000);
        assert_eq!(t.vruntime(0), 3_000);
        assert!(reg.set_shares(a, Shares::new(100).unwrap()));
        t.charge(a.index(), 3_000, 1);
        assert_eq!(t.vruntime(a.index()), 4_000);
        let st = t.stats(a).unwrap();
        assert_eq!((st.cpu_ns, st.polls, st.shares.get()), (6_000, 2, 100));
        assert_eq!(t.stats(ClassId::from_raw(7)), None, "never registered");
    }

    #[test]
    fn a_class_registered_late_starts_near_the_floor() {
        let reg = ClassRegistry::in_memory();
        let t = Arc::new(Classes::new(None));
        reg.subscribe(t.clone());
        t.charge(0, 100 * vruntime::SLACK_NS, 1);
        t.picked(t.vruntime(0));
        let late = reg.register(ClassSpec::new("late")).unwrap();
        assert_eq!(t.vruntime(late.index()), 99 * vruntime::SLACK_NS);
    }

    #[test]
    fn the_policy_sees_loads_and_its_changes_reach_the_registry() {
        let reg = ClassRegistry::in_memory();
        let t = Arc::new(Classes::new(Some(Box::new(Halve))));
        reg.subscribe(t.clone());
        let a = reg.register(ClassSpec::new("a")).unwrap();
        t.charge(a.index(), 1_000, 1);
        assert!(t.policy_due());
        t.run_policy(&reg, |_| 0);
        assert_eq!(reg.spec(a).unwrap().shares.get(), 50);
        assert_eq!(t.stats(a).unwrap().shares.get(), 50);
        assert_eq!(t.stats(ClassId::DEFAULT).unwrap().shares.get(), 100);
        // No CPU since: no change.
        t.run_policy(&reg, |_| 0);
        assert_eq!(reg.spec(a).unwrap().shares.get(), 50);
    }

    #[test]
    fn spawn_in_contexts_are_per_class_and_follow_the_class_pool() {
        let reg = ClassRegistry::in_memory();
        let t = Arc::new(Classes::new(None));
        reg.subscribe(t.clone());
        let a = reg.register(ClassSpec::new("a")).unwrap();
        let ctx = t.ctx(a);
        assert_eq!(ctx.class(), a);
        assert!(Arc::ptr_eq(&ctx, &t.ctx(a)));
        reg.register(ClassSpec::new("a").with_pool(pagegen_core::PoolId::BULK))
            .unwrap();
        assert_eq!(ctx.grant().pool(), pagegen_core::PoolId::BULK);
        assert_eq!(Classes::index(ClassId::from_raw(1 << 20)), 0);
    }

    /// Records every class's p99 of the period (the policy only sees `ClassLoad`s).
    struct Watch(Arc<Mutex<Vec<(ClassId, u64)>>>);
    impl SharesPolicy for Watch {
        fn period(&self) -> Duration {
            Duration::ZERO
        }
        fn adjust(&mut self, loads: &[ClassLoad], _: &mut Vec<(ClassId, Shares)>) {
            let mut seen = self.0.lock().unwrap();
            seen.clear();
            seen.extend(loads.iter().map(|l| (l.class, l.sched_delay_p99_ns)));
        }
    }

    #[test]
    fn delay_buckets_bound_the_quantile_from_above_within_a_factor_two() {
        let mut c = [0u64; DELAY_BUCKETS];
        assert_eq!(quantile_upper(&c, 0.99), 0, "nothing recorded");
        // 99 delays of 1 µs and one of 1 ms: p99 is the 99th value (1 µs), p100 the 1 ms one.
        let mut d = DelayBuckets::new();
        for _ in 0..99 {
            d.record(1_000);
        }
        d.record(1_000_000);
        for (c, n) in c.iter_mut().zip(d.counts) {
            *c = n as u64;
        }
        let p99 = quantile_upper(&c, 0.99);
        assert!((1_000..2_000).contains(&p99), "{p99}");
        let max = quantile_upper(&c, 1.0);
        assert!((1_000_000..2_000_000).contains(&max), "{max}");
        // 0 and 1 ns share bucket 0; beyond 2^31 ns everything lands in the last bucket.
        assert_eq!(DelayBuckets::bucket(0), 0);
        assert_eq!(DelayBuckets::bucket(1), 0);
        assert_eq!(DelayBuckets::bucket(u64::MAX), DELAY_BUCKETS - 1);
    }

    #[test]
    fn the_policy_sees_each_class_p99_delay_of_its_period_only() {
        let reg = ClassRegistry::in_memory();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::new(Classes::new(Some(Box::new(Watch(seen.clone())))));
        reg.subscribe(t.clone());
        let a = reg.register(ClassSpec::new("a")).unwrap();
        let mut d = DelayBuckets::new();
        for _ in 0..1_000 {
            d.record(50_000);
        }
        for _ in 0..5 {
            d.record(8_000_000);
        }
        t.add_delays(a.index(), &mut d);
        assert!(!d.any, "handed over and emptied");
        t.add_delays(a.index(), &mut d);
        t.run_policy(&reg, |_| 0);
        let got = seen.lock().unwrap().clone();
        let p99 = |c: ClassId| got.iter().find(|(k, _)| *k == c).unwrap().1;
        assert!((50_000..100_000).contains(&p99(a)), "{got:?}");
        assert_eq!(p99(ClassId::DEFAULT), 0, "no delays recorded for default");
        // Next period: only what was recorded since counts.
        for _ in 0..100 {
            d.record(8_000_000);
        }
        t.add_delays(a.index(), &mut d);
        t.run_policy(&reg, |_| 0);
        let got = seen.lock().unwrap().clone();
        let p = got.iter().find(|(k, _)| *k == a).unwrap().1;
        assert!((8_000_000..16_000_000).contains(&p), "{got:?}");
        t.run_policy(&reg, |_| 0);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.iter().find(|(k, _)| *k == a).unwrap().1, 0, "{got:?}");
    }
}
