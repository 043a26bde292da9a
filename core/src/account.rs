//! The per-request accounts other crates write into.
//!
//! Each [`RequestCtx`](crate::RequestCtx) owns one account per signal. Writers follow one protocol,
//! cited wherever an account is written:
//!
//! > **Flush once per poll.** A hot-path writer (the allocator on every allocation, the executor on
//! > every poll) accumulates in a per-thread cell and folds the cell into the account at most once per
//! > poll, from the [`PollHook::after_poll`](crate::PollHook::after_poll) of that poll (or the drop and
//! > blocking hooks). Never an atomic read-modify-write per allocation: measured at ~8 ns, it would double
//! > the cost of a small allocation. Per-operation writers whose operation costs microseconds (a file
//! > read, a network call) may write directly.
//!
//! All atomics are `Relaxed`: an account is a set of independent counters, read as a whole only after
//! the request's tasks have finished (which synchronises through the executor's join), or as a rough
//! live view by a checkpoint, which tolerates a torn read across fields.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::usage::{
    log2_bucket, CpuUsage, IoOpKind, IoUsage, MemUsage, NetUsage, SocketUsage, SpanUsage,
    LOG2_BUCKETS,
};

fn zeroed<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn load_all<const N: usize>(cells: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| cells[i].load(Relaxed))
}

/// CPU and scheduling account, written by the executor.
#[derive(Debug, Default)]
pub struct CpuAccount {
    cpu_ns: AtomicU64,
    busy_ns: AtomicU64,
    polls: AtomicU64,
    sched_delay_ns: AtomicU64,
    max_sched_delay_ns: AtomicU64,
    first_poll_delay_ns: AtomicU64,
    blocking_ns: AtomicU64,
    blocking_calls: AtomicU64,
}

impl CpuAccount {
    /// Records one poll: CPU charged, wall time inside the poll, and the delay from wake to poll.
    pub fn record_poll(&self, cpu_ns: u64, busy_ns: u64, sched_delay_ns: u64) {
        self.cpu_ns.fetch_add(cpu_ns, Relaxed);
        self.busy_ns.fetch_add(busy_ns, Relaxed);
        self.polls.fetch_add(1, Relaxed);
        self.sched_delay_ns.fetch_add(sched_delay_ns, Relaxed);
        self.max_sched_delay_ns.fetch_max(sched_delay_ns, Relaxed);
    }
    /// Records the spawn → first poll delay of the request's root task (first call wins).
    pub fn record_first_poll_delay(&self, ns: u64) {
        let _ = self
            .first_poll_delay_ns
            .compare_exchange(0, ns.max(1), Relaxed, Relaxed);
    }
    /// Records one `spawn_blocking` closure run on the request's behalf.
    pub fn record_blocking(&self, ns: u64) {
        self.blocking_ns.fetch_add(ns, Relaxed);
        self.blocking_calls.fetch_add(1, Relaxed);
    }
    /// CPU charged so far, ns.
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Relaxed)
    }
    /// Snapshot. `wall_ns` is left 0: the context fills it from its own start time.
    pub fn snapshot(&self) -> CpuUsage {
        CpuUsage {
            cpu_ns: self.cpu_ns.load(Relaxed),
            wall_ns: 0,
            busy_ns: self.busy_ns.load(Relaxed),
            polls: self.polls.load(Relaxed),
            sched_delay_ns: self.sched_delay_ns.load(Relaxed),
            max_sched_delay_ns: self.max_sched_delay_ns.load(Relaxed),
            first_poll_delay_ns: self.first_poll_delay_ns.load(Relaxed),
            blocking_ns: self.blocking_ns.load(Relaxed),
            blocking_calls: self.blocking_calls.load(Relaxed),
        }
    }
}

/// What an allocator accumulated on one thread during one poll, folded into a [`MemAccount`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemFlush {
    /// Bytes allocated during the poll.
    pub alloc_bytes: u64,
    /// Bytes freed during the poll.
    pub freed_bytes: u64,
    /// Allocations during the poll.
    pub allocs: u64,
    /// Frees during the poll.
    pub frees: u64,
    /// Highest value of (allocated − freed) reached *during* the poll, relative to the poll's start.
    /// Always ≥ 0 (the start itself counts).
    pub peak_delta: i64,
    /// Bytes freed during the poll that were also allocated during it (the allocator's approximation
    /// of short-lived allocations).
    pub same_poll_freed_bytes: u64,
    /// Allocation sizes during the poll, log2 buckets.
    pub size_classes: [u64; LOG2_BUCKETS],
}

impl MemFlush {
    /// Net change over the poll.
    pub fn net_delta(&self) -> i64 {
        self.alloc_bytes as i64 - self.freed_bytes as i64
    }
}

/// Memory account, written by the allocator's hook once per poll.
#[derive(Debug)]
pub struct MemAccount {
    alloc_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    net_bytes: AtomicI64,
    peak_net_bytes: AtomicI64,
    same_poll_freed_bytes: AtomicU64,
    size_classes: [AtomicU64; LOG2_BUCKETS],
}

impl Default for MemAccount {
    fn default() -> Self {
        MemAccount {
            alloc_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            net_bytes: AtomicI64::new(0),
            peak_net_bytes: AtomicI64::new(0),
            same_poll_freed_bytes: AtomicU64::new(0),
            size_classes: zeroed(),
        }
    }
}

impl MemAccount {
    /// Folds one poll's accumulation in and returns the request's new peak net bytes.
    ///
    /// Two tasks of one request may flush concurrently from two workers; each flush's peak is taken
    /// against the net *it* observed, so the recorded peak is a lower bound of the true interleaved
    /// peak, exact when the request's polls do not overlap (the common case: one task per request).
    pub fn flush(&self, f: &MemFlush) -> i64 {
        self.alloc_bytes.fetch_add(f.alloc_bytes, Relaxed);
        self.freed_bytes.fetch_add(f.freed_bytes, Relaxed);
        self.allocs.fetch_add(f.allocs, Relaxed);
        self.frees.fetch_add(f.frees, Relaxed);
        self.same_poll_freed_bytes
            .fetch_add(f.same_poll_freed_bytes, Relaxed);
        for (cell, &n) in self.size_classes.iter().zip(f.size_classes.iter()) {
            if n != 0 {
                cell.fetch_add(n, Relaxed);
            }
        }
        let before = self.net_bytes.fetch_add(f.net_delta(), Relaxed);
        let candidate = before.saturating_add(f.peak_delta.max(0));
        let prev_peak = self.peak_net_bytes.fetch_max(candidate, Relaxed);
        prev_peak.max(candidate)
    }
    /// Current net bytes (signed).
    pub fn net_bytes(&self) -> i64 {
        self.net_bytes.load(Relaxed)
    }
    /// Peak net bytes so far (≥ 0).
    pub fn peak_net_bytes(&self) -> i64 {
        self.peak_net_bytes.load(Relaxed)
    }
    /// Snapshot.
    pub fn snapshot(&self) -> MemUsage {
        MemUsage {
            alloc_bytes: self.alloc_bytes.load(Relaxed),
            freed_bytes: self.freed_bytes.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            net_bytes: self.net_bytes.load(Relaxed),
            peak_net_bytes: self.peak_net_bytes.load(Relaxed),
            same_poll_freed_bytes: self.same_poll_freed_bytes.load(Relaxed),
            size_classes: load_all(&self.size_classes),
        }
    }
}

/// Distinct keys seen, in constant space: exact up to [`FileSketch::EXACT`] keys (a small set of
/// hashed keys), then a 256-bit linear-counting estimate (Whang et al., 1990), within a few percent
/// up to ~200 keys and saturating beyond. Exact for small counts because most requests touch a few
/// files, and a bitmap alone collides about once in 85 requests already at three files.
#[derive(Debug, Default)]
pub struct FileSketch {
    exact: [AtomicU64; FileSketch::EXACT],
    bits: [AtomicU64; 4],
}

impl FileSketch {
    /// How many distinct keys are counted exactly.
    pub const EXACT: usize = 8;
    const M: f64 = 256.0;

    /// Notes a key (e.g. a hash of the file's device and inode).
    pub fn insert(&self, key: u64) {
        // Fibonacci hashing spreads keys that differ only in low bits (consecutive inodes); it is a
        // bijection, so distinct keys stay distinct in the exact set (0 marks an empty slot).
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
        let bit = h >> 56;
        self.bits[(bit >> 6) as usize].fetch_or(1 << (bit & 63), Relaxed);
        for slot in &self.exact {
            match slot.compare_exchange(0, h, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(seen) if seen == h => return,
                Err(_) => {}
            }
        }
    }
    /// Number of distinct keys inserted: exact up to [`Self::EXACT`], estimated beyond.
    pub fn estimate(&self) -> u64 {
        let held = self.exact.iter().filter(|s| s.load(Relaxed) != 0).count();
        if held < Self::EXACT {
            return held as u64;
        }
        let ones: u32 = self.bits.iter().map(|b| b.load(Relaxed).count_ones()).sum();
        let zeros = Self::M - f64::from(ones);
        let linear = if zeros == 0.0 {
            // Saturated: the estimator's bound for a full bitmap.
            (Self::M * Self::M.ln()).round() as u64
        } else {
            (-Self::M * (zeros / Self::M).ln()).round() as u64
        };
        linear.max(Self::EXACT as u64)
    }
}

/// File I/O account, written by pagegen-io once per operation (operations cost microseconds).
#[derive(Debug)]
pub struct IoAccount {
    ops: [AtomicU64; IoOpKind::COUNT],
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    latency_ns: AtomicU64,
    latency_log2: [AtomicU64; LOG2_BUCKETS],
    sequential_reads: AtomicU64,
    files: FileSketch,
    in_flight: AtomicU64,
    /// Bandwidth pacing: the time (ns, caller's clock) until which this request's reserved bytes
    /// occupy its `io_bytes_per_sec` (see [`IoAccount::reserve_bandwidth`]).
    bw_busy_until_ns: AtomicU64,
}

impl Default for IoAccount {
    fn default() -> Self {
        IoAccount {
            ops: zeroed(),
            read_bytes: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            latency_ns: AtomicU64::new(0),
            latency_log2: zeroed(),
            sequential_reads: AtomicU64::new(0),
            files: FileSketch::default(),
            in_flight: AtomicU64::new(0),
            bw_busy_until_ns: AtomicU64::new(0),
        }
    }
}

impl IoAccount {
    /// Records one completed operation. `sequential` is meaningful for reads only.
    pub fn record_op(&self, kind: IoOpKind, bytes: u64, latency_ns: u64, sequential: bool) {
        self.ops[kind as usize].fetch_add(1, Relaxed);
        match kind {
            IoOpKind::Read => {
                self.read_bytes.fetch_add(bytes, Relaxed);
                if sequential {
                    self.sequential_reads.fetch_add(1, Relaxed);
                }
            }
            IoOpKind::Write => {
                self.write_bytes.fetch_add(bytes, Relaxed);
            }
            _ => {}
        }
        self.latency_ns.fetch_add(latency_ns, Relaxed);
        self.latency_log2[log2_bucket(latency_ns)].fetch_add(1, Relaxed);
    }
    /// Notes a file the request touched (key: any stable hash of the file's identity).
    pub fn note_file(&self, key: u64) {
        self.files.insert(key);
    }
    /// Marks one more operation of this request in flight; returns the new count. Used with the
    /// grant's `io_depth` to bound a request's own concurrency.
    pub fn begin_op(&self) -> u64 {
        self.in_flight.fetch_add(1, Relaxed) + 1
    }
    /// Marks one more operation in flight only if that keeps the count at or below `limit`;
    /// `false` (and no change) otherwise. Unlike [`begin_op`](Self::begin_op) then a check, the
    /// counter never exceeds `limit`, not even for a moment another thread could observe.
    pub fn try_begin_op(&self, limit: u64) -> bool {
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }
    /// Reserves `bytes` of this request's I/O bandwidth (`bytes_per_sec`, the grant's
    /// `io_bytes_per_sec`) at `now_ns` and returns how long the operation must wait before it
    /// starts: a virtual clock (the idea of GCRA / Seastar's token bucket in its time form). Each
    /// reservation starts when the previous ones have used up their time at the request's rate,
    /// so operations start no faster than the rate on average; an idle request starts at once
    /// (no burst is banked while idle). `bytes_per_sec` `0` or `u64::MAX`: unlimited, returns 0.
    pub fn reserve_bandwidth(&self, bytes: u64, bytes_per_sec: u64, now_ns: u64) -> u64 {
        if bytes_per_sec == 0 || bytes_per_sec == u64::MAX {
            return 0;
        }
        let cost =
            ((bytes as u128 * 1_000_000_000) / bytes_per_sec as u128).min(u64::MAX as u128) as u64;
        let mut start = 0;
        let _ = self
            .bw_busy_until_ns
            .fetch_update(Relaxed, Relaxed, |busy| {
                start = busy.max(now_ns);
                Some(start.saturating_add(cost))
            });
        start - now_ns
    }
    /// Marks one operation of this request finished.
    pub fn end_op(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }
    /// Operations in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }
    /// Snapshot.
    pub fn snapshot(&self) -> IoUsage {
        IoUsage {
            ops: load_all(&self.ops),
            read_bytes: self.read_bytes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            latency_ns: self.latency_ns.load(Relaxed),
            latency_log2: load_all(&self.latency_log2),
            sequential_reads: self.sequential_reads.load(Relaxed),
            distinct_files: self.files.estimate(),
        }
    }
}

/// Network account: outgoing requests (written once per request), and the socket operations of the
/// request's own connection (written once per operation by pagegen-io's `net` sockets).
#[derive(Debug, Default)]
pub struct NetAccount {
    requests: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    latency_ns: AtomicU64,
    sock: [AtomicU64; 6],
}

const RECV_OPS: usize = 0;
const SEND_OPS: usize = 1;
const SOCK_IN: usize = 2;
const SOCK_OUT: usize = 3;
const RECV_NS: usize = 4;
const SEND_NS: usize = 5;

impl NetAccount {
    /// Records one outgoing request.
    pub fn record(&self, bytes_out: u64, bytes_in: u64, latency_ns: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.latency_ns.fetch_add(latency_ns, Relaxed);
    }
    /// Snapshot.
    pub fn snapshot(&self) -> NetUsage {
        NetUsage {
            requests: self.requests.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            latency_ns: self.latency_ns.load(Relaxed),
        }
    }
    /// Records one completed socket receive of `bytes` (0: end of stream) that waited
    /// `latency_ns` (written by pagegen-io's `net` sockets, once per operation).
    pub fn record_recv(&self, bytes: u64, latency_ns: u64) {
        self.sock[RECV_OPS].fetch_add(1, Relaxed);
        self.sock[SOCK_IN].fetch_add(bytes, Relaxed);
        self.sock[RECV_NS].fetch_add(latency_ns, Relaxed);
    }
    /// Records one completed socket send of `bytes` that took `latency_ns`.
    pub fn record_send(&self, bytes: u64, latency_ns: u64) {
        self.sock[SEND_OPS].fetch_add(1, Relaxed);
        self.sock[SOCK_OUT].fetch_add(bytes, Relaxed);
        self.sock[SEND_NS].fetch_add(latency_ns, Relaxed);
    }
    /// Adds socket traffic seen before the request existed (a connection's pending receives,
    /// [`ConnAccount::begin`](crate::conn::ConnAccount::begin)).
    pub fn add_socket(&self, u: &SocketUsage) {
        for (i, v) in [
            (RECV_OPS, u.recv_ops),
            (SEND_OPS, u.send_ops),
            (SOCK_IN, u.bytes_in),
            (SOCK_OUT, u.bytes_out),
            (RECV_NS, u.recv_ns),
            (SEND_NS, u.send_ns),
        ] {
            if v != 0 {
                self.sock[i].fetch_add(v, Relaxed);
            }
        }
    }
    /// Snapshot of the socket counters.
    pub fn socket(&self) -> SocketUsage {
        let c = load_all(&self.sock);
        SocketUsage {
            recv_ops: c[RECV_OPS],
            send_ops: c[SEND_OPS],
            bytes_in: c[SOCK_IN],
            bytes_out: c[SOCK_OUT],
            recv_ns: c[RECV_NS],
            send_ns: c[SEND_NS],
        }
    }
}

/// `tracing` span account, written when a span closes.
#[derive(Debug, Default)]
pub struct SpanAccount {
    spans: AtomicU64,
    span_ns: AtomicU64,
}

impl SpanAccount {
    /// Records one closed span.
    pub fn record(&self, ns: u64) {
        self.spans.fetch_add(1, Relaxed);
        self.span_ns.fetch_add(ns, Relaxed);
    }
    /// Snapshot.
    pub fn snapshot(&self) -> SpanUsage {
        SpanUsage {
            spans: self.spans.load(Relaxed),
            span_ns: self.span_ns.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn socket_operations_are_counted_apart_from_outgoing_requests() {
        let acct = NetAccount::default();
        acct.record_recv(100, 5);
        acct.record_recv(0, 7);
        acct.record_send(40, 3);
        assert_eq!(
            acct.socket(),
            SocketUsage {
                recv_ops: 2,
                send_ops: 1,
                bytes_in: 100,
                bytes_out: 40,
                recv_ns: 12,
                send_ns: 3,
            }
        );
        assert_eq!(acct.snapshot(), NetUsage::default());
    }

    #[test]
    fn mem_net_can_go_negative_and_peak_stays_non_negative() {
        let acct = MemAccount::default();
        // A poll that only frees memory somebody else allocated.
        acct.flush(&MemFlush {
            freed_bytes: 100,
            frees: 1,
            ..MemFlush::default()
        });
        assert_eq!(acct.net_bytes(), -100);
        assert_eq!(acct.peak_net_bytes(), 0);
        // A poll that allocates 300, peaks at +300 within the poll, frees 50.
        let peak = acct.flush(&MemFlush {
            alloc_bytes: 300,
            freed_bytes: 50,
            allocs: 2,
            frees: 1,
            peak_delta: 300,
            ..MemFlush::default()
        });
        assert_eq!(acct.net_bytes(), 150);
        assert_eq!(peak, 200, "peak is net-before (-100) + in-poll peak (300)");
        let s = acct.snapshot();
        assert_eq!(s.alloc_bytes, 300);
        assert_eq!(s.freed_bytes, 150);
        assert_eq!(s.net_bytes, s.alloc_bytes as i64 - s.freed_bytes as i64);
    }

    #[test]
    fn io_account_splits_by_kind() {
        let acct = IoAccount::default();
        acct.record_op(IoOpKind::Read, 4096, 1000, false);
        acct.record_op(IoOpKind::Read, 4096, 3000, true);
        acct.record_op(IoOpKind::Write, 10, 500, false);
        acct.record_op(IoOpKind::Open, 0, 200, false);
        let s = acct.snapshot();
        assert_eq!(s.ops[IoOpKind::Read as usize], 2);
        assert_eq!(s.read_bytes, 8192);
        assert_eq!(s.write_bytes, 10);
        assert_eq!(s.sequential_reads, 1);
        assert_eq!(s.latency_ns, 4700);
        assert_eq!(s.latency_log2.iter().sum::<u64>(), 4);
        assert_eq!(acct.begin_op(), 1);
        assert_eq!(acct.begin_op(), 2);
        acct.end_op();
        assert_eq!(acct.in_flight(), 1);
    }

    #[test]
    fn bandwidth_reservations_space_operations_at_the_rate() {
        let acct = IoAccount::default();
        // 1 MB/s: 1000 bytes take 1 ms.
        assert_eq!(acct.reserve_bandwidth(1000, 1_000_000, 5_000_000), 0);
        assert_eq!(
            acct.reserve_bandwidth(1000, 1_000_000, 5_000_000),
            1_000_000
        );
        assert_eq!(acct.reserve_bandwidth(500, 1_000_000, 5_500_000), 1_500_000);
        // Idle past the reservations: no wait, nothing banked.
        assert_eq!(acct.reserve_bandwidth(1000, 1_000_000, 100_000_000), 0);
        assert_eq!(
            acct.reserve_bandwidth(1000, 1_000_000, 100_000_000),
            1_000_000
        );
        assert_eq!(acct.reserve_bandwidth(1 << 30, u64::MAX, 0), 0);
    }

    #[test]
    fn file_sketch_counts_distinct_keys() {
        let s = FileSketch::default();
        assert_eq!(s.estimate(), 0);
        for _ in 0..10 {
            s.insert(42);
        }
        assert_eq!(s.estimate(), 1);
        // Small counts are exact, whatever the keys.
        for k in [7u64, 7 + (1 << 56), 1 << 60, 0] {
            s.insert(k);
        }
        assert_eq!(s.estimate(), 5);
        for k in 0..40u64 {
            s.insert(k * 7919);
        }
        let e = s.estimate();
        // 44 distinct keys (0 was inserted twice): linear counting, within ~10 %.
        assert!((40..=50).contains(&e), "44 distinct keys estimated as {e}");
    }

    proptest! {
        /// `try_begin_op` against a model: the count follows it exactly and never exceeds the
        /// limit, whatever the interleaving of begins and ends.
        #[test]
        fn try_begin_op_never_overshoots(limit in 0u64..6, steps in proptest::collection::vec(any::<bool>(), 1..80)) {
            let acct = IoAccount::default();
            let mut model = 0u64;
            for begin in steps {
                if begin {
                    let ok = acct.try_begin_op(limit);
                    prop_assert_eq!(ok, model < limit);
                    if ok { model += 1; }
                } else if model > 0 {
                    acct.end_op();
                    model -= 1;
                }
                prop_assert_eq!(acct.in_flight(), model);
                prop_assert!(acct.in_flight() <= limit);
            }
        }

        /// Threads racing `try_begin_op`: at most `limit` succeed before any ends.
        #[test]
        fn try_begin_op_admits_at_most_limit_across_threads(limit in 1u64..8, threads in 2usize..6) {
            let acct = std::sync::Arc::new(IoAccount::default());
            let admitted: u64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| {
                    let a = &acct;
                    s.spawn(move || (0..4).filter(|_| a.try_begin_op(limit)).count() as u64)
                }).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            prop_assert_eq!(admitted, limit.min(threads as u64 * 4));
            prop_assert_eq!(acct.in_flight(), admitted);
        }

        #[test]
        fn mem_invariants_hold(flushes in proptest::collection::vec((0u64..1<<20, 0u64..1<<20, 0i64..1<<21), 1..40)) {
            let acct = MemAccount::default();
            for (a, f, p) in flushes {
                let peak_delta = p.max(a as i64 - f as i64).max(0);
                acct.flush(&MemFlush { alloc_bytes: a, freed_bytes: f, peak_delta, ..MemFlush::default() });
                let s = acct.snapshot();
                prop_assert_eq!(s.net_bytes, s.alloc_bytes as i64 - s.freed_bytes as i64);
                prop_assert!(s.peak_net_bytes >= s.net_bytes);
                prop_assert!(s.peak_net_bytes >= 0);
            }
        }
    }
}
