//! Class-level memory statistics from the class arenas, and purging.
//!
//! jemalloc's statistics are a snapshot refreshed by an `epoch` advance, which costs 20–100 µs and
//! grows with the number of arenas: [`ArenaStats::refresh`] belongs on a timer or a metrics scrape,
//! never on a poll. Reads then go by MIB (the name is translated once, in [`ArenaStats::new`]).
//!
//! Because a foreign free goes back to its owning arena ([`crate::raw`]), each class's figures are
//! that class's memory and nobody else's, whatever request frees it.

use pagegen_core::ClassId;

use crate::arena::{arena_of_slot, slot_of, MAX_CLASS_ARENAS};
use crate::error::AllocError;
use crate::raw::ffi::{self, Mib};

/// Memory of one class arena, bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ClassMemStats {
    /// Bytes in live allocations (small + large), including objects cached in tcaches.
    pub allocated: u64,
    /// Bytes in pages holding live allocations.
    pub active: u64,
    /// Bytes in dirty pages: freed, not yet returned to the kernel (reused first, purged by decay).
    pub dirty: u64,
    /// Bytes in muzzy pages: lazily returned (`MADV_FREE`), reclaimable by the kernel.
    pub muzzy: u64,
    /// Bytes physically resident in the arena's extents (data and metadata).
    pub resident: u64,
}

/// Reads per-arena statistics by MIB and purges arenas.
#[derive(Debug)]
pub struct ArenaStats {
    small: Mib,
    large: Mib,
    pactive: Mib,
    pdirty: Mib,
    pmuzzy: Mib,
    resident: Mib,
    purge: Mib,
    decay: Mib,
    page: u64,
}

impl ArenaStats {
    /// Translates the statistics' names once. Fails if jemalloc was built without statistics.
    pub fn new() -> Result<Self, AllocError> {
        Ok(ArenaStats {
            small: Mib::new(c"stats.arenas.0.small.allocated", 2)?,
            large: Mib::new(c"stats.arenas.0.large.allocated", 2)?,
            pactive: Mib::new(c"stats.arenas.0.pactive", 2)?,
            pdirty: Mib::new(c"stats.arenas.0.pdirty", 2)?,
            pmuzzy: Mib::new(c"stats.arenas.0.pmuzzy", 2)?,
            resident: Mib::new(c"stats.arenas.0.resident", 2)?,
            purge: Mib::new(c"arena.0.purge", 1)?,
            decay: Mib::new(c"arena.0.decay", 1)?,
            page: ffi::page_size()? as u64,
        })
    }

    /// Advances the statistics epoch (20–100 µs: off the hot path).
    pub fn refresh(&self) -> Result<(), AllocError> {
        ffi::advance_epoch()
    }

    /// Statistics of jemalloc arena `arena` as of the last [`refresh`](Self::refresh).
    pub fn arena(&self, arena: u32) -> Result<ClassMemStats, AllocError> {
        let r = |m: &Mib| m.read_usize(arena).map(|v| v as u64);
        Ok(ClassMemStats {
            allocated: r(&self.small)? + r(&self.large)?,
            active: r(&self.pactive)? * self.page,
            dirty: r(&self.pdirty)? * self.page,
            muzzy: r(&self.pmuzzy)? * self.page,
            resident: r(&self.resident)?,
        })
    }

    /// Statistics of `class`'s arena; `None` if the class uses the default arenas.
    pub fn class(&self, class: ClassId) -> Result<Option<ClassMemStats>, AllocError> {
        match slot_of(class).and_then(arena_of_slot) {
            Some(a) => self.arena(a).map(Some),
            None => Ok(None),
        }
    }

    /// Statistics of every class that has an arena.
    pub fn all(&self) -> Result<Vec<(ClassId, ClassMemStats)>, AllocError> {
        let mut out = Vec::new();
        for slot in 1..MAX_CLASS_ARENAS {
            if let Some(a) = arena_of_slot(slot) {
                out.push((ClassId::from_raw(slot as u32), self.arena(a)?));
            }
        }
        Ok(out)
    }

    /// Returns all of `class`'s dirty and muzzy pages to the kernel now (after a burst). Returns
    /// whether the class has an arena.
    pub fn purge(&self, class: ClassId) -> Result<bool, AllocError> {
        match slot_of(class).and_then(arena_of_slot) {
            Some(a) => self.purge.call(a).map(|()| true),
            None => Ok(false),
        }
    }

    /// Runs `class`'s decay now: purges what its decay curve says is due (gentler than
    /// [`purge`](Self::purge)).
    pub fn decay(&self, class: ClassId) -> Result<bool, AllocError> {
        match slot_of(class).and_then(arena_of_slot) {
            Some(a) => self.decay.call(a).map(|()| true),
            None => Ok(false),
        }
    }
}

/// The size class jemalloc serves `size` from (`nallocx`).
pub fn size_class(size: usize) -> usize {
    ffi::size_class(size)
}

/// Largest object size a tcache caches (`opt.tcache_max`); larger objects always go to the arena.
pub fn tcache_max() -> Result<usize, AllocError> {
    ffi::tcache_max()
}
