//! Explicit jemalloc tcaches: one per (thread, class), bounded per thread, destroyed by a hook.
//!
//! A class arena is used through `MALLOCX_ARENA(a) | MALLOCX_TCACHE(tc)` with a tcache the thread
//! owns for that class, so a class's cached objects never serve another class (switching
//! `thread.arena` per poll instead costs ~375 ns, measured on this machine).
//!
//! Bounds: a thread keeps at most [`MAX_TCACHES_PER_THREAD`] explicit tcaches; polling a further
//! class destroys the least recently used one (its objects return to their arena). A tcache caches
//! objects up to `opt.tcache_max` (32 KiB by default) in a bounded number of slots per size class,
//! so what all explicit tcaches hoard is at most `threads × MAX_TCACHES_PER_THREAD × (one automatic
//! tcache's worth)`. [`destroy_thread_tcaches`] runs from
//! [`PollHook::thread_stopping`](pagegen_core::PollHook::thread_stopping) — never from a TLS
//! destructor, which would re-enter the allocator at thread exit.
//!
//! Invariant: the tcache named by the thread's current allocation mode ([`crate::cell`]) is never
//! destroyed; eviction skips it and `destroy_thread_tcaches` resets the mode first.

use std::cell::Cell;

use crate::arena::MAX_CLASS_ARENAS;
use crate::cell::CELL;
use crate::raw::ffi;

/// Explicit tcaches one thread keeps. A worker polls a handful of hot classes; 8 plucked as "a
/// handful" with room to spare.
pub const MAX_TCACHES_PER_THREAD: usize = 8;

struct ThreadTcaches {
    /// Per slot: tcache index + 1, 0 = none.
    ids: [Cell<u32>; MAX_CLASS_ARENAS],
    /// Per slot: value of `clock` at last use.
    used: [Cell<u32>; MAX_CLASS_ARENAS],
    clock: Cell<u32>,
    live: Cell<u32>,
}

thread_local! {
    // Const-initialised, plain integers: no destructor (see `crate::cell`).
    static TCACHES: ThreadTcaches = const {
        ThreadTcaches {
            ids: [const { Cell::new(0) }; MAX_CLASS_ARENAS],
            used: [const { Cell::new(0) }; MAX_CLASS_ARENAS],
            clock: Cell::new(0),
            live: Cell::new(0),
        }
    };
}

/// This thread's tcache for `slot`, created on first use. `None` if jemalloc refused one.
pub(crate) fn tcache_for(slot: usize) -> Option<u32> {
    TCACHES.with(|t| {
        let now = t.clock.get().wrapping_add(1);
        t.clock.set(now);
        if let Some(tc) = t.ids[slot].get().checked_sub(1) {
            t.used[slot].set(now);
            return Some(tc);
        }
        if t.live.get() as usize >= MAX_TCACHES_PER_THREAD {
            evict_lru(t);
        }
        let tc = ffi::tcache_create().ok()?;
        t.ids[slot].set(tc + 1);
        t.used[slot].set(now);
        t.live.set(t.live.get() + 1);
        Some(tc)
    })
}

fn evict_lru(t: &ThreadTcaches) {
    let current = CELL.with(|c| c.slot.get());
    let now = t.clock.get();
    let victim = (0..MAX_CLASS_ARENAS)
        .filter(|&s| s != current && t.ids[s].get() != 0)
        .max_by_key(|&s| now.wrapping_sub(t.used[s].get()));
    if let Some(s) = victim {
        let _ = ffi::tcache_destroy(t.ids[s].get() - 1);
        t.ids[s].set(0);
        t.live.set(t.live.get() - 1);
    }
}

/// Destroys every explicit tcache of this thread; returns how many. Resets the thread's allocation
/// mode to the default arena first.
pub(crate) fn destroy_thread_tcaches() -> usize {
    CELL.with(|c| c.set_mode(0, crate::cell::NO_SLOT));
    TCACHES.with(|t| {
        let mut n = 0;
        for s in 0..MAX_CLASS_ARENAS {
            if let Some(tc) = t.ids[s].get().checked_sub(1) {
                let _ = ffi::tcache_destroy(tc);
                t.ids[s].set(0);
                n += 1;
            }
        }
        t.live.set(0);
        n
    })
}

/// Explicit tcaches this thread holds now.
pub fn thread_tcaches() -> usize {
    TCACHES.with(|t| t.live.get() as usize)
}
