//! The poll clock: the cheapest monotonic clock this machine offers, read once per poll boundary.
//!
//! On x86_64 with an invariant TSC (CPUID leaf `0x8000_0007`, EDX bit 8) *and* the kernel using `tsc`
//! as its clocksource (so it trusts the TSC across cores; a VM whose kernel fell back to `hpet` or
//! `kvm-clock` does not), the clock is `rdtsc`, converted to ns by a factor calibrated once per
//! process against `Instant` over 10 ms. Elsewhere it is `Instant` (a vDSO call, ~20–25 ns). The
//! choice is logged once.
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which source the clock reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The invariant TSC.
    Tsc,
    /// `std::time::Instant`.
    Instant,
}

struct Calibrated {
    source: ClockSource,
    /// ns per tick in 32.32 fixed point.
    mult: u64,
    origin: Instant,
}

static CLOCK: OnceLock<Calibrated> = OnceLock::new();

/// Calibration window: long enough that a 1 µs scheduling hiccup is a 1e-4 error, short enough to be
/// invisible at runtime start.
const CALIBRATION: Duration = Duration::from_millis(10);

fn tsc_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        if max_ext < 0x8000_0007 {
            return false;
        }
        let invariant = std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
        let kernel_trusts = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .map(|s| s.trim() == "tsc")
        .unwrap_or(false);
        invariant && kernel_trusts
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn calibrate() -> Calibrated {
    let origin = Instant::now();
    #[cfg(target_arch = "x86_64")]
    if tsc_usable() {
        let (t0, c0) = (Instant::now(), crate::sys::rdtsc());
        std::thread::sleep(CALIBRATION);
        let (t1, c1) = (Instant::now(), crate::sys::rdtsc());
        let ns = (t1 - t0).as_nanos() as u64;
        let ticks = c1.wrapping_sub(c0);
        if ticks > 0 && ns > 0 {
            let mult = ((ns as u128) << 32) / ticks as u128;
            tracing::debug!(
                "poll clock: invariant TSC at {:.3} GHz",
                ticks as f64 / ns as f64
            );
            return Calibrated {
                source: ClockSource::Tsc,
                mult: mult as u64,
                origin,
            };
        }
    }
    tracing::debug!("poll clock: no trusted invariant TSC; using Instant");
    Calibrated {
        source: ClockSource::Instant,
        mult: 1 << 32,
        origin,
    }
}

fn clock() -> &'static Calibrated {
    CLOCK.get_or_init(calibrate)
}

/// Calibrates the clock now (the runtime calls this at build, off the hot path).
pub(crate) fn init() -> ClockSource {
    clock().source
}

/// The clock the instrumentation uses in this process.
pub fn source() -> ClockSource {
    clock().source
}

/// Now, in ticks of the poll clock.
#[inline(always)]
pub(crate) fn now() -> u64 {
    let c = clock();
    match c.source {
        #[cfg(target_arch = "x86_64")]
        ClockSource::Tsc => crate::sys::rdtsc(),
        _ => c.origin.elapsed().as_nanos() as u64,
    }
}

/// Converts a tick difference to ns.
#[inline(always)]
pub(crate) fn to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * clock().mult as u128) >> 32) as u64
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_and_converts_to_nanoseconds() {
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        let b = now();
        assert!(b >= a);
        let ns = to_ns(b - a);
        // A sleep of 2 ms lasts at least 2 ms on any clock; the upper side is not asserted
        // (a loaded machine may sleep much longer).
        assert!(
            ns >= 1_900_000,
            "{ns} ns for a 2 ms sleep on {:?}",
            source()
        );
        assert_eq!(to_ns(0), 0);
    }
}
