//! Everything in pagegen-alloc that needs `unsafe`, in four modules under a typed surface:
//!
//! - [`ffi`]: `mallctl` calls (arena and tcache creation, purges, statistics by MIB).
//! - [`region`]: the address-space reservation that gives each class arena its own range, through
//!   jemalloc extent hooks, so that *who owns this pointer* is a subtraction and a shift.
//! - [`global`]: [`PagegenAlloc`](global::PagegenAlloc), the `GlobalAlloc`.
//! - [`glibc`]: the glibc allocator as a `GlobalAlloc` value, the benchmarks' "system malloc" anchor.
//!
//! ## The free path across classes (the decision)
//! A poll of class B may free an object that class A's arena handed out (a cache entry, a buffer
//! passed between requests). Freeing it into B's explicit tcache would let B's next allocation reuse
//! A's memory and falsify both classes' statistics. Of the three options (range check through
//! extent hooks, `arenas.lookup`, freeing every object without tcache) we take the **range check**:
//! each class arena's extents come from its own slot of one reserved address range
//! ([`region`]), so the free path computes the owner slot of any pointer in about a nanosecond and:
//!
//! | object's owner | current mode | free with |
//! |---|---|---|
//! | the current class's slot | class mode | the class's explicit tcache (fast path) |
//! | another class's slot | any | `MALLOCX_TCACHE_NONE`: straight back to the owning arena's bins |
//! | no slot (default arena) | any | the thread's automatic tcache (plain jemalloc) |
//!
//! `arenas.lookup` was rejected because jemalloc serialises it on the global `ctl_mtx`; freeing every
//! object without a tcache because it costs the arena lock on every same-class free.
#![allow(unsafe_code)]

pub(crate) mod ffi;
pub(crate) mod glibc;
pub(crate) mod global;
pub(crate) mod region;
