//! A per-class table that readers index without locks or allocation.
//!
//! Slots are created on first use by the writer side (completion path or trainer) and never removed;
//! readers on the request path only [`get`](ClassTable::get) and see `None` for a class nothing has been
//! learned about yet. Capacity is [`ClassId::MAX_CLASSES`]; an id past it is treated as unknown
//! (readers get `None`, writers ignore it), never a panic.

use std::fmt;
use std::sync::OnceLock;

use pagegen_core::ClassId;

/// Lazily filled per-class slots.
pub struct ClassTable<T> {
    slots: Box<[OnceLock<T>]>,
}

impl<T> ClassTable<T> {
    /// An empty table for every possible class id.
    pub fn new() -> Self {
        ClassTable {
            slots: (0..ClassId::MAX_CLASSES).map(|_| OnceLock::new()).collect(),
        }
    }
    /// The slot of `class`, if it exists.
    #[inline]
    pub fn get(&self, class: ClassId) -> Option<&T> {
        self.slots.get(class.index()).and_then(OnceLock::get)
    }
    /// The slot of `class`, created by `init` if missing; `None` for an id past the capacity.
    pub fn get_or_init(&self, class: ClassId, init: impl FnOnce() -> T) -> Option<&T> {
        self.slots.get(class.index()).map(|s| s.get_or_init(init))
    }
    /// Every existing slot with its class.
    pub fn iter(&self) -> impl Iterator<Item = (ClassId, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.get().map(|v| (ClassId::from_raw(i as u32), v)))
    }
}

impl<T> Default for ClassTable<T> {
    fn default() -> Self {
        ClassTable::new()
    }
}

impl<T> fmt::Debug for ClassTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassTable")
            .field("classes", &self.iter().count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_appear_on_first_write_and_out_of_range_is_none() {
        let t: ClassTable<u32> = ClassTable::new();
        assert!(t.get(ClassId::from_raw(5)).is_none());
        assert_eq!(t.get_or_init(ClassId::from_raw(5), || 7), Some(&7));
        assert_eq!(t.get_or_init(ClassId::from_raw(5), || 8), Some(&7));
        assert_eq!(t.get(ClassId::from_raw(5)), Some(&7));
        let far = ClassId::from_raw(ClassId::MAX_CLASSES as u32);
        assert!(t.get_or_init(far, || 1).is_none());
        assert_eq!(t.iter().count(), 1);
    }
}
