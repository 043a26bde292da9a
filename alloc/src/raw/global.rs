//! [`PagegenAlloc`]: jemalloc, plus the per-thread accounting cell and the class-arena mode.
//!
//! Per call: one thread-local access (const-initialised, no destructor: [`crate::cell`]), a few
//! integer adds, and for frees the owner range check ([`super::region`]). The free path across
//! classes is the table in [`super`]. Accounting counts the *requested* size (`Layout::size`),
//! which is what the program asked for and is exact in tests; jemalloc's size-class rounding shows
//! in the class statistics instead.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_void};
use std::ptr;

use tikv_jemalloc_sys as sys;

use super::region;
use crate::cell::{ThreadCell, CELL, NO_SLOT};

/// pagegen's global allocator: jemalloc with per-request accounting and per-class arenas.
///
/// Install it with `#[global_allocator]` (`#[pagegen::main]` does, unless told
/// `allocator = false`). Without [`AllocHook`](crate::AllocHook) around polls it behaves as plain
/// jemalloc with a thread-local counter per call.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagegenAlloc {
    _private: (),
}

impl PagegenAlloc {
    /// The allocator value for a `static`.
    pub const fn new() -> Self {
        PagegenAlloc { _private: () }
    }
}

/// Largest alignment `malloc` guarantees on the supported 64-bit targets (`_Alignof(max_align_t)`).
const MAX_ALIGN_T: usize = 16;

/// jemalloc flag for `layout`'s alignment, 0 when the size class already guarantees it.
#[inline(always)]
fn align_flags(align: usize, size: usize) -> c_int {
    if align <= MAX_ALIGN_T && align <= size {
        0
    } else {
        sys::MALLOCX_ALIGN(align)
    }
}

/// # Safety
/// `size > 0`; `af` comes from `align_flags`.
#[inline(always)]
unsafe fn plain_alloc(size: usize, af: c_int, zero: bool) -> *mut u8 {
    // SAFETY: non-zero size per the contract; the flags are valid jemalloc flags.
    unsafe {
        match (af, zero) {
            (0, false) => sys::malloc(size).cast(),
            (0, true) => sys::calloc(1, size).cast(),
            (af, false) => sys::mallocx(size, af).cast(),
            (af, true) => sys::mallocx(size, af | sys::MALLOCX_ZERO).cast(),
        }
    }
}

/// # Safety
/// `layout.size() > 0` (the `GlobalAlloc` contract).
#[inline(always)]
unsafe fn alloc_in(cell: &ThreadCell, layout: Layout, zero: bool) -> *mut u8 {
    let size = layout.size();
    let af = align_flags(layout.align(), size);
    let flags = cell.flags.get();
    let p = if flags == 0 {
        // SAFETY: size > 0 per the contract.
        unsafe { plain_alloc(size, af, zero) }
    } else {
        let zf = if zero { sys::MALLOCX_ZERO } else { 0 };
        // SAFETY: `flags` names an arena and tcache created by this crate and owned by this thread.
        let p: *mut u8 = unsafe { sys::mallocx(size, flags | af | zf).cast() };
        if p.is_null() {
            // The class's slot is exhausted (or its arena failed): serve from the default arena.
            // A real out-of-memory fails there too and is passed on as null.
            // SAFETY: as above.
            unsafe { plain_alloc(size, af, zero) }
        } else {
            p
        }
    };
    if !p.is_null() {
        cell.on_alloc(size);
    }
    p
}

/// # Safety
/// `ptr` was returned by this allocator for `layout`.
#[inline(always)]
unsafe fn dealloc_in(cell: &ThreadCell, ptr: *mut u8, layout: Layout) {
    let size = layout.size();
    cell.on_free(size);
    let af = align_flags(layout.align(), size);
    let owner = region::owner(ptr as usize);
    let flags = if owner == NO_SLOT {
        // Default arena: the thread's automatic tcache.
        af
    } else if owner == cell.slot.get() {
        // Same class: its explicit tcache.
        cell.flags.get() | af
    } else {
        // Another class's arena: bypass every tcache so the object goes home.
        sys::MALLOCX_TCACHE_NONE | af
    };
    // SAFETY: `ptr` and `size` describe a live allocation of ours (contract); the tcache in `flags`
    // is this thread's or none.
    unsafe { sys::sdallocx(ptr.cast::<c_void>(), size, flags) }
}

/// Reallocates by allocating in the current mode, copying and freeing the old block.
///
/// # Safety
/// The `GlobalAlloc::realloc` contract: `ptr` is live with `layout`, `new_size > 0` and forms a
/// valid layout with `layout.align()`.
unsafe fn move_block(c: &ThreadCell, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    // SAFETY: `new_size > 0`.
    let p = unsafe { alloc_in(c, new_layout, false) };
    if !p.is_null() {
        // SAFETY: both blocks are live, distinct, and at least `min(old, new)` long.
        unsafe { ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size)) };
        // SAFETY: `ptr` is live with `layout`; it is not used again.
        unsafe { dealloc_in(c, ptr, layout) };
    }
    p
}

/// This thread's cell, by reference. `LocalKey::with` with the allocator's whole body as its
/// closure was not inlined (an indirect call through the key on every allocation, measured at
/// +6 ns per pair); taking only the address keeps `with` trivial and inlined.
#[inline(always)]
fn cell() -> &'static ThreadCell {
    let p: *const ThreadCell = CELL.with(|c| c as *const ThreadCell);
    // SAFETY: the cell is a const-initialised thread-local without a destructor, so it lives, at
    // this address, until the thread exits; the reference is used only by the current allocator
    // call on this thread (it is never sent or stored), and `ThreadCell` is all `Cell`s.
    unsafe { &*p }
}

// SAFETY: every path returns memory from jemalloc sized and aligned for the layout (the alignment
// flag covers over-aligned layouts), frees through jemalloc with the same size, never unwinds and
// passes allocation failure on as null. The thread-local it touches has no destructor and no lazy
// initialisation, so it cannot re-enter the allocator.
unsafe impl GlobalAlloc for PagegenAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded `GlobalAlloc::alloc` contract.
        unsafe { alloc_in(cell(), layout, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded `GlobalAlloc::alloc_zeroed` contract.
        unsafe { alloc_in(cell(), layout, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded `GlobalAlloc::dealloc` contract.
        unsafe { dealloc_in(cell(), ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let c = cell();
        let flags = c.flags.get();
        if region::owner(ptr as usize) != c.slot.get() {
            // Moving between pools: rallocx would free the old object into the current tcache
            // (the cross-class hazard), so move by hand; it counts as one alloc and one free.
            // SAFETY: forwarded `GlobalAlloc::realloc` contract.
            return unsafe { move_block(c, ptr, layout, new_size) };
        }
        // Same pool (both default, or both the current class): jemalloc may grow in place.
        let af = align_flags(layout.align(), new_size);
        // SAFETY: `ptr` is live with `layout` and `new_size > 0` (contract); `flags` is this
        // thread's arena/tcache or 0.
        let p: *mut u8 = unsafe {
            if flags == 0 && af == 0 {
                sys::realloc(ptr.cast(), new_size).cast()
            } else {
                sys::rallocx(ptr.cast(), new_size, flags | af).cast()
            }
        };
        if !p.is_null() {
            c.on_realloc(layout.size(), new_size);
            p
        } else if flags == 0 {
            // Out of memory in the default arena: passed on.
            p
        } else {
            // The class's slot is exhausted: move by hand; `alloc_in` falls back to the default
            // arena, where a real out-of-memory returns null too.
            // SAFETY: forwarded `GlobalAlloc::realloc` contract; `ptr` is still live.
            unsafe { move_block(c, ptr, layout, new_size) }
        }
    }
}

/// jemalloc called with an explicit arena and tcache (`mallocx`/`sdallocx` with
/// `MALLOCX_ARENA | MALLOCX_TCACHE`) and nothing else: the anchor that separates jemalloc's own
/// cost of explicit flags from pagegen's additions in the benchmarks. Not an allocator to install:
/// its tcache is created for the thread that builds it and must be used by that thread only.
#[derive(Clone, Copy, Debug)]
pub struct ExplicitTcache {
    flags: c_int,
}

impl ExplicitTcache {
    /// Flags for `class`'s arena and a tcache of its own (never destroyed: benchmarks only).
    /// `None` if the class has no arena or jemalloc refused a tcache.
    pub fn for_class(class: pagegen_core::ClassId) -> Option<Self> {
        let arena = crate::arena::slot_of(class).and_then(crate::arena::arena_of_slot)?;
        let tc = super::ffi::tcache_create().ok()?;
        Some(ExplicitTcache {
            flags: sys::MALLOCX_ARENA(arena as usize) | sys::MALLOCX_TCACHE(tc as usize),
        })
    }
}

// SAFETY: memory comes from jemalloc with the layout's size and alignment flag and is freed with
// the same size; failure is null; it never unwinds.
unsafe impl GlobalAlloc for ExplicitTcache {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let af = align_flags(layout.align(), layout.size());
        // SAFETY: non-zero size (contract); flags name a live arena and tcache.
        unsafe { sys::mallocx(layout.size(), self.flags | af).cast() }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let af = align_flags(layout.align(), layout.size());
        // SAFETY: `ptr` came from `alloc` with `layout`.
        unsafe { sys::sdallocx(ptr.cast(), layout.size(), self.flags | af) }
    }
}
