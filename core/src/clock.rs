//! Time that tests can drive by hand.
//!
//! Everything in pagegen that makes a decision from time (virtual runtime, EWMA half-lives, rate
//! limits, token buckets, deadlines) reads a [`Clock`], never `Instant::now()` directly, so a test can
//! substitute a [`VirtualClock`] and step it deterministically (STYLE.md: "virtual clocks, no sleeps").
//!
//! Contract: [`Clock::now`] is monotonic non-decreasing nanoseconds since an arbitrary origin fixed
//! when the clock was created. Values from different clocks are not comparable.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nanoseconds on a [`Clock`].
pub type Nanos = u64;

/// A monotonic clock.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now, in ns since the clock's origin.
    fn now(&self) -> Nanos;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Nanos {
        (**self).now()
    }
}

/// The real monotonic clock (`Instant`), with its origin at construction.
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        RealClock {
            origin: Instant::now(),
        }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now(&self) -> Nanos {
        // u64 nanoseconds last 584 years past the origin.
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now: AtomicU64,
}

impl VirtualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        VirtualClock::default()
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.advance_ns(d.as_nanos() as u64);
    }
    /// Moves the clock forward by `ns`.
    pub fn advance_ns(&self, ns: u64) {
        self.now.fetch_add(ns, Ordering::SeqCst);
    }
    /// Sets the clock to `ns`, which must not be in its past.
    #[track_caller]
    pub fn set(&self, ns: Nanos) {
        let prev = self.now.swap(ns, Ordering::SeqCst);
        assert!(
            prev <= ns,
            "VirtualClock moved backwards from {prev} to {ns}: use advance() or a later time"
        );
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_told() {
        let c = VirtualClock::new();
        assert_eq!(c.now(), 0);
        c.advance(Duration::from_micros(3));
        assert_eq!(c.now(), 3_000);
        c.set(10_000);
        assert_eq!(c.now(), 10_000);
        let shared: Arc<dyn Clock> = Arc::new(VirtualClock::new());
        assert_eq!(shared.now(), 0);
    }

    #[test]
    #[should_panic(expected = "moved backwards")]
    fn virtual_clock_refuses_to_go_back() {
        let c = VirtualClock::new();
        c.set(5);
        c.set(4);
    }

    #[test]
    fn real_clock_is_monotonic() {
        let c = RealClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
