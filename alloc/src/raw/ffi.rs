//! Typed `mallctl` calls. Each wrapper names the control it reads or writes and checks the value's
//! type against the jemalloc 5.3 manual (`man jemalloc`, "MALLCTL NAMESPACE").

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::ptr;

use tikv_jemalloc_sys as sys;

use crate::error::AllocError;

fn check(name: &'static CStr, code: c_int) -> Result<(), AllocError> {
    if code == 0 {
        Ok(())
    } else {
        Err(AllocError::Mallctl {
            name: name.to_str().unwrap_or("?"),
            code,
        })
    }
}

/// `arenas.create` (unsigned, read) with `extent_hooks` (pointer, written).
pub(crate) fn arena_create(hooks: *mut sys::extent_hooks_t) -> Result<u32, AllocError> {
    const NAME: &CStr = c"arenas.create";
    let mut index: c_uint = 0;
    let mut len = size_of::<c_uint>();
    let mut hooks = hooks;
    let (new, new_len) = if hooks.is_null() {
        (ptr::null_mut(), 0)
    } else {
        (
            (&raw mut hooks).cast::<c_void>(),
            size_of::<*mut sys::extent_hooks_t>(),
        )
    };
    // SAFETY: `arenas.create` reads an `unsigned` into `index` (len matches) and, when given, takes
    // an `extent_hooks_t *` whose target lives for the whole process (the caller passes a static).
    let code = unsafe {
        sys::mallctl(
            NAME.as_ptr(),
            (&raw mut index).cast(),
            &mut len,
            new,
            new_len,
        )
    };
    check(NAME, code)?;
    Ok(index)
}

/// `tcache.create` (unsigned, read).
pub(crate) fn tcache_create() -> Result<u32, AllocError> {
    const NAME: &CStr = c"tcache.create";
    let mut index: c_uint = 0;
    let mut len = size_of::<c_uint>();
    // SAFETY: `tcache.create` reads an `unsigned`; `index` and `len` match it.
    let code = unsafe {
        sys::mallctl(
            NAME.as_ptr(),
            (&raw mut index).cast(),
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    check(NAME, code)?;
    Ok(index)
}

/// `tcache.destroy` (unsigned, written). The tcache's cached objects return to their arenas.
pub(crate) fn tcache_destroy(index: u32) -> Result<(), AllocError> {
    const NAME: &CStr = c"tcache.destroy";
    let mut value: c_uint = index;
    // SAFETY: `tcache.destroy` takes an `unsigned`; the caller owns the tcache and no longer uses it.
    let code = unsafe {
        sys::mallctl(
            NAME.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            (&raw mut value).cast(),
            size_of::<c_uint>(),
        )
    };
    check(NAME, code)
}

/// Reads a `size_t` or `uint64_t` control by name.
fn read_usize(name: &'static CStr) -> Result<usize, AllocError> {
    let mut value: usize = 0;
    let mut len = size_of::<usize>();
    // SAFETY: every caller passes a control of type `size_t` (or `uint64_t`, same width on the
    // 64-bit targets pagegen supports); `len` matches.
    let code = unsafe {
        sys::mallctl(
            name.as_ptr(),
            (&raw mut value).cast(),
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    check(name, code)?;
    Ok(value)
}

/// `arenas.page`: jemalloc's page size.
pub(crate) fn page_size() -> Result<usize, AllocError> {
    read_usize(c"arenas.page")
}

/// `opt.tcache_max`: largest size a tcache caches; larger objects always go to the arena.
pub(crate) fn tcache_max() -> Result<usize, AllocError> {
    read_usize(c"opt.tcache_max")
}

/// `epoch` (uint64_t, written): refreshes the statistics snapshot. Costs 20–100 µs, growing with the
/// number of arenas: call it off the hot path.
pub(crate) fn advance_epoch() -> Result<(), AllocError> {
    const NAME: &CStr = c"epoch";
    let mut e: u64 = 1;
    let mut len = size_of::<u64>();
    // SAFETY: `epoch` is a `uint64_t` read/write control; both buffers are u64 with matching lengths.
    let code = unsafe {
        sys::mallctl(
            NAME.as_ptr(),
            (&raw mut e).cast(),
            &mut len,
            (&raw mut e).cast(),
            size_of::<u64>(),
        )
    };
    check(NAME, code)
}

/// A control's MIB with one `<i>` component to fill in (e.g. `stats.arenas.<i>.pactive`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mib {
    parts: [usize; 6],
    len: usize,
    /// Position of the `<i>` component.
    index_at: usize,
    name: &'static str,
}

impl Mib {
    /// Translates `name`, whose component at `index_at` is an arena index.
    pub(crate) fn new(name: &'static CStr, index_at: usize) -> Result<Self, AllocError> {
        let mut parts = [0usize; 6];
        let mut len = parts.len();
        // SAFETY: `parts` has room for `len` components; jemalloc writes at most that many and
        // stores the count in `len`.
        let code = unsafe { sys::mallctlnametomib(name.as_ptr(), parts.as_mut_ptr(), &mut len) };
        check(name, code)?;
        Ok(Mib {
            parts,
            len,
            index_at,
            name: name.to_str().unwrap_or("?"),
        })
    }

    /// Reads the `size_t` value for arena `arena`.
    pub(crate) fn read_usize(&self, arena: u32) -> Result<usize, AllocError> {
        let mut parts = self.parts;
        parts[self.index_at] = arena as usize;
        let mut value: usize = 0;
        let mut len = size_of::<usize>();
        // SAFETY: the MIB names a `size_t` statistic (every `Mib` built in this crate does); buffers
        // match its size.
        let code = unsafe {
            sys::mallctlbymib(
                parts.as_ptr(),
                self.len,
                (&raw mut value).cast(),
                &mut len,
                ptr::null_mut(),
                0,
            )
        };
        if code == 0 {
            Ok(value)
        } else {
            Err(AllocError::Mallctl {
                name: self.name,
                code,
            })
        }
    }

    /// Performs a void control (no value in or out) for arena `arena`, e.g. `arena.<i>.purge`.
    pub(crate) fn call(&self, arena: u32) -> Result<(), AllocError> {
        let mut parts = self.parts;
        parts[self.index_at] = arena as usize;
        // SAFETY: void controls take no buffers.
        let code = unsafe {
            sys::mallctlbymib(
                parts.as_ptr(),
                self.len,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        };
        if code == 0 {
            Ok(())
        } else {
            Err(AllocError::Mallctl {
                name: self.name,
                code,
            })
        }
    }
}

/// `nallocx(size, 0)`: the size class jemalloc would serve `size` from.
pub(crate) fn size_class(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    // SAFETY: `nallocx` only computes; `size` is non-zero as it requires.
    unsafe { sys::nallocx(size, 0) }
}
