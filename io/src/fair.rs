//! The per-class admission state machine: in-flight depth per class and for the whole device, an
//! optional bytes/second token bucket per class, and fair queueing across classes by shares.
//!
//! Pure logic on a caller-supplied clock (`now_ns`), so it is tested on a model
//! (`tests/depth_model.rs`-style proptests in this file) without threads or time.
//!
//! The idea is Seastar's fair queue (`seastar/src/core/fair_queue.cc`): every class carries a
//! virtual time that advances by `cost / shares` for each operation it dispatches; when operations
//! wait, the class with the smallest virtual time goes next, so under contention classes get device
//! capacity in proportion to their shares. A class that was idle re-enters at the current virtual
//! clock, so idling does not bank credit.
//!
//! Protocol (who calls what):
//! - [`FairQueue::try_admit`] is the fast path: it admits at once only when nobody waits and every
//!   limit has room.
//! - Otherwise the caller [`enqueue`](FairQueue::enqueue)s a waiter and calls
//!   [`dispatch`](FairQueue::dispatch), which admits waiters in virtual-time order while limits allow.
//! - Every admitted operation is [`release`](FairQueue::release)d exactly once, after its completion
//!   (or when it is dropped unsubmitted); then the caller dispatches again if anyone waits.

use std::collections::VecDeque;

use pagegen_core::{ClassId, Shares};

/// Bytes that weigh as much as one operation when computing an operation's cost.
///
/// Seastar's io-properties describe a disk by IOPS and bandwidth; an op costs `1/iops + bytes/bw`.
/// For a typical NVMe device (≈ 400 k IOPS, ≈ 2.5 GB/s) one op weighs like ≈ 6 KB; rounded to 8 KiB.
pub(crate) const BYTES_PER_OP: u64 = 8 * 1024;

/// Fixed-point scale of virtual time, so that `cost / shares` keeps precision in integers.
const VT_SCALE: u64 = 1 << 16;

/// How long a token bucket may burst at its full rate: 100 ms (plucked from thin air: long enough
/// that a 1 MiB op fits the bucket of any rate above 10 MB/s, short enough to keep the limit tight).
const BURST_NS: u64 = 100_000_000;

/// What the queue needs to know about one waiting operation.
pub(crate) trait Waiter {
    /// Class the operation is charged to.
    fn class(&self) -> ClassId;
    /// Bytes it will move (0 for metadata operations).
    fn bytes(&self) -> u64;
    /// Takes one slot of the operation's request-level depth; `false` when the request already has
    /// its granted depth in flight (then the queue tries this class's next waiter).
    fn try_begin_request(&self) -> bool;
}

/// A class's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassLimits {
    /// Operations of the class in flight at once (`u32::MAX`: unlimited).
    pub depth: u32,
    /// Bytes per second (`None`: unlimited).
    pub bytes_per_sec: Option<u64>,
}

impl Default for ClassLimits {
    fn default() -> Self {
        ClassLimits {
            depth: u32::MAX,
            bytes_per_sec: None,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate: u64,
    burst: i64,
    tokens: i64,
    last_ns: u64,
}

impl Bucket {
    fn new(rate: u64, now_ns: u64) -> Self {
        let burst = burst_of(rate);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last_ns: now_ns,
        }
    }
    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        if dt == 0 {
            return;
        }
        let add = (self.rate as u128 * dt as u128 / 1_000_000_000) as i64;
        if add > 0 {
            self.tokens = (self.tokens.saturating_add(add)).min(self.burst);
            self.last_ns = now_ns;
        }
    }
    /// Tokens may go negative (a 1 MiB op on a slow bucket is let through on a positive balance and
    /// leaves a debt), so large operations never starve behind a burst smaller than themselves.
    fn ready(&self) -> bool {
        self.tokens > 0
    }
    /// When the balance turns positive again.
    fn ready_at(&self) -> u64 {
        let need = (1 - self.tokens).max(0) as u128;
        self.last_ns + (need * 1_000_000_000).div_ceil(self.rate.max(1) as u128) as u64
    }
}

fn burst_of(rate: u64) -> i64 {
    ((rate as u128 * BURST_NS as u128 / 1_000_000_000) as i64).max(1)
}

#[derive(Debug)]
struct Class<W> {
    shares: u64,
    limits: ClassLimits,
    in_flight: u32,
    vtime: u64,
    bucket: Option<Bucket>,
    queue: VecDeque<W>,
}

impl<W> Class<W> {
    fn new() -> Self {
        Class {
            shares: Shares::DEFAULT.get() as u64,
            limits: ClassLimits::default(),
            in_flight: 0,
            vtime: 0,
            bucket: None,
            queue: VecDeque::new(),
        }
    }
}

/// Per-class depth, bandwidth and fair share state.
#[derive(Debug)]
pub(crate) struct FairQueue<W> {
    classes: Vec<Class<W>>,
    device_depth: u32,
    in_flight: u32,
    waiting: usize,
    /// Operations admitted outside this queue (the lock-free fast path of `IoClasses`), which
    /// count against the device depth.
    external: u32,
    /// Virtual time of the last dispatched operation: where an idle class re-enters.
    vclock: u64,
}

impl<W: Waiter> FairQueue<W> {
    /// An empty queue with the device-wide in-flight limit `device_depth`.
    pub(crate) fn new(device_depth: u32) -> Self {
        FairQueue {
            classes: Vec::new(),
            device_depth: device_depth.max(1),
            in_flight: 0,
            waiting: 0,
            external: 0,
            vclock: 0,
        }
    }

    fn class_mut(&mut self, id: ClassId) -> &mut Class<W> {
        let i = id.index().min(ClassId::MAX_CLASSES - 1);
        if self.classes.len() <= i {
            self.classes.resize_with(i + 1, Class::new);
        }
        &mut self.classes[i]
    }

    /// Sets a class's shares (idempotent).
    pub(crate) fn set_shares(&mut self, id: ClassId, shares: Shares) {
        self.class_mut(id).shares = shares.get() as u64;
    }
    /// Sets a class's limits; takes effect at the next admission.
    pub(crate) fn set_limits(&mut self, id: ClassId, limits: ClassLimits, now_ns: u64) {
        let c = self.class_mut(id);
        c.limits = ClassLimits {
            depth: limits.depth.max(1),
            ..limits
        };
        c.bucket = match (limits.bytes_per_sec, c.bucket.take()) {
            (None, _) => None,
            (Some(rate), Some(mut b)) => {
                b.refill(now_ns);
                b.rate = rate.max(1);
                b.burst = burst_of(b.rate);
                b.tokens = b.tokens.min(b.burst);
                Some(b)
            }
            (Some(rate), None) => Some(Bucket::new(rate.max(1), now_ns)),
        };
    }
    /// A class's limits.
    pub(crate) fn limits(&self, id: ClassId) -> ClassLimits {
        self.classes
            .get(id.index())
            .map(|c| c.limits)
            .unwrap_or_default()
    }
    /// Sets the device-wide in-flight limit.
    pub(crate) fn set_device_depth(&mut self, depth: u32) {
        self.device_depth = depth.max(1);
    }
    /// Sets how many operations were admitted outside the queue (they use device depth).
    pub(crate) fn set_external(&mut self, n: u32) {
        self.external = n;
    }
    /// The device-wide in-flight limit.
    pub(crate) fn device_depth(&self) -> u32 {
        self.device_depth
    }
    /// Operations of `id` in flight.
    pub(crate) fn in_flight(&self, id: ClassId) -> u32 {
        self.classes.get(id.index()).map_or(0, |c| c.in_flight)
    }
    /// Operations in flight in all classes.
    pub(crate) fn total_in_flight(&self) -> u32 {
        self.in_flight
    }
    /// Operations waiting in all classes.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether class `i` has room for one more operation now (depth, device, bucket).
    fn class_ready(&mut self, i: usize, now_ns: u64) -> bool {
        if self.in_flight.saturating_add(self.external) >= self.device_depth {
            return false;
        }
        let c = &mut self.classes[i];
        if c.in_flight >= c.limits.depth {
            return false;
        }
        match &mut c.bucket {
            Some(b) => {
                b.refill(now_ns);
                b.ready()
            }
            None => true,
        }
    }

    fn charge(&mut self, i: usize, bytes: u64) {
        self.in_flight += 1;
        let c = &mut self.classes[i];
        c.in_flight += 1;
        let cost = VT_SCALE + bytes.saturating_mul(VT_SCALE) / BYTES_PER_OP;
        c.vtime = c.vtime.saturating_add(cost / c.shares.max(1));
        self.vclock = self.vclock.max(c.vtime);
        if let Some(b) = &mut c.bucket {
            b.tokens = b.tokens.saturating_sub(bytes.min(i64::MAX as u64) as i64);
        }
    }

    /// Fast path: admits `w` at once when nobody waits and every limit has room.
    pub(crate) fn try_admit(&mut self, w: &W, now_ns: u64) -> bool {
        if self.waiting > 0 {
            return false;
        }
        let i = w.class().index().min(ClassId::MAX_CLASSES - 1);
        self.class_mut(w.class());
        if !self.class_ready(i, now_ns) || !w.try_begin_request() {
            return false;
        }
        self.charge(i, w.bytes());
        true
    }

    /// Queues `w` behind its class's other waiters.
    pub(crate) fn enqueue(&mut self, w: W) {
        let vclock = self.vclock;
        let c = self.class_mut(w.class());
        if c.queue.is_empty() && c.in_flight == 0 {
            // An idle class re-enters at the virtual clock: idling banks no credit.
            c.vtime = c.vtime.max(vclock);
        }
        c.queue.push_back(w);
        self.waiting += 1;
    }

    /// Removes the first waiter matching `pred` (a dropped future); returns whether one was found.
    pub(crate) fn remove(&mut self, class: ClassId, pred: impl Fn(&W) -> bool) -> bool {
        let Some(c) = self.classes.get_mut(class.index()) else {
            return false;
        };
        match c.queue.iter().position(pred) {
            Some(pos) => {
                c.queue.remove(pos);
                self.waiting -= 1;
                true
            }
            None => false,
        }
    }

    /// Admits waiters in virtual-time order while limits allow, pushing them to `out`. Returns the
    /// time at which a class held back only by its token bucket becomes ready, if any.
    pub(crate) fn dispatch(&mut self, now_ns: u64, out: &mut Vec<W>) -> Option<u64> {
        loop {
            if self.waiting == 0 {
                return None;
            }
            let mut best: Option<(u64, usize)> = None;
            let mut wake_at: Option<u64> = None;
            for i in 0..self.classes.len() {
                if self.classes[i].queue.is_empty() {
                    continue;
                }
                if !self.class_ready(i, now_ns) {
                    let c = &self.classes[i];
                    if let Some(b) = &c.bucket {
                        if !b.ready() && c.in_flight < c.limits.depth {
                            let at = b.ready_at();
                            wake_at = Some(wake_at.map_or(at, |w: u64| w.min(at)));
                        }
                    }
                    continue;
                }
                let vt = self.classes[i].vtime;
                if best.is_none_or(|(bvt, _)| vt < bvt) {
                    best = Some((vt, i));
                }
            }
            let Some((_, i)) = best else {
                return wake_at;
            };
            // The first waiter whose request has depth left; the others keep their place.
            let pos = self.classes[i]
                .queue
                .iter()
                .position(|w| w.try_begin_request());
            let Some(pos) = pos else {
                // Every waiter of this class is held by its own request's depth: those requests
                // have operations in flight whose release dispatches again. Try other classes.
                if !self.dispatch_others(i, now_ns, out) {
                    return wake_at;
                }
                continue;
            };
            let w = self.classes[i]
                .queue
                .remove(pos)
                .expect("position is in range");
            self.waiting -= 1;
            self.charge(i, w.bytes());
            out.push(w);
        }
    }

    /// Dispatch restricted to classes other than `skip`, one admission; returns whether it admitted.
    fn dispatch_others(&mut self, skip: usize, now_ns: u64, out: &mut Vec<W>) -> bool {
        let mut order: Vec<(u64, usize)> = (0..self.classes.len())
            .filter(|&i| i != skip && !self.classes[i].queue.is_empty())
            .map(|i| (self.classes[i].vtime, i))
            .collect();
        order.sort_unstable();
        for (_, i) in order {
            if !self.class_ready(i, now_ns) {
                continue;
            }
            if let Some(pos) = self.classes[i]
                .queue
                .iter()
                .position(|w| w.try_begin_request())
            {
                let w = self.classes[i]
                    .queue
                    .remove(pos)
                    .expect("position is in range");
                self.waiting -= 1;
                self.charge(i, w.bytes());
                out.push(w);
                return true;
            }
        }
        false
    }

    /// Releases one admitted operation of `class` (its request-level slot is the caller's).
    pub(crate) fn release(&mut self, class: ClassId) {
        let c = self.class_mut(class);
        debug_assert!(c.in_flight > 0, "release without admission");
        c.in_flight = c.in_flight.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Debug)]
    struct Req {
        in_flight: Cell<u32>,
        depth: u32,
    }

    #[derive(Debug, Clone)]
    struct W {
        class: ClassId,
        bytes: u64,
        req: Rc<Req>,
    }

    impl Waiter for W {
        fn class(&self) -> ClassId {
            self.class
        }
        fn bytes(&self) -> u64 {
            self.bytes
        }
        fn try_begin_request(&self) -> bool {
            if self.req.in_flight.get() < self.req.depth {
                self.req.in_flight.set(self.req.in_flight.get() + 1);
                true
            } else {
                false
            }
        }
    }

    fn req(depth: u32) -> Rc<Req> {
        Rc::new(Req {
            in_flight: Cell::new(0),
            depth,
        })
    }

    const DEVICE: u32 = 4;

    /// The model: what is in flight, and the limits the test set.
    struct Model {
        q: FairQueue<W>,
        now: u64,
        in_flight: Vec<W>,
        depth: [u32; 3],
    }

    impl Model {
        fn admit(&mut self, w: W) {
            let c = w.class.index();
            let class_n = self.in_flight.iter().filter(|x| x.class == w.class).count() as u32;
            assert!(
                class_n < self.depth[c],
                "class {c} depth {} exceeded",
                self.depth[c]
            );
            assert!(
                (self.in_flight.len() as u32) < DEVICE,
                "device depth exceeded"
            );
            assert!(
                w.req.in_flight.get() <= w.req.depth,
                "request depth exceeded"
            );
            self.in_flight.push(w);
        }
        fn dispatch(&mut self) {
            let mut out = Vec::new();
            self.q.dispatch(self.now, &mut out);
            for w in out {
                self.admit(w);
            }
        }
        fn complete(&mut self, i: usize) {
            if self.in_flight.is_empty() {
                return;
            }
            let w = self.in_flight.swap_remove(i % self.in_flight.len());
            self.q.release(w.class);
            w.req.in_flight.set(w.req.in_flight.get() - 1);
            self.dispatch();
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Submit { class: u8, req: u8, kib: u16 },
        Complete(u8),
        Advance(u16),
        SetDepth { class: u8, depth: u8 },
        SetRate { class: u8, kib_per_sec: Option<u16> },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 0u8..4, 0u16..1025).prop_map(|(class, req, kib)| Step::Submit { class, req, kib }),
            3 => any::<u8>().prop_map(Step::Complete),
            1 => (0u16..500).prop_map(Step::Advance),
            1 => (0u8..3, 1u8..4).prop_map(|(class, depth)| Step::SetDepth { class, depth }),
            1 => (0u8..3, proptest::option::of(1u16..4096)).prop_map(|(class, kib_per_sec)| Step::SetRate { class, kib_per_sec }),
        ]
    }

    proptest! {
        /// Depth (class, device, request) is never exceeded at admission, and once everything in
        /// flight completes and time passes, every waiter is admitted.
        #[test]
        fn depth_is_never_exceeded_and_everyone_is_served(steps in proptest::collection::vec(step(), 1..200)) {
            let reqs: Vec<Rc<Req>> = (1..=4).map(req).collect();
            let mut m = Model { q: FairQueue::new(DEVICE), now: 0, in_flight: Vec::new(), depth: [u32::MAX; 3] };
            let mut rates: [Option<u64>; 3] = [None; 3];
            for s in steps {
                match s {
                    Step::Submit { class, req, kib } => {
                        let w = W { class: ClassId::from_raw(class as u32), bytes: kib as u64 * 1024, req: Rc::clone(&reqs[req as usize]) };
                        if m.q.try_admit(&w, m.now) {
                            m.admit(w);
                        } else {
                            m.q.enqueue(w);
                            m.dispatch();
                        }
                    }
                    Step::Complete(i) => m.complete(i as usize),
                    Step::Advance(ms) => { m.now += ms as u64 * 1_000_000; m.dispatch(); }
                    Step::SetDepth { class, depth } => {
                        m.depth[class as usize] = depth as u32;
                        let l = ClassLimits { depth: depth as u32, bytes_per_sec: rates[class as usize] };
                        // Lowering a depth below what is in flight is allowed: admissions wait.
                        m.q.set_limits(ClassId::from_raw(class as u32), l, m.now);
                        m.dispatch();
                    }
                    Step::SetRate { class, kib_per_sec } => {
                        let rate = kib_per_sec.map(|k| k as u64 * 1024);
                        rates[class as usize] = rate;
                        let l = ClassLimits { depth: m.depth[class as usize], bytes_per_sec: rate };
                        m.q.set_limits(ClassId::from_raw(class as u32), l, m.now);
                        m.dispatch();
                    }
                }
                prop_assert!(m.q.total_in_flight() as usize == m.in_flight.len());
            }
            // Liveness: drain.
            let mut rounds = 0;
            while m.q.waiting() > 0 || !m.in_flight.is_empty() {
                while !m.in_flight.is_empty() {
                    m.complete(0);
                }
                m.now += 10_000_000_000;
                m.dispatch();
                rounds += 1;
                prop_assert!(rounds < 10_000, "waiters starve: {} left", m.q.waiting());
            }
        }
    }

    #[test]
    fn shares_split_a_contended_device() {
        let mut q = FairQueue::new(1);
        let a = ClassId::from_raw(1);
        let b = ClassId::from_raw(2);
        q.set_shares(a, Shares::new(100).unwrap());
        q.set_shares(b, Shares::new(300).unwrap());
        let r = req(u32::MAX);
        for _ in 0..100 {
            for class in [a, b] {
                q.enqueue(W {
                    class,
                    bytes: 4096,
                    req: Rc::clone(&r),
                });
            }
        }
        let mut served = [0u32; 3];
        let mut out = Vec::new();
        for _ in 0..40 {
            out.clear();
            q.dispatch(0, &mut out);
            assert_eq!(out.len(), 1, "device depth 1 admits one at a time");
            served[out[0].class.index()] += 1;
            q.release(out[0].class);
        }
        assert!(
            (28..=32).contains(&served[2]) && (8..=12).contains(&served[1]),
            "shares 100:300 should split 40 admissions about 10:30, got {served:?}"
        );
    }

    #[test]
    fn idle_class_banks_no_credit() {
        let mut q = FairQueue::new(1);
        let a = ClassId::from_raw(1);
        let b = ClassId::from_raw(2);
        let r = req(u32::MAX);
        // `a` runs alone for a long time.
        for _ in 0..1000 {
            let w = W {
                class: a,
                bytes: 0,
                req: Rc::clone(&r),
            };
            assert!(q.try_admit(&w, 0));
            q.release(a);
        }
        // Now both are backlogged: `b` must not get 1000 ops in a row.
        for _ in 0..20 {
            for class in [a, b] {
                q.enqueue(W {
                    class,
                    bytes: 0,
                    req: Rc::clone(&r),
                });
            }
        }
        let mut out = Vec::new();
        let mut a_served = 0;
        for _ in 0..10 {
            out.clear();
            q.dispatch(0, &mut out);
            a_served += (out[0].class == a) as u32;
            q.release(out[0].class);
        }
        assert!(
            a_served >= 4,
            "equal shares alternate after `b` wakes up, got {a_served}/10 for a"
        );
    }

    #[test]
    fn token_bucket_paces_bytes() {
        let mut q = FairQueue::new(64);
        let c = ClassId::from_raw(1);
        let rate = 1_000_000; // 1 MB/s: burst 100 kB.
        q.set_limits(
            c,
            ClassLimits {
                depth: u32::MAX,
                bytes_per_sec: Some(rate),
            },
            0,
        );
        let r = req(u32::MAX);
        let op = 256 * 1024;
        let mut admitted = 0u64;
        let mut out = Vec::new();
        for _ in 0..20 {
            q.enqueue(W {
                class: c,
                bytes: op,
                req: Rc::clone(&r),
            });
        }
        let mut now = 0;
        let mut wakeups = 0;
        while now <= 1_000_000_000 {
            out.clear();
            let next = q.dispatch(now, &mut out);
            for w in out.drain(..) {
                admitted += w.bytes;
                q.release(w.class);
            }
            let Some(at) = next else { break };
            assert!(at > now, "the bucket asks to be woken in the future");
            now = at;
            wakeups += 1;
        }
        let bound = burst_of(rate) as u64 + rate + op;
        assert!(
            admitted <= bound,
            "{admitted} bytes in 1 s exceed burst + rate + one op ({bound})"
        );
        assert!(admitted >= rate / 2, "the bucket lets the rate through");
        assert!(
            wakeups > 1,
            "a paced class is woken by time, not by completions"
        );
    }

    #[test]
    fn request_depth_holds_only_its_own_waiters() {
        let mut q = FairQueue::new(64);
        let c = ClassId::DEFAULT;
        let tight = req(1);
        let open = req(u32::MAX);
        let first = W {
            class: c,
            bytes: 0,
            req: Rc::clone(&tight),
        };
        assert!(q.try_admit(&first, 0));
        q.enqueue(W {
            class: c,
            bytes: 0,
            req: Rc::clone(&tight),
        });
        q.enqueue(W {
            class: c,
            bytes: 0,
            req: Rc::clone(&open),
        });
        let mut out = Vec::new();
        q.dispatch(0, &mut out);
        assert_eq!(out.len(), 1, "the other request's waiter passes");
        assert!(Rc::ptr_eq(&out[0].req, &open));
        q.release(c);
        tight.in_flight.set(0);
        q.release(c);
        out.clear();
        q.dispatch(0, &mut out);
        assert_eq!(
            out.len(),
            1,
            "the held waiter goes once its request has room"
        );
    }
}
