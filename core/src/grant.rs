//! What the allocation policy hands a request before it runs.
//!
//! A [`Grant`] is a plain value; a running request holds its grant in a [`GrantCell`] inside its
//! [`RequestCtx`](crate::RequestCtx), so a checkpoint can extend or shrink it while the request runs
//! and every subsystem reads the current value without a lock.
//!
//! Contracts:
//! - `u64::MAX` (and `u32::MAX` for the depth) means *unlimited*; [`Grant::unlimited`] is the grant of
//!   work nobody budgeted.
//! - `mem_soft <= mem_hard`. Crossing `mem_soft` asks for a checkpoint (the runtime may extend the
//!   grant); crossing `mem_hard` cancels the request at its next poll boundary.
//! - `io_depth` bounds this request's file operations in flight; the class's own depth limit in
//!   pagegen-io bounds the class as a whole.
//! - Readers of a [`GrantCell`] may see a mix of an old and a new grant's fields while a checkpoint
//!   updates it; each field is individually consistent, which is all a budget check needs.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::class::{ClassId, PoolId};

/// Resources handed to one request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Grant {
    /// Class the grant was computed for.
    pub class: ClassId,
    /// Pool the request's tasks run in.
    pub pool: PoolId,
    /// CPU budget, ns (`u64::MAX`: unlimited). Past it the request is demoted or cancelled by policy.
    pub cpu_ns: u64,
    /// Memory level that triggers a checkpoint, bytes of peak net allocation.
    pub mem_soft: u64,
    /// Memory level that cancels the request, bytes of peak net allocation.
    pub mem_hard: u64,
    /// File operations this request may have in flight (enforced by the I/O driver through
    /// [`IoAccount::try_begin_op`](crate::IoAccount::try_begin_op), which never overshoots).
    pub io_depth: u32,
    /// File I/O bandwidth, bytes per second (`u64::MAX`: unlimited). A per-request pace, not a
    /// burst bound: the I/O driver starts each op at the time
    /// [`IoAccount::reserve_bandwidth`](crate::IoAccount::reserve_bandwidth) gives it, so an idle
    /// request's first op starts at once; limiting what a whole class puts in the device queue is
    /// the class limits' job.
    pub io_bytes_per_sec: u64,
    /// Wall-clock budget from admission, ns (`u64::MAX`: none).
    pub wall_ns: u64,
    /// Priority of the request's outgoing network calls (0 = highest).
    pub net_priority: u8,
}

impl Grant {
    /// The grant of unbudgeted work: every limit open, latency pool.
    pub const fn unlimited(class: ClassId) -> Self {
        Grant {
            class,
            pool: PoolId::LATENCY,
            cpu_ns: u64::MAX,
            mem_soft: u64::MAX,
            mem_hard: u64::MAX,
            io_depth: u32::MAX,
            io_bytes_per_sec: u64::MAX,
            wall_ns: u64::MAX,
            net_priority: 0,
        }
    }
}

/// A [`Grant`] that can be read and replaced concurrently, one relaxed atomic per field.
#[derive(Debug)]
pub struct GrantCell {
    class: ClassId,
    pool: AtomicU8,
    cpu_ns: AtomicU64,
    mem_soft: AtomicU64,
    mem_hard: AtomicU64,
    io_depth: AtomicU32,
    io_bytes_per_sec: AtomicU64,
    wall_ns: AtomicU64,
    net_priority: AtomicU8,
}

impl GrantCell {
    /// A cell holding `grant`.
    pub fn new(grant: Grant) -> Self {
        GrantCell {
            class: grant.class,
            pool: AtomicU8::new(grant.pool.0),
            cpu_ns: AtomicU64::new(grant.cpu_ns),
            mem_soft: AtomicU64::new(grant.mem_soft.min(grant.mem_hard)),
            mem_hard: AtomicU64::new(grant.mem_hard),
            io_depth: AtomicU32::new(grant.io_depth),
            io_bytes_per_sec: AtomicU64::new(grant.io_bytes_per_sec),
            wall_ns: AtomicU64::new(grant.wall_ns),
            net_priority: AtomicU8::new(grant.net_priority),
        }
    }
    /// The current grant.
    pub fn get(&self) -> Grant {
        Grant {
            class: self.class,
            pool: PoolId(self.pool.load(Relaxed)),
            cpu_ns: self.cpu_ns.load(Relaxed),
            mem_soft: self.mem_soft.load(Relaxed),
            mem_hard: self.mem_hard.load(Relaxed),
            io_depth: self.io_depth.load(Relaxed),
            io_bytes_per_sec: self.io_bytes_per_sec.load(Relaxed),
            wall_ns: self.wall_ns.load(Relaxed),
            net_priority: self.net_priority.load(Relaxed),
        }
    }
    /// Replaces the grant (a checkpoint's extension or demotion). The class cannot change.
    pub fn set(&self, grant: Grant) {
        debug_assert_eq!(
            grant.class, self.class,
            "a grant cannot move a request to another class"
        );
        self.pool.store(grant.pool.0, Relaxed);
        self.cpu_ns.store(grant.cpu_ns, Relaxed);
        self.mem_hard.store(grant.mem_hard, Relaxed);
        self.mem_soft
            .store(grant.mem_soft.min(grant.mem_hard), Relaxed);
        self.io_depth.store(grant.io_depth, Relaxed);
        self.io_bytes_per_sec.store(grant.io_bytes_per_sec, Relaxed);
        self.wall_ns.store(grant.wall_ns, Relaxed);
        self.net_priority.store(grant.net_priority, Relaxed);
    }
    /// Pool, read alone (the executor's per-poll question).
    pub fn pool(&self) -> PoolId {
        PoolId(self.pool.load(Relaxed))
    }
    /// Moves the request to another pool (takes effect at its next scheduling).
    pub fn set_pool(&self, pool: PoolId) {
        self.pool.store(pool.0, Relaxed);
    }
    /// Changes the CPU budget alone (a checkpoint's extension), leaving every other field as it is
    /// — a concurrent [`set_pool`](Self::set_pool) is never undone.
    pub fn set_cpu_ns(&self, cpu_ns: u64) {
        self.cpu_ns.store(cpu_ns, Relaxed);
    }
    /// Changes both memory limits (a checkpoint's extension or refusal). `soft` is capped at `hard`;
    /// the limits are stored in the order that keeps a concurrent reader's soft ≤ hard when raising.
    pub fn set_memory(&self, soft: u64, hard: u64) {
        let soft = soft.min(hard);
        if hard >= self.mem_hard.load(Relaxed) {
            self.mem_hard.store(hard, Relaxed);
            self.mem_soft.store(soft, Relaxed);
        } else {
            self.mem_soft.store(soft, Relaxed);
            self.mem_hard.store(hard, Relaxed);
        }
    }
    /// Soft memory limit, read alone.
    pub fn mem_soft(&self) -> u64 {
        self.mem_soft.load(Relaxed)
    }
    /// Hard memory limit, read alone.
    pub fn mem_hard(&self) -> u64 {
        self.mem_hard.load(Relaxed)
    }
    /// I/O depth, read alone.
    pub fn io_depth(&self) -> u32 {
        self.io_depth.load(Relaxed)
    }
    /// CPU budget, read alone.
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Relaxed)
    }
    /// Wall-clock budget, read alone.
    pub fn wall_ns(&self) -> u64 {
        self.wall_ns.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_setters_change_one_field_and_keep_soft_below_hard() {
        let cell = GrantCell::new(Grant::unlimited(ClassId::from_raw(3)));
        cell.set_pool(PoolId::BULK);
        cell.set_cpu_ns(7);
        cell.set_memory(200, 100);
        let g = cell.get();
        assert_eq!(
            (g.pool, g.cpu_ns, g.mem_soft, g.mem_hard),
            (PoolId::BULK, 7, 100, 100)
        );
        cell.set_memory(150, 300);
        assert_eq!((cell.mem_soft(), cell.mem_hard()), (150, 300));
        cell.set_memory(10, 20);
        assert_eq!((cell.mem_soft(), cell.mem_hard()), (10, 20));
    }

    #[test]
    fn cell_round_trips_and_keeps_soft_below_hard() {
        let mut g = Grant::unlimited(ClassId::from_raw(3));
        g.mem_soft = 100;
        g.mem_hard = 50;
        g.pool = PoolId::BULK;
        let cell = GrantCell::new(g);
        let got = cell.get();
        assert_eq!(got.mem_soft, 50, "soft limit is capped at the hard limit");
        assert_eq!(got.pool, PoolId::BULK);
        g.mem_hard = 1000;
        g.mem_soft = 10;
        cell.set(g);
        assert_eq!(cell.get(), g);
        cell.set_pool(PoolId::LATENCY);
        assert_eq!(cell.pool(), PoolId::LATENCY);
    }
}
