//! Open-loop Poisson arrivals for the latency benches (`isolation.rs`, `trainer.rs`): exponential
//! gaps drawn from a fixed-seed xorshift, so every configuration and every run sees the same
//! schedule. Included by `#[path]`, not a bench of its own.

use std::time::{Duration, Instant};

/// The arrival clock of one light class.
pub struct Poisson {
    x: u64,
    next: Instant,
    rate: f64,
}

impl Poisson {
    /// Arrivals at `rate` per second on average, the first one gap after `start`.
    pub fn new(start: Instant, rate: f64) -> Self {
        Poisson {
            x: 0x9E37_79B9_7F4A_7C15,
            next: start,
            rate,
        }
    }

    /// Sleeps until the next scheduled arrival (not at all when behind schedule, so a late arrival
    /// counts its lateness as delay) and returns the instant it was released.
    pub fn wait_next(&mut self) -> Instant {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let u = (self.x >> 11) as f64 / (1u64 << 53) as f64;
        self.next += Duration::from_secs_f64(-(1.0 - u).ln() / self.rate);
        if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Instant::now()
    }
}
