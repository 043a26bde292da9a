//! What a request actually used: a plain snapshot, taken from the [`RequestCtx`](crate::RequestCtx)
//! accounts when the request completes and stored in its [`ProfileRecord`](crate::ProfileRecord).
//!
//! Contracts:
//! - Time is in ns, sizes in bytes, everything else a count.
//! - Memory `net_bytes` and `peak_net_bytes` are **signed**: a request can free memory another request
//!   allocated (a shared cache entry evicted on its watch), so its own net can go negative.
//!   `peak_net_bytes >= net_bytes` and `peak_net_bytes >= 0` (the peak starts at 0 before any poll).
//! - Histograms are log2 buckets: bucket `i` counts values `v` with `floor(log2(v)) == i` (bucket 0
//!   also holds 0), the last bucket holds everything larger. [`log2_bucket`] is the one definition.
//! - [`PerfCounters`] are present only where the kernel allowed perf counters.

/// Number of log2 buckets in every usage histogram.
pub const LOG2_BUCKETS: usize = 32;

/// Index of the log2 bucket that counts `value`.
#[inline]
pub const fn log2_bucket(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        let b = 63 - value.leading_zeros() as usize;
        if b >= LOG2_BUCKETS {
            LOG2_BUCKETS - 1
        } else {
            b
        }
    }
}

/// CPU and scheduling usage.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CpuUsage {
    /// CPU time charged to the request's polls, ns.
    pub cpu_ns: u64,
    /// Wall-clock time from admission to completion, ns.
    pub wall_ns: u64,
    /// Wall-clock time spent inside polls, ns (≥ `cpu_ns` when the kernel preempted a poll).
    pub busy_ns: u64,
    /// Number of polls of the request's tasks.
    pub polls: u64,
    /// Sum of scheduled delays (wake → poll), ns.
    pub sched_delay_ns: u64,
    /// Largest single scheduled delay, ns.
    pub max_sched_delay_ns: u64,
    /// Delay from spawn to first poll of the request's root task, ns.
    pub first_poll_delay_ns: u64,
    /// Time spent in `spawn_blocking` closures on behalf of the request, ns.
    pub blocking_ns: u64,
    /// Number of `spawn_blocking` closures run on behalf of the request.
    pub blocking_calls: u64,
}

/// Memory usage.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemUsage {
    /// Bytes allocated (including the grown size of reallocations).
    pub alloc_bytes: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Number of allocations.
    pub allocs: u64,
    /// Number of frees.
    pub frees: u64,
    /// `alloc_bytes - freed_bytes`, signed.
    pub net_bytes: i64,
    /// Largest `net_bytes` seen at any point (≥ 0).
    pub peak_net_bytes: i64,
    /// Bytes allocated and freed within the same poll (short-lived allocations).
    pub same_poll_freed_bytes: u64,
    /// Allocation sizes, log2 buckets.
    pub size_classes: [u64; LOG2_BUCKETS],
}

/// Kinds of file operation, for [`IoUsage::ops`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum IoOpKind {
    /// A read.
    Read = 0,
    /// A write.
    Write = 1,
    /// An open.
    Open = 2,
    /// A stat / metadata call.
    Stat = 3,
    /// An fsync / fdatasync.
    Sync = 4,
    /// A close.
    Close = 5,
    /// Anything else.
    Other = 6,
}

impl IoOpKind {
    /// Number of kinds.
    pub const COUNT: usize = 7;
}

/// File I/O usage.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IoUsage {
    /// Operations by [`IoOpKind`] (index = tag).
    pub ops: [u64; IoOpKind::COUNT],
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Sum of operation latencies (submit → completion), ns.
    pub latency_ns: u64,
    /// Operation latencies, log2 buckets of ns.
    pub latency_log2: [u64; LOG2_BUCKETS],
    /// Reads that started where the previous read of the same file ended.
    pub sequential_reads: u64,
    /// Estimated number of distinct files touched.
    pub distinct_files: u64,
}

impl IoUsage {
    /// All operations of every kind.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }
    /// Share of reads that were sequential, in `[0, 1]` (0 when there were no reads).
    pub fn sequential_share(&self) -> f64 {
        let reads = self.ops[IoOpKind::Read as usize];
        if reads == 0 {
            0.0
        } else {
            self.sequential_reads as f64 / reads as f64
        }
    }
}

/// Outgoing network usage (through pagegen's instrumented connector).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NetUsage {
    /// Outgoing requests.
    pub requests: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Sum of request latencies, ns.
    pub latency_ns: u64,
}

/// Socket usage of the request's own connection (pagegen-io's `net` sockets): what the sockets
/// received and sent while the request was current. Kept apart from [`NetUsage`], which counts
/// outgoing requests, so the profile's features keep their meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SocketUsage {
    /// Completed receive operations (each returned data or end of stream).
    pub recv_ops: u64,
    /// Completed send operations.
    pub send_ops: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Sum of receive latencies (start of the wait to its completion), ns.
    pub recv_ns: u64,
    /// Sum of send latencies (submission to completion), ns.
    pub send_ns: u64,
}

/// `tracing` span usage inside the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SpanUsage {
    /// Spans entered.
    pub spans: u64,
    /// Time inside spans, ns (nested spans count in each).
    pub span_ns: u64,
}

/// Hardware counters for the request's polls, where the kernel allows them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PerfCounters {
    /// Instructions retired.
    pub instructions: u64,
    /// CPU cycles.
    pub cycles: u64,
    /// Last-level cache misses.
    pub cache_misses: u64,
    /// Branch misses.
    pub branch_misses: u64,
}

/// Everything one request used.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Usage {
    /// CPU and scheduling.
    pub cpu: CpuUsage,
    /// Memory.
    pub mem: MemUsage,
    /// File I/O.
    pub io: IoUsage,
    /// Outgoing network.
    pub net: NetUsage,
    /// The request's own connection: what its socket received and sent for it (schema 3; zero in
    /// older records and where the connection's traffic is not split per request).
    pub socket: SocketUsage,
    /// Tracing spans.
    pub spans: SpanUsage,
    /// Hardware counters, when supported.
    pub counters: Option<PerfCounters>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_are_floor_log2_and_saturate() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(4096), 12);
        assert_eq!(log2_bucket(u64::MAX), LOG2_BUCKETS - 1);
    }

    #[test]
    fn sequential_share_handles_no_reads() {
        let mut io = IoUsage::default();
        assert_eq!(io.sequential_share(), 0.0);
        io.ops[IoOpKind::Read as usize] = 4;
        io.sequential_reads = 3;
        assert_eq!(io.sequential_share(), 0.75);
        io.ops[IoOpKind::Open as usize] = 2;
        assert_eq!(io.total_ops(), 6);
    }
}
