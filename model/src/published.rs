//! Log-space estimates published by a writer and read lock-free on the request path.
//!
//! A writer (completion path, under its class's mutex) stores the ten `f32`s of a class's current
//! central and upper estimates as atomic bit patterns; a reader loads them with `Relaxed` ordering. A
//! reader racing a writer may see some values from the old publication and some from the new one: both
//! are valid estimates of the same class a few requests apart, so the mix is as good as either, and
//! [`demand_from_log`] restores `central <= upper`.

use std::sync::atomic::{AtomicU32, Ordering};

use pagegen_core::Demand;

use crate::target::{demand_from_log, Targets, RESOURCES, UPPER_QUANTILE, Y_MAX};

/// The prior every predictor answers for a class it knows nothing about: central and upper, log space.
///
/// Values (1 ms CPU / 50 ms upper, 2 ms / 200 ms wall, 1 MiB / 64 MiB peak memory, no I/O / 16 ops and
/// 1 MiB) are the DESIGN.md example routes' orders of magnitude: deliberately generous, so an unknown
/// route is neither starved nor mistaken for a heavy one for long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Central estimates, `ln(1 + v)`.
    pub central: Targets,
    /// Upper estimates, `ln(1 + v)`.
    pub upper: Targets,
}

impl Default for Prior {
    fn default() -> Self {
        let l = |v: f64| v.ln_1p() as f32;
        Prior {
            central: [l(1e6), l(2e6), l(1_048_576.0), 0.0, 0.0],
            upper: [l(5e7), l(2e8), l(67_108_864.0), l(16.0), l(1_048_576.0)],
        }
    }
}

impl Prior {
    /// Raises resource `r`'s log-space estimates to at least the prior's (upper never below
    /// central): what a baseline serves for a class it knows only from below (`target::vacuous`).
    pub(crate) fn floor(&self, r: usize, central: &mut f32, upper: &mut f32) {
        *central = central.max(self.central[r]);
        *upper = upper.max(self.upper[r]).max(*central);
    }

    /// The prior as a demand.
    pub fn demand(&self) -> Demand {
        demand_from_log(&self.central, &self.upper)
    }
}

/// Ten atomically published log-space values: central then upper per resource.
#[derive(Debug, Default)]
pub struct Published {
    vals: [AtomicU32; 2 * RESOURCES],
}

impl Published {
    /// Publishes new estimates.
    pub fn store(&self, central: &Targets, upper: &Targets) {
        for i in 0..RESOURCES {
            let c = clean(central[i]);
            let u = clean(upper[i]).max(c);
            self.vals[i].store(c.to_bits(), Ordering::Relaxed);
            self.vals[RESOURCES + i].store(u.to_bits(), Ordering::Relaxed);
        }
    }
    /// Loads the estimates.
    #[inline]
    pub fn load(&self) -> (Targets, Targets) {
        let mut c = [0f32; RESOURCES];
        let mut u = [0f32; RESOURCES];
        for i in 0..RESOURCES {
            c[i] = f32::from_bits(self.vals[i].load(Ordering::Relaxed));
            u[i] = f32::from_bits(self.vals[RESOURCES + i].load(Ordering::Relaxed));
        }
        (c, u)
    }
    /// Loads the estimates as a demand.
    #[inline]
    pub fn demand(&self) -> Demand {
        let (c, u) = self.load();
        demand_from_log(&c, &u)
    }
}

fn clean(y: f32) -> f32 {
    if y.is_finite() {
        y.clamp(0.0, Y_MAX)
    } else {
        0.0
    }
}

/// The upper quantile the baselines aim at, as a standard-normal z-score (Φ⁻¹(0.99) = 2.326).
pub const Z_UPPER: f32 = 2.326;
const _: () = assert!(UPPER_QUANTILE > 0.98 && UPPER_QUANTILE < 0.995);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_round_trips_and_cleans() {
        let p = Published::default();
        p.store(
            &[1.0, 2.0, f32::NAN, -1.0, 99.0],
            &[0.5, 3.0, 1.0, 1.0, 1.0],
        );
        let (c, u) = p.load();
        assert_eq!(c, [1.0, 2.0, 0.0, 0.0, Y_MAX]);
        assert_eq!(u, [1.0, 3.0, 1.0, 1.0, Y_MAX]);
        let d = Prior::default().demand();
        assert!(d.cpu_ns.central < d.cpu_ns.upper);
    }
}
