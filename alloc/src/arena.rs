//! Per-class arenas: one jemalloc arena per request class, created when the class registers.
//!
//! Class `c` (for `1 <= c < SLOTS`) owns region slot `c` and the arena built on that slot's extent
//! hooks ([`crate::raw`] explains the range check this buys). The default class and classes past
//! the table share jemalloc's automatic arenas. Creation failure (jemalloc out of arenas, the
//! address range could not be reserved) falls back to the default arena with one warning per
//! process: the class still runs, its statistics are merged into the default arena's.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use pagegen_core::{ClassId, ClassObserver, ClassSpec};

use crate::error::AllocError;
use crate::raw::{ffi, region};

/// Classes `1..MAX_CLASS_ARENAS` get an arena of their own; the rest share the default arena.
pub const MAX_CLASS_ARENAS: usize = crate::raw::region::SLOTS;

/// Per slot: jemalloc arena index + 1, or 0 for "none".
static ARENA: [AtomicU32; MAX_CLASS_ARENAS] = [const { AtomicU32::new(0) }; MAX_CLASS_ARENAS];
static CREATE: Mutex<()> = Mutex::new(());
static WARNED: AtomicBool = AtomicBool::new(false);

/// The region slot of `class`, if the class may have its own arena.
#[inline]
pub(crate) fn slot_of(class: ClassId) -> Option<usize> {
    let i = class.index();
    (i != 0 && i < MAX_CLASS_ARENAS).then_some(i)
}

/// The arena of `slot`, if created.
#[inline]
pub(crate) fn arena_of_slot(slot: usize) -> Option<u32> {
    match ARENA[slot].load(Ordering::Acquire) {
        0 => None,
        a => Some(a - 1),
    }
}

fn warn_once(class: ClassId, why: &AllocError) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %class,
            "no arena of its own for this class ({why}); it and any later such class use the \
             default arena"
        );
    }
}

/// Creates the class arenas and answers which arena a class uses. Subscribe it to the
/// [`ClassRegistry`](pagegen_core::ClassRegistry); it is idempotent, as observers must be.
///
/// An arena of its own costs a class about 3–4 ns per allocator call (jemalloc's `mallocx`/`sdallocx`
/// leave their fast paths when given explicit flags; `benches/README.md`, "Memory"), so a runtime may
/// isolate only its memory-heavy classes with [`heavy_only`](Self::heavy_only) and keep light ones
/// on the default arena with accounting alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassArenas {
    /// Registration creates an arena only for classes annotated with at least this many bytes
    /// (0: every class).
    min_mem: u64,
}

impl ClassArenas {
    /// The observer: every registered class gets an arena.
    pub const fn new() -> Self {
        ClassArenas { min_mem: 0 }
    }

    /// The observer for memory-heavy classes only: a registration creates an arena when the
    /// class's route annotation says it needs at least `min_mem` bytes
    /// ([`RouteSpec::mem`](pagegen_core::RouteSpec::mem)). [`ensure`](Self::ensure) still creates
    /// one on demand.
    pub const fn heavy_only(min_mem: u64) -> Self {
        ClassArenas { min_mem }
    }

    /// Creates `class`'s arena if it has none yet. `Ok(None)` for classes that share the default
    /// arena by design (the default class, classes past [`MAX_CLASS_ARENAS`]).
    pub fn ensure(&self, class: ClassId) -> Result<Option<u32>, AllocError> {
        let Some(slot) = slot_of(class) else {
            return Ok(None);
        };
        if let Some(a) = arena_of_slot(slot) {
            return Ok(Some(a));
        }
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = arena_of_slot(slot) {
            return Ok(Some(a));
        }
        if !region::reserve() {
            return Err(AllocError::Reserve);
        }
        let arena = ffi::arena_create(region::hooks_for(slot))?;
        ARENA[slot].store(arena + 1, Ordering::Release);
        Ok(Some(arena))
    }

    /// The jemalloc arena `class` allocates from, `None` for the default arenas.
    pub fn arena(&self, class: ClassId) -> Option<u32> {
        slot_of(class).and_then(arena_of_slot)
    }
}

impl ClassObserver for ClassArenas {
    fn class_registered(&self, id: ClassId, spec: &ClassSpec) {
        if self.min_mem > 0 && spec.route.mem.is_none_or(|m| m < self.min_mem) {
            return;
        }
        if id.index() >= MAX_CLASS_ARENAS {
            warn_once(id, &AllocError::TooManyClasses(MAX_CLASS_ARENAS));
            return;
        }
        if let Err(e) = self.ensure(id) {
            warn_once(id, &e);
        }
    }
}
