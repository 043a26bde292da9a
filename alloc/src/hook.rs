//! [`AllocHook`]: the allocator's side of the executor's [`PollHook`] contract.
//!
//! Around each poll (and each drop of a task's future, and each blocking closure):
//! 1. *before*: select the class's arena and this thread's explicit tcache for it
//!    ([`crate::tcache`]), then zero the thread's accounting cell ([`crate::cell`]);
//! 2. the executor polls (or drops, or runs the closure);
//! 3. *after*: take the cell, return the thread to the default arena, fold the counters into
//!    `ctx.mem` with one [`MemAccount::flush`](pagegen_core::MemAccount::flush) (core's *flush once
//!    per poll*), and — after a poll — judge the peak against the grant ([`crate::budget`]).
//!
//! Brackets do not nest: a poll that itself polls another request's task on the same thread (a
//! `block_on` inside a task) leaves the outer poll in the default arena with its counters so far
//! folded into the inner request. pagegen's executor never nests polls.

use pagegen_core::{
    BlockingStats, DropCause, MemFlush, PollHook, PollStats, RequestCtx, Resource, Verdict,
    WorkerInfo,
};
use pagegen_core::{CancelReason, ClassId};
use tikv_jemalloc_sys::{MALLOCX_ARENA, MALLOCX_TCACHE};

use crate::arena;
use crate::budget::MemCheck;
use crate::cell::{CELL, NO_SLOT};
use crate::tcache;

/// The allocator's poll hook. Compose it with the others in the executor's hook tuple.
///
/// It reads what [`PagegenAlloc`](crate::PagegenAlloc) counted: with another global allocator
/// installed (`#[pagegen::main(allocator = false)]`) every count stays zero and no budget fires.
#[derive(Clone, Copy, Debug)]
pub struct AllocHook {
    arenas: bool,
}

impl Default for AllocHook {
    fn default() -> Self {
        AllocHook::new()
    }
}

impl AllocHook {
    /// Accounting, budgets and class arenas.
    pub const fn new() -> Self {
        AllocHook { arenas: true }
    }
    /// Accounting and budgets only: every class allocates from the default arenas.
    pub const fn accounting_only() -> Self {
        AllocHook { arenas: false }
    }

    /// jemalloc flags and slot for `class` on this thread: `(0, NO_SLOT)` for the default arenas.
    fn mode_for(&self, class: ClassId) -> (i32, usize) {
        if !self.arenas {
            return (0, NO_SLOT);
        }
        let Some(slot) = arena::slot_of(class) else {
            return (0, NO_SLOT);
        };
        let Some(a) = arena::arena_of_slot(slot) else {
            return (0, NO_SLOT);
        };
        match tcache::tcache_for(slot) {
            Some(tc) => (
                MALLOCX_ARENA(a as usize) | MALLOCX_TCACHE(tc as usize),
                slot,
            ),
            None => (0, NO_SLOT),
        }
    }

    fn enter(&self, ctx: &RequestCtx) {
        let (flags, slot) = self.mode_for(ctx.class());
        CELL.with(|c| {
            c.set_mode(flags, slot);
            c.reset();
        });
    }

    fn leave(&self) -> MemFlush {
        CELL.with(|c| {
            let f = c.take();
            c.set_mode(0, NO_SLOT);
            f
        })
    }

    /// Folds `f` into the request's account and returns its peak. A bracket that neither allocated
    /// nor freed skips the account's atomics (~50 ns of the ~65 ns a bracket costs, measured by the
    /// `alloc_hook_bracket` bench) and just reads the peak.
    fn fold(ctx: &RequestCtx, f: &MemFlush) -> i64 {
        if f.alloc_bytes == 0 && f.freed_bytes == 0 {
            ctx.mem.peak_net_bytes()
        } else {
            ctx.mem.flush(f)
        }
    }

    /// Judges `peak` against `ctx`'s live grant, marks the checkpoints it reached, and says whether
    /// to cancel.
    pub fn check(ctx: &RequestCtx, peak: i64) -> Verdict {
        let grant = ctx.grant();
        let check = MemCheck::judge(peak, grant.mem_soft(), grant.mem_hard());
        for level in check.levels() {
            ctx.mark_checkpoint(Resource::Memory, level);
        }
        if check.over {
            Verdict::Cancel(CancelReason::BudgetExceeded(Resource::Memory))
        } else {
            Verdict::Continue
        }
    }
}

impl PollHook for AllocHook {
    #[inline]
    fn before_poll(&self, ctx: &RequestCtx) {
        self.enter(ctx);
    }
    #[inline]
    fn after_poll(&self, ctx: &RequestCtx, _stats: &PollStats) -> Verdict {
        let peak = AllocHook::fold(ctx, &self.leave());
        // Judged even after an empty poll: a checkpoint may have shrunk the grant meanwhile.
        AllocHook::check(ctx, peak)
    }
    #[inline]
    fn before_drop(&self, ctx: &RequestCtx, _cause: DropCause) {
        self.enter(ctx);
    }
    #[inline]
    fn after_drop(&self, ctx: &RequestCtx, _cause: DropCause) {
        AllocHook::fold(ctx, &self.leave());
    }
    #[inline]
    fn before_blocking(&self, ctx: &RequestCtx) {
        self.enter(ctx);
    }
    #[inline]
    fn after_blocking(&self, ctx: &RequestCtx, _stats: &BlockingStats) {
        let peak = AllocHook::fold(ctx, &self.leave());
        // A blocking closure has no verdict of its own; an overrun shows at the request's next poll
        // boundary through the cancel flag.
        if let Verdict::Cancel(reason) = AllocHook::check(ctx, peak) {
            ctx.request_cancel(reason);
        }
    }
    fn thread_stopping(&self, _worker: &WorkerInfo) {
        tcache::destroy_thread_tcaches();
    }
}
