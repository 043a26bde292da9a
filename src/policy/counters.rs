//! Every decision the request loop takes, counted: in total and per class, lock-free (one relaxed
//! atomic add per decision), readable at any time through [`Decisions::snapshot`] and
//! [`Decisions::class`] (the metrics endpoint exports them).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pagegen_core::ClassId;

/// A decision or an outcome, one counter each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Decision {
    /// Admitted at once.
    Admitted = 0,
    /// Admitted after waiting for memory or a pool.
    AdmittedAfterWait,
    /// Shed before running: the memory pool had no room in time.
    ShedMemory,
    /// Shed before running: the predicted queueing delay did not fit its deadline in time.
    ShedOverload,
    /// Refused before running: its budget cannot fit the memory pool at all.
    ShedTooLarge,
    /// Answered (any status below 500).
    Completed,
    /// The handler answered 5xx.
    Failed,
    /// A task of the request panicked (answered 500).
    Panicked,
    /// Cancelled past its memory budget (503).
    CancelledMemory,
    /// Cancelled past its wall-clock limit (503 + `Retry-After`).
    CancelledDeadline,
    /// Cancelled for another reason (shutdown, abort).
    CancelledOther,
    /// Moved to the bulk pool past its CPU grant.
    Demoted,
    /// A finished request's profile was handed to the model.
    Recorded,
    /// A profile was dropped because the recorder's queue was full.
    RecordDropped,
    /// Usage crossed 90 % of a grant (or memory its soft limit): a checkpoint re-predicted it.
    Checkpoint,
    /// A checkpoint extended a grant (CPU kept in the latency pool, or more memory reserved).
    Extended,
    /// A checkpoint wanted to extend a grant, but the annotation's cap or the pool refused.
    ExtensionRefused,
}

/// Number of [`Decision`] kinds.
pub const DECISIONS: usize = 17;

impl Decision {
    /// Every kind, in counter order.
    pub const ALL: [Decision; DECISIONS] = [
        Decision::Admitted,
        Decision::AdmittedAfterWait,
        Decision::ShedMemory,
        Decision::ShedOverload,
        Decision::ShedTooLarge,
        Decision::Completed,
        Decision::Failed,
        Decision::Panicked,
        Decision::CancelledMemory,
        Decision::CancelledDeadline,
        Decision::CancelledOther,
        Decision::Demoted,
        Decision::Recorded,
        Decision::RecordDropped,
        Decision::Checkpoint,
        Decision::Extended,
        Decision::ExtensionRefused,
    ];
    /// A stable snake_case name (metric label).
    pub fn name(self) -> &'static str {
        match self {
            Decision::Admitted => "admitted",
            Decision::AdmittedAfterWait => "admitted_after_wait",
            Decision::ShedMemory => "shed_memory",
            Decision::ShedOverload => "shed_overload",
            Decision::ShedTooLarge => "shed_too_large",
            Decision::Completed => "completed",
            Decision::Failed => "failed",
            Decision::Panicked => "panicked",
            Decision::CancelledMemory => "cancelled_memory",
            Decision::CancelledDeadline => "cancelled_deadline",
            Decision::CancelledOther => "cancelled_other",
            Decision::Demoted => "demoted",
            Decision::Recorded => "recorded",
            Decision::RecordDropped => "record_dropped",
            Decision::Checkpoint => "checkpoint",
            Decision::Extended => "extended",
            Decision::ExtensionRefused => "extension_refused",
        }
    }
}

/// One class's counts (or the totals).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ClassDecisions(pub [u64; DECISIONS]);

impl ClassDecisions {
    /// The count of one decision.
    pub fn get(&self, d: Decision) -> u64 {
        self.0[d as usize]
    }
    /// Every request shed before it ran.
    pub fn shed(&self) -> u64 {
        self.get(Decision::ShedMemory)
            + self.get(Decision::ShedOverload)
            + self.get(Decision::ShedTooLarge)
    }
}

struct Row([AtomicU64; DECISIONS]);

impl Row {
    fn new() -> Self {
        Row(std::array::from_fn(|_| AtomicU64::new(0)))
    }
    fn read(&self) -> ClassDecisions {
        ClassDecisions(std::array::from_fn(|i| self.0[i].load(Relaxed)))
    }
}

/// The counters: a total row and one row per possible class id (`ClassId::MAX_CLASSES` rows of
/// 14 counters, 460 KiB allocated once, so counting never takes a lock or allocates).
pub struct Decisions {
    total: Row,
    per_class: Box<[Row]>,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("total", &self.snapshot())
            .finish()
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            total: Row::new(),
            per_class: (0..ClassId::MAX_CLASSES).map(|_| Row::new()).collect(),
        }
    }
}

impl Decisions {
    /// Counts one decision for `class`.
    #[inline]
    pub fn count(&self, class: ClassId, d: Decision) {
        self.total.0[d as usize].fetch_add(1, Relaxed);
        if let Some(row) = self.per_class.get(class.index()) {
            row.0[d as usize].fetch_add(1, Relaxed);
        }
    }
    /// The totals.
    pub fn snapshot(&self) -> ClassDecisions {
        self.total.read()
    }
    /// One count of one class (0 for an id out of range): a single load, for the request path.
    #[inline]
    pub fn get(&self, class: ClassId, d: Decision) -> u64 {
        self.per_class
            .get(class.index())
            .map_or(0, |row| row.0[d as usize].load(Relaxed))
    }
    /// One class's counts (zeros for an id out of range).
    pub fn class(&self, class: ClassId) -> ClassDecisions {
        self.per_class
            .get(class.index())
            .map_or_else(ClassDecisions::default, Row::read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_total_and_the_class() {
        let d = Decisions::default();
        let c = ClassId::from_raw(7);
        d.count(c, Decision::ShedMemory);
        d.count(c, Decision::ShedOverload);
        d.count(ClassId::from_raw(8), Decision::Completed);
        d.count(ClassId::from_raw(1 << 20), Decision::Completed);
        assert_eq!(d.class(c).shed(), 2);
        assert_eq!(d.class(c).get(Decision::Completed), 0);
        assert_eq!(d.snapshot().get(Decision::Completed), 2);
        assert_eq!(d.snapshot().shed(), 2);
        let names: std::collections::HashSet<_> = Decision::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), DECISIONS);
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }
}
