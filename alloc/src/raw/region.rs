//! One reserved address range, cut into a slot per class arena, handed to jemalloc through extent
//! hooks, so that the owner of any pointer is `(addr − base) >> SLOT_SHIFT`.
//!
//! (The idea of giving an arena its own address range through extent hooks, to make ownership a
//! range check, is the one jemalloc's manual offers for custom extent management; this is written
//! afresh for pagegen.)
//!
//! Protocol:
//! - [`reserve`] maps `SLOTS << SLOT_SHIFT` bytes `PROT_NONE` once (no commit charge under any
//!   overcommit mode). Until then [`owner`] answers "no slot" for every pointer.
//! - Slot `s`'s extent hooks hand out memory from `[base + s·2^SLOT_SHIFT, base + (s+1)·2^SLOT_SHIFT)`
//!   by bumping a cursor and `mprotect`ing the range read-write. They refuse `dalloc` (jemalloc then
//!   *retains* the extent and reuses it), purge with `MADV_FREE`/`MADV_DONTNEED` (so RSS comes back),
//!   allow splits, and allow merges only inside one slot.
//! - A slot that runs out returns null to jemalloc; the allocator then serves the request from the
//!   default arena (see [`global`](super::global)).
//!
//! ## What jemalloc guarantees a hook (the callbacks' `# Safety`)
//! jemalloc calls the hooks below only through the `extent_hooks_t` it was given at
//! `arenas.create` ([`hooks_for`]), per the jemalloc 5.3 manual (`arena.<i>.extent_hooks`):
//! - `hooks` is that pointer, unchanged, so it points at the `hooks` field of a [`SlotHooks`] in
//!   the static `HOOKS` ([`slot_of`] relies on this);
//! - every extent it names (`addr`, `size`, and for merges both halves) is one that `hook_alloc`
//!   handed out for this arena and jemalloc has not given back (`dalloc` is refused, so none is);
//! - a purge's `[addr + offset, addr + offset + length)` lies inside that extent, is page-aligned,
//!   and holds no live allocation;
//! - the out-pointers of `hook_alloc` (`zero`, `commit`) are valid for one `bool` write each;
//! - a hook may be called from any thread, concurrently with itself, with arena locks held, so a
//!   hook must not allocate or re-enter jemalloc (these touch only atomics and syscalls).

use std::ffi::{c_uint, c_void};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tikv_jemalloc_sys::extent_hooks_t;

use crate::cell::NO_SLOT;

/// Number of class slots: classes `1..SLOTS` get their own arena, others share the default arena.
/// 64 request classes covers the sites we know of (one class per route); raising it costs only
/// address space (`SLOTS × 16 GiB`, never committed) and one tcache table entry per thread.
pub(crate) const SLOTS: usize = 64;
/// log2 of a slot's size: 16 GiB, so one class's live heap may reach 16 GiB before its arena
/// overflows to the default arena. Plucked to fit 64 slots in 1 TiB of the 128 TiB x86-64 user space.
pub(crate) const SLOT_SHIFT: u32 = 34;
const SLOT_BYTES: usize = 1 << SLOT_SHIFT;

/// Start of the reservation. Before [`reserve`] it is 2^63, an address no user-space pointer has,
/// so `owner` finds no slot for any pointer.
static BASE: AtomicUsize = AtomicUsize::new(1 << 63);
/// Per slot, the next free address (0: the slot's start).
static CURSOR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static RESERVE_LOCK: Mutex<bool> = Mutex::new(false);

/// A slot's hooks, with the slot number after them so a hook can find its slot from the hooks
/// pointer jemalloc passes back (`#[repr(C)]`, hooks first).
#[repr(C)]
struct SlotHooks {
    hooks: extent_hooks_t,
    slot: usize,
}

const fn slot_hooks() -> [SlotHooks; SLOTS] {
    let mut all = [const {
        SlotHooks {
            hooks: extent_hooks_t {
                alloc: Some(hook_alloc),
                dalloc: Some(hook_dalloc),
                destroy: None,
                commit: None,
                decommit: None,
                purge_lazy: Some(hook_purge_lazy),
                purge_forced: Some(hook_purge_forced),
                split: Some(hook_split),
                merge: Some(hook_merge),
            },
            slot: 0,
        }
    }; SLOTS];
    let mut i = 0;
    while i < SLOTS {
        all[i].slot = i;
        i += 1;
    }
    all
}

static HOOKS: [SlotHooks; SLOTS] = slot_hooks();

/// Reserves the range (idempotent). Returns whether it is reserved.
pub(crate) fn reserve() -> bool {
    let mut done = RESERVE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return true;
    }
    // SAFETY: an anonymous private PROT_NONE mapping at an address of the kernel's choosing touches
    // no existing memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            SLOTS * SLOT_BYTES,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return false;
    }
    BASE.store(base as usize, Ordering::Release);
    *done = true;
    true
}

/// The hooks for `slot`, to pass to `arenas.create`. jemalloc only reads through the pointer.
pub(crate) fn hooks_for(slot: usize) -> *mut extent_hooks_t {
    (&raw const HOOKS[slot].hooks).cast_mut()
}

/// The slot whose range holds `addr`, or [`NO_SLOT`].
#[inline(always)]
pub(crate) fn owner(addr: usize) -> usize {
    let s = addr.wrapping_sub(BASE.load(Ordering::Relaxed)) >> SLOT_SHIFT;
    if s < SLOTS {
        s
    } else {
        NO_SLOT
    }
}

/// # Safety
/// `hooks` must be a pointer returned by [`hooks_for`].
unsafe fn slot_of(hooks: *mut extent_hooks_t) -> usize {
    // SAFETY: per the contract `hooks` points at the first field of a `#[repr(C)] SlotHooks` in the
    // static `HOOKS`.
    unsafe { (*hooks.cast::<SlotHooks>()).slot }
}

/// jemalloc's `alloc` hook: a fresh extent of `size` bytes aligned to `alignment` from this
/// slot's range, or null.
///
/// # Safety
/// Called by jemalloc only, under the guarantees in the module docs: `hooks` is one of
/// [`hooks_for`]'s pointers, and `zero` and `commit` are valid for writes.
unsafe extern "C" fn hook_alloc(
    hooks: *mut extent_hooks_t,
    new_addr: *mut c_void,
    size: usize,
    alignment: usize,
    zero: *mut bool,
    commit: *mut bool,
    _arena: c_uint,
) -> *mut c_void {
    if !new_addr.is_null() || size == 0 || !alignment.is_power_of_two() {
        // Growing in place at a chosen address is not offered; jemalloc falls back to a fresh extent.
        return ptr::null_mut();
    }
    // SAFETY: jemalloc passes back the pointer it was created with, one of `hooks_for`'s.
    let slot = unsafe { slot_of(hooks) };
    let start_of_slot = BASE.load(Ordering::Acquire) + (slot << SLOT_SHIFT);
    let end_of_slot = start_of_slot + SLOT_BYTES;
    let cursor = &CURSOR[slot];
    let mut cur = cursor.load(Ordering::Relaxed);
    let start = loop {
        let from = cur.max(start_of_slot);
        let start = (from + alignment - 1) & !(alignment - 1);
        let end = match start.checked_add(size) {
            Some(e) if e <= end_of_slot => e,
            _ => return ptr::null_mut(),
        };
        match cursor.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break start,
            Err(seen) => cur = seen,
        }
    };
    // SAFETY: `[start, start + size)` lies inside our reservation and was handed out to nobody
    // before (the cursor only moves forward).
    let rc = unsafe {
        libc::mprotect(
            start as *mut c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if rc != 0 {
        return ptr::null_mut();
    }
    // SAFETY: jemalloc passes valid out-pointers. Fresh anonymous pages are zeroed and, once
    // read-write, committed.
    unsafe {
        *zero = true;
        *commit = true;
    }
    start as *mut c_void
}

/// jemalloc's `dalloc` hook: always refuses, so jemalloc retains the extent.
///
/// # Safety
/// Called by jemalloc only, under the guarantees in the module docs. It reads none of its
/// arguments, so it has no requirement of its own.
unsafe extern "C" fn hook_dalloc(
    _hooks: *mut extent_hooks_t,
    _addr: *mut c_void,
    _size: usize,
    _committed: bool,
    _arena: c_uint,
) -> bool {
    // Opt out: jemalloc retains the extent and reuses it; its pages are released by the purge hooks.
    true
}

/// jemalloc's `purge_lazy` hook: `MADV_FREE` on part of an extent. Returns `true` on failure.
///
/// # Safety
/// Called by jemalloc only, under the guarantees in the module docs: `addr` starts an extent
/// `hook_alloc` handed out, and `[addr + offset, addr + offset + length)` lies inside it and holds
/// no live allocation.
unsafe extern "C" fn hook_purge_lazy(
    _hooks: *mut extent_hooks_t,
    addr: *mut c_void,
    _size: usize,
    offset: usize,
    length: usize,
    _arena: c_uint,
) -> bool {
    // SAFETY: jemalloc purges only pages of an extent it got from `hook_alloc`, which it no longer
    // uses; `offset + length` lies inside that extent.
    unsafe {
        libc::madvise(
            addr.cast::<u8>().add(offset).cast(),
            length,
            libc::MADV_FREE,
        ) != 0
    }
}

/// jemalloc's `purge_forced` hook: `MADV_DONTNEED` on part of an extent, which then reads back
/// as zeroes. Returns `true` on failure.
///
/// # Safety
/// As for [`hook_purge_lazy`]: called by jemalloc only, on a range inside an extent `hook_alloc`
/// handed out that holds no live allocation.
unsafe extern "C" fn hook_purge_forced(
    _hooks: *mut extent_hooks_t,
    addr: *mut c_void,
    _size: usize,
    offset: usize,
    length: usize,
    _arena: c_uint,
) -> bool {
    // SAFETY: as for `hook_purge_lazy`; after MADV_DONTNEED the pages read back as zeroes.
    unsafe {
        libc::madvise(
            addr.cast::<u8>().add(offset).cast(),
            length,
            libc::MADV_DONTNEED,
        ) != 0
    }
}

/// jemalloc's `split` hook: always allows (`false`), since a split stays inside its slot.
///
/// # Safety
/// Called by jemalloc only, under the guarantees in the module docs. It reads none of its
/// arguments, so it has no requirement of its own.
unsafe extern "C" fn hook_split(
    _hooks: *mut extent_hooks_t,
    _addr: *mut c_void,
    _size: usize,
    _size_a: usize,
    _size_b: usize,
    _committed: bool,
    _arena: c_uint,
) -> bool {
    // Splitting never crosses a slot boundary.
    false
}

/// jemalloc's `merge` hook: refuses (`true`) a merge of two extents in different slots.
///
/// # Safety
/// Called by jemalloc only, under the guarantees in the module docs. It compares the two
/// addresses and dereferences neither, so it has no requirement of its own.
unsafe extern "C" fn hook_merge(
    _hooks: *mut extent_hooks_t,
    addr_a: *mut c_void,
    _size_a: usize,
    addr_b: *mut c_void,
    _size_b: usize,
    _committed: bool,
    _arena: c_uint,
) -> bool {
    // Refuse (true) a merge across slots; jemalloc only merges neighbours of one arena, so this is
    // a guard, not a path.
    owner(addr_a as usize) != owner(addr_b as usize)
}
