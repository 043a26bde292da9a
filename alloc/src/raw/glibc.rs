//! glibc's allocator as a `GlobalAlloc` value: the "system malloc" anchor of the benchmarks.
//!
//! pagegen links jemalloc with its unprefixed symbols, so in a pagegen binary `malloc` *is*
//! jemalloc and `std::alloc::System` measures jemalloc twice. glibc still exports its own entry
//! points as `__libc_malloc`/`__libc_memalign`/`__libc_free`/`__libc_realloc` (GLIBC_2.2.5), which
//! this type calls directly.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// glibc's `malloc`, whatever `malloc` resolves to in the binary.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlibcMalloc;

/// glibc's guaranteed alignment on 64-bit targets.
const MIN_ALIGN: usize = 16;

// SAFETY: glibc returns memory aligned to 16 from malloc/calloc/realloc and to `align` from
// memalign; sizes are passed through; failure is null; it never unwinds.
unsafe impl GlobalAlloc for GlibcMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C allocation calls with a valid size/alignment.
        unsafe {
            if layout.align() <= MIN_ALIGN {
                __libc_malloc(layout.size()).cast()
            } else {
                __libc_memalign(layout.align(), layout.size()).cast()
            }
        }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: plain C call.
            unsafe { __libc_calloc(1, layout.size()).cast() }
        } else {
            // SAFETY: forwarded contract; zero the fresh block of `layout.size()` bytes.
            unsafe {
                let p = self.alloc(layout);
                if !p.is_null() {
                    std::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from glibc through this type.
        unsafe { __libc_free(ptr.cast()) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: `ptr` came from glibc with a default alignment.
            unsafe { __libc_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: forwarded contract: allocate, copy the common prefix, free.
            unsafe {
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_round_trips_plain_and_over_aligned_blocks() {
        for align in [8, 16, 64, 4096] {
            let layout = Layout::from_size_align(100, align).expect("layout");
            // SAFETY: non-zero layout; each block is used within its size and freed once.
            unsafe {
                let p = GlibcMalloc.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                assert_eq!(*p.add(99), 0);
                *p.add(99) = 5;
                let q = GlibcMalloc.realloc(p, layout, 5000);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                assert_eq!(*q.add(99), 5);
                GlibcMalloc.dealloc(q, Layout::from_size_align(5000, align).expect("layout"));
            }
        }
    }
}
