//! What the predictors learn: the five [`Resource`]s of a record, in log space.
//!
//! Every predictor works on `y = ln(1 + value)` per resource: demands span six orders of magnitude
//! (0.2 ms to 50 ms of CPU, kilobytes to hundreds of megabytes), errors are relative, and a log-space
//! quantile maps back to the same quantile of the value (quantiles commute with monotone maps).
//! Predictions are clamped to `[0, Y_MAX]` before they leave a predictor, which keeps every estimate
//! finite, non-negative and below ~3.3e15 (38 days of CPU, 3 PB): the clamp of the proptest.

use pagegen_core::{Demand, Estimate, ProfileRecord, Resource};

/// Number of predicted resources.
pub const RESOURCES: usize = 5;
/// Upper clamp of a log-space prediction: `ln(1 + 3.3e15)`.
pub const Y_MAX: f32 = 35.7;
/// The probability every predictor's upper estimate aims to cover.
pub const UPPER_QUANTILE: f32 = 0.99;

/// Log-space values of one record, in [`Resource::ALL`] order.
pub type Targets = [f32; RESOURCES];

/// The raw value of one resource in a record.
pub fn value(record: &ProfileRecord, resource: Resource) -> u64 {
    let u = &record.usage;
    match resource {
        Resource::Cpu => u.cpu.cpu_ns,
        Resource::Wall => u.cpu.wall_ns,
        Resource::Memory => u.mem.peak_net_bytes.max(0) as u64,
        Resource::IoOps => u.io.total_ops(),
        Resource::IoBytes => u.io.read_bytes.saturating_add(u.io.write_bytes),
    }
}

/// `ln(1 + v)` clamped to `[0, Y_MAX]`.
pub fn to_log(v: u64) -> f32 {
    ((v as f64).ln_1p() as f32).clamp(0.0, Y_MAX)
}

/// Inverse of [`to_log`] for a clamped prediction.
pub fn from_log(y: f32) -> f64 {
    let y = if y.is_finite() {
        y.clamp(0.0, Y_MAX)
    } else {
        0.0
    };
    f64::from(y).exp_m1()
}

/// The log-space targets of a record.
pub fn targets(record: &ProfileRecord) -> Targets {
    let mut y = [0f32; RESOURCES];
    for (slot, r) in y.iter_mut().zip(Resource::ALL) {
        *slot = to_log(value(record, r));
    }
    y
}

/// Whether a record with targets `y` says nothing of its class's usage: censored (a lower bound)
/// and zero in every resource, as a request shed before it ran. The predictors and the training
/// set skip it: counted as an observation it would only slow the class's learning (a class's
/// first real observations get the weight `1/n` gives them) and, as the first one, start the
/// class's running median at zero (benches/RESULTS.md, 2026-12-08).
pub fn vacuous(record: &ProfileRecord, y: &Targets) -> bool {
    record.censored() && y.iter().all(|&v| v == 0.0)
}

/// Builds a [`Demand`] from log-space central and upper predictions (clamped, ordered).
pub fn demand_from_log(central: &Targets, upper: &Targets) -> Demand {
    let mut d = Demand {
        upper_quantile: UPPER_QUANTILE,
        ..Demand::default()
    };
    for (i, r) in Resource::ALL.into_iter().enumerate() {
        *d.get_mut(r) = Estimate::from_f64(from_log(central[i]), from_log(upper[i]));
    }
    d
}

/// Pinball (quantile) loss of predicting `pred` for an observation `y` at quantile `q`. A censored
/// observation is a lower bound: only under-prediction is penalised.
pub fn pinball(y: f32, pred: f32, q: f32, censored: bool) -> f32 {
    let e = y - pred;
    if e >= 0.0 {
        q * e
    } else if censored {
        0.0
    } else {
        (q - 1.0) * e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassId, Usage};

    #[test]
    fn log_round_trip_and_clamp() {
        for v in [0u64, 1, 1000, 123_456_789] {
            let back = from_log(to_log(v));
            assert!(
                (back - v as f64).abs() <= 1e-3 * (v as f64).max(1.0),
                "{v} -> {back}"
            );
        }
        assert_eq!(from_log(f32::NAN), 0.0);
        assert!(from_log(1e9).is_finite());
        let d = demand_from_log(&[5.0; 5], &[1.0; 5]);
        assert!(d.cpu_ns.central <= d.cpu_ns.upper);
    }

    #[test]
    fn targets_read_each_resource() {
        let mut u = Usage::default();
        u.cpu.cpu_ns = 1000;
        u.mem.peak_net_bytes = -5;
        let r = ProfileRecord::new(1, ClassId::DEFAULT, u);
        let y = targets(&r);
        assert!((y[0] - 1001f32.ln()).abs() < 1e-4);
        assert_eq!(y[2], 0.0);
    }

    #[test]
    fn censored_pinball_ignores_over_prediction() {
        assert_eq!(pinball(1.0, 3.0, 0.5, true), 0.0);
        assert_eq!(pinball(1.0, 3.0, 0.5, false), 1.0);
        assert!((pinball(3.0, 1.0, 0.99, true) - 1.98).abs() < 1e-6);
    }
}
