//! [`CancelReason`]: why a request was stopped — request vocabulary, read by the context that
//! carries the flag (`ctx`), the hooks that decide it (`hook`) and the records that keep it
//! (`record`), so it lives apart from all three.

use crate::demand::Resource;

/// Why a request was stopped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CancelReason {
    /// Usage passed the hard limit of a grant.
    BudgetExceeded(Resource),
    /// The wall-clock deadline passed.
    Deadline,
    /// Shed by admission or by a checkpoint to protect other classes.
    Shed,
    /// Aborted by its owner (`JoinHandle::abort`).
    Aborted,
    /// The runtime is shutting down.
    Shutdown,
}

impl CancelReason {
    /// A one-byte tag for storage and atomics.
    pub fn to_tag(self) -> u8 {
        match self {
            CancelReason::BudgetExceeded(r) => r as u8,
            CancelReason::Deadline => 16,
            CancelReason::Shed => 17,
            CancelReason::Aborted => 18,
            CancelReason::Shutdown => 19,
        }
    }
    /// Inverse of [`to_tag`](Self::to_tag).
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0..=15 => Resource::from_tag(tag).map(CancelReason::BudgetExceeded),
            16 => Some(CancelReason::Deadline),
            17 => Some(CancelReason::Shed),
            18 => Some(CancelReason::Aborted),
            19 => Some(CancelReason::Shutdown),
            _ => None,
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelReason::BudgetExceeded(r) => write!(f, "{r:?} budget exceeded"),
            CancelReason::Deadline => f.write_str("deadline passed"),
            CancelReason::Shed => f.write_str("shed under load"),
            CancelReason::Aborted => f.write_str("aborted"),
            CancelReason::Shutdown => f.write_str("runtime shut down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reason_tags_round_trip() {
        let all = [
            CancelReason::BudgetExceeded(Resource::Cpu),
            CancelReason::BudgetExceeded(Resource::IoBytes),
            CancelReason::Deadline,
            CancelReason::Shed,
            CancelReason::Aborted,
            CancelReason::Shutdown,
        ];
        for r in all {
            assert_eq!(CancelReason::from_tag(r.to_tag()), Some(r));
        }
        assert_eq!(CancelReason::from_tag(200), None);
        assert_eq!(CancelReason::from_tag(9), None);
    }
}
