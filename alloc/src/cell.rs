//! The per-thread accounting cell: what the allocator accumulates between two hook calls.
//!
//! Protocol (core's *flush once per poll*, [`pagegen_core::account`]): the allocator adds every
//! allocation and free made on this thread to the cell with plain (non-atomic) arithmetic; the
//! hook resets the cell before a poll (or a drop, or a blocking closure) and folds it into the
//! request's [`MemAccount`](pagegen_core::MemAccount) once, after it. Work done between two
//! brackets is counted and then discarded by the next reset: it belongs to no request.
//!
//! The cell also carries the *allocation mode* the hook selected for the poll: the jemalloc flags
//! (class arena + the thread's explicit tcache for that class) and the class's region slot, which
//! the free path compares an object's owner against (see [`crate::raw`]).
//!
//! The thread-local is const-initialised and holds only `Cell`s of plain integers, so it has no
//! destructor and no lazy initialisation: the allocator may touch it at any moment of a thread's
//! life, including while the thread is being torn down, without re-entering itself.
//!
//! ## What "same-poll freed" measures
//! Tagging each object with the poll that allocated it would cost a header per allocation, and even
//! a running match per free costs a dependency chain on the hot path. So it is computed at flush as
//! `min(bytes allocated in the poll, bytes freed in the poll)`: exact when a poll frees only what it
//! allocated (the short-lived temporaries it is meant to find), an upper bound when a poll also
//! frees older objects (it cannot tell them apart). It is a lifetime signal for the model, not a
//! ledger.

use std::cell::Cell;

use pagegen_core::{log2_bucket, MemFlush, LOG2_BUCKETS};

/// Region slot value meaning "no class region" (the default arena).
pub(crate) const NO_SLOT: usize = usize::MAX;

/// One thread's counters and allocation mode.
///
/// Kept to the fewest read-modify-writes per call: on a tight alloc/free loop each counter is a
/// store-to-load dependency chain, so a pair costs about one forwarding latency per counter it
/// touches. Net bytes are `alloc_bytes − freed_bytes`, the allocation count is the histogram's sum,
/// and the peak is only stored when it rises; an allocation writes two cells, a free two.
#[derive(Debug)]
pub(crate) struct ThreadCell {
    /// jemalloc flags for allocations in the current bracket; 0 = plain jemalloc (default arena,
    /// the thread's automatic tcache).
    pub(crate) flags: Cell<i32>,
    /// Region slot of the current class arena, or [`NO_SLOT`].
    pub(crate) slot: Cell<usize>,
    alloc_bytes: Cell<u64>,
    freed_bytes: Cell<u64>,
    frees: Cell<u64>,
    /// Highest `alloc_bytes − freed_bytes` seen since the reset (starts at 0).
    peak: Cell<i64>,
    sizes: [Cell<u64>; LOG2_BUCKETS],
}

impl ThreadCell {
    pub(crate) const fn new() -> Self {
        ThreadCell {
            flags: Cell::new(0),
            slot: Cell::new(NO_SLOT),
            alloc_bytes: Cell::new(0),
            freed_bytes: Cell::new(0),
            frees: Cell::new(0),
            peak: Cell::new(0),
            sizes: [const { Cell::new(0) }; LOG2_BUCKETS],
        }
    }

    /// Counts one allocation of `size` bytes.
    #[inline(always)]
    pub(crate) fn on_alloc(&self, size: usize) {
        let size = size as u64;
        let bucket = &self.sizes[log2_bucket(size)];
        bucket.set(bucket.get().wrapping_add(1));
        self.grow(size);
    }

    /// Counts one free of `size` bytes.
    #[inline(always)]
    pub(crate) fn on_free(&self, size: usize) {
        self.freed_bytes
            .set(self.freed_bytes.get().wrapping_add(size as u64));
        self.frees.set(self.frees.get().wrapping_add(1));
    }

    /// Counts an in-place or same-arena reallocation from `old` to `new` bytes: growth is allocated
    /// bytes (one allocation, bucketed by the new size), shrinkage is freed bytes (no extra free).
    #[inline(always)]
    pub(crate) fn on_realloc(&self, old: usize, new: usize) {
        if new > old {
            let bucket = &self.sizes[log2_bucket(new as u64)];
            bucket.set(bucket.get().wrapping_add(1));
            self.grow((new - old) as u64);
        } else if new < old {
            self.freed_bytes
                .set(self.freed_bytes.get().wrapping_add((old - new) as u64));
        }
        // Same size: nothing moved, nothing counted.
    }

    #[inline(always)]
    fn grow(&self, by: u64) {
        let allocated = self.alloc_bytes.get().wrapping_add(by);
        self.alloc_bytes.set(allocated);
        let net = allocated.wrapping_sub(self.freed_bytes.get()) as i64;
        if net > self.peak.get() {
            self.peak.set(net);
        }
    }

    /// Zeroes the counters (start of a bracket). The allocation mode is left alone.
    pub(crate) fn reset(&self) {
        if self.alloc_bytes.get() == 0 && self.freed_bytes.get() == 0 {
            return; // already zero: see `take`
        }
        self.alloc_bytes.set(0);
        self.freed_bytes.set(0);
        self.frees.set(0);
        self.peak.set(0);
        for b in &self.sizes {
            b.set(0);
        }
    }

    /// Reads the counters out as one flush and zeroes them (end of a bracket).
    pub(crate) fn take(&self) -> MemFlush {
        // Every counted event moves a byte counter (sizes are never 0, a same-size realloc counts
        // nothing), so an idle bracket is recognised without touching the histogram.
        if self.alloc_bytes.get() == 0 && self.freed_bytes.get() == 0 {
            return MemFlush::default();
        }
        let size_classes: [u64; LOG2_BUCKETS] = std::array::from_fn(|i| self.sizes[i].get());
        let (alloc_bytes, freed_bytes) = (self.alloc_bytes.get(), self.freed_bytes.get());
        let flush = MemFlush {
            alloc_bytes,
            freed_bytes,
            allocs: size_classes.iter().sum(),
            frees: self.frees.get(),
            peak_delta: self.peak.get().max(0),
            same_poll_freed_bytes: alloc_bytes.min(freed_bytes),
            size_classes,
        };
        self.reset();
        flush
    }

    /// Selects the allocation mode for the coming bracket.
    pub(crate) fn set_mode(&self, flags: i32, slot: usize) {
        self.flags.set(flags);
        self.slot.set(slot);
    }
}

thread_local! {
    /// This thread's cell. Const-initialised, no destructor (see module docs).
    pub(crate) static CELL: ThreadCell = const { ThreadCell::new() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::MemAccount;
    use proptest::prelude::*;

    #[test]
    fn counts_one_poll_exactly() {
        let c = ThreadCell::new();
        c.on_alloc(100);
        c.on_alloc(1000);
        c.on_free(100);
        c.on_realloc(1000, 1500);
        c.on_realloc(1500, 1200);
        let f = c.take();
        assert_eq!(f.alloc_bytes, 1600);
        assert_eq!(f.freed_bytes, 400);
        assert_eq!(f.allocs, 3);
        assert_eq!(f.frees, 1);
        assert_eq!(f.net_delta(), 1200);
        assert_eq!(f.peak_delta, 1500);
        assert_eq!(f.same_poll_freed_bytes, 400);
        assert_eq!(f.size_classes[log2_bucket(100)], 1);
        assert_eq!(f.size_classes[log2_bucket(1000)], 1);
        assert_eq!(f.size_classes[log2_bucket(1500)], 1);
        assert_eq!(c.take(), MemFlush::default(), "take zeroes the cell");
        c.on_realloc(64, 64);
        assert_eq!(
            c.take(),
            MemFlush::default(),
            "a same-size realloc counts nothing"
        );
    }

    #[test]
    fn freeing_older_memory_goes_negative_and_is_not_same_poll() {
        let c = ThreadCell::new();
        c.on_free(4096);
        let f = c.take();
        assert_eq!(f.net_delta(), -4096);
        assert_eq!(f.peak_delta, 0);
        assert_eq!(f.same_poll_freed_bytes, 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize),
        /// Free the i-th live object (modulo), possibly one of an earlier poll.
        Free(usize),
        /// Free memory some other request allocated.
        ForeignFree(usize),
        EndPoll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..1 << 20).prop_map(Op::Alloc),
            3 => any::<usize>().prop_map(Op::Free),
            1 => (1usize..1 << 16).prop_map(Op::ForeignFree),
            1 => Just(Op::EndPoll),
        ]
    }

    proptest! {
        #[test]
        fn account_invariants_hold(ops in proptest::collection::vec(op(), 0..200)) {
            let cell = ThreadCell::new();
            let account = MemAccount::default();
            let mut live: Vec<usize> = Vec::new();
            let (mut allocated, mut freed, mut net, mut peak) = (0u64, 0u64, 0i64, 0i64);
            for op in ops {
                match op {
                    Op::Alloc(n) => { cell.on_alloc(n); live.push(n); allocated += n as u64; net += n as i64; }
                    Op::Free(i) if !live.is_empty() => {
                        let n = live.swap_remove(i % live.len());
                        cell.on_free(n); freed += n as u64; net -= n as i64;
                    }
                    Op::Free(_) => {}
                    Op::ForeignFree(n) => { cell.on_free(n); freed += n as u64; net -= n as i64; }
                    Op::EndPoll => { account.flush(&cell.take()); }
                }
                peak = peak.max(net);
            }
            let got_peak = account.flush(&cell.take());
            let u = account.snapshot();
            prop_assert_eq!(u.alloc_bytes, allocated);
            prop_assert_eq!(u.freed_bytes, freed);
            prop_assert_eq!(u.net_bytes, allocated as i64 - freed as i64);
            prop_assert_eq!(u.net_bytes, net);
            prop_assert!(u.peak_net_bytes >= u.net_bytes);
            prop_assert!(u.peak_net_bytes >= 0);
            // Polls of one task never overlap, so the folded peak is the true peak.
            prop_assert_eq!(u.peak_net_bytes, peak);
            prop_assert_eq!(got_peak, peak);
            prop_assert!(u.same_poll_freed_bytes <= freed.min(allocated));
        }
    }
}
