//! What a request is predicted to need.
//!
//! A predictor (pagegen-model) turns a request's features and its class's history into a [`Demand`]:
//! for each [`Resource`] a central estimate and an upper quantile. The allocation policy (root crate)
//! turns a demand into a [`Grant`](crate::Grant): budgets are sized from the *upper* estimate, queue
//! placement (latency or bulk pool) from the central one, and from the upper one when it says the
//! request may hold a latency worker far past the bulk threshold.
//!
//! [`Serving`] names the predictors a demand can come from (pagegen-model's gate picks one; a profile
//! record keeps which one predicted it).
//!
//! Contract: every estimate is finite and `central <= upper`; [`Estimate::new`] enforces it so that no
//! consumer has to. Units are nanoseconds for time, bytes for memory and I/O size, a count for ops.

/// A resource pagegen budgets per request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Resource {
    /// CPU time, ns.
    Cpu = 0,
    /// Wall-clock time, ns.
    Wall = 1,
    /// Peak net memory, bytes.
    Memory = 2,
    /// File I/O operations.
    IoOps = 3,
    /// File I/O bytes.
    IoBytes = 4,
}

impl Resource {
    /// All resources, in tag order.
    pub const ALL: [Resource; 5] = [
        Resource::Cpu,
        Resource::Wall,
        Resource::Memory,
        Resource::IoOps,
        Resource::IoBytes,
    ];
    /// Decodes a tag written by `as u8`.
    pub fn from_tag(tag: u8) -> Option<Resource> {
        Resource::ALL.get(tag as usize).copied()
    }
}

/// A central estimate and an upper quantile of one resource.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Estimate {
    /// Median-like estimate (what the request will probably use).
    pub central: u64,
    /// Upper quantile (what it will use at most, with the predictor's stated probability).
    pub upper: u64,
}

impl Estimate {
    /// Builds an estimate, raising `upper` to `central` if a predictor produced them crossed.
    pub fn new(central: u64, upper: u64) -> Self {
        Estimate {
            central,
            upper: upper.max(central),
        }
    }
    /// Builds an estimate from floating-point predictions: non-finite or negative values become 0,
    /// values past `u64::MAX` saturate, and `central <= upper` is restored.
    pub fn from_f64(central: f64, upper: f64) -> Self {
        fn clean(x: f64) -> u64 {
            if x.is_finite() && x > 0.0 {
                // `as` saturates for floats past u64::MAX.
                x as u64
            } else {
                0
            }
        }
        Estimate::new(clean(central), clean(upper))
    }
    /// A point estimate with no spread.
    pub fn exact(value: u64) -> Self {
        Estimate {
            central: value,
            upper: value,
        }
    }
}

/// Which predictor makes the predictions requests are served under (pagegen-model's gate decides;
/// a [`ProfileRecord`](crate::ProfileRecord) keeps the one that predicted it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Serving {
    /// The static annotation baseline.
    Static = 0,
    /// The EWMA baseline.
    Ewma = 1,
    /// The decaying-histogram baseline.
    Histogram = 2,
    /// The recurrent model's champion weights.
    Recurrent = 3,
}

impl Serving {
    /// Decodes `as u8` (an unknown code is the recurrent model).
    pub fn from_u8(v: u8) -> Serving {
        Serving::try_from_u8(v).unwrap_or(Serving::Recurrent)
    }

    /// Decodes `as u8`; `None` for a code no predictor has.
    pub fn try_from_u8(v: u8) -> Option<Serving> {
        Serving::ALL.get(usize::from(v)).copied()
    }

    /// The name users see and type: the `predictor` knob's value that pins this predictor, the
    /// `predictor` label of the metrics, and what the CLI and the site's banner print.
    pub fn name(self) -> &'static str {
        match self {
            Serving::Static => "static",
            Serving::Ewma => "ewma",
            Serving::Histogram => "histogram",
            Serving::Recurrent => "recurrent",
        }
    }

    /// Every predictor, in `as u8` order.
    pub const ALL: [Serving; 4] = [
        Serving::Static,
        Serving::Ewma,
        Serving::Histogram,
        Serving::Recurrent,
    ];
}

/// Predicted needs of one request.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct Demand {
    /// CPU time, ns.
    pub cpu_ns: Estimate,
    /// Wall-clock time, ns.
    pub wall_ns: Estimate,
    /// Peak net memory, bytes.
    pub peak_bytes: Estimate,
    /// File I/O operations.
    pub io_ops: Estimate,
    /// File I/O bytes.
    pub io_bytes: Estimate,
    /// The probability the upper estimates are meant to cover (e.g. 0.99).
    pub upper_quantile: f32,
}

impl Demand {
    /// The estimate for one resource.
    pub fn get(&self, resource: Resource) -> Estimate {
        match resource {
            Resource::Cpu => self.cpu_ns,
            Resource::Wall => self.wall_ns,
            Resource::Memory => self.peak_bytes,
            Resource::IoOps => self.io_ops,
            Resource::IoBytes => self.io_bytes,
        }
    }
    /// Mutable access to the estimate for one resource.
    pub fn get_mut(&mut self, resource: Resource) -> &mut Estimate {
        match resource {
            Resource::Cpu => &mut self.cpu_ns,
            Resource::Wall => &mut self.wall_ns,
            Resource::Memory => &mut self.peak_bytes,
            Resource::IoOps => &mut self.io_ops,
            Resource::IoBytes => &mut self.io_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crossed_estimates_are_repaired() {
        let e = Estimate::new(10, 3);
        assert_eq!((e.central, e.upper), (10, 10));
    }

    #[test]
    fn resource_tags_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_tag(r as u8), Some(r));
        }
        assert_eq!(Resource::from_tag(5), None);
    }

    proptest! {
        #[test]
        fn float_estimates_are_clean(c in proptest::num::f64::ANY, u in proptest::num::f64::ANY) {
            let e = Estimate::from_f64(c, u);
            prop_assert!(e.central <= e.upper);
            if !(c.is_finite() && c > 0.0) { prop_assert_eq!(e.central, 0); }
        }
    }
}
