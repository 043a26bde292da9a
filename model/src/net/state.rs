//! The per-class state and the fold of one record into it.
//!
//! A class's state is its GRU hidden vector `h` plus running statistics of `y = ln(1 + v)` (mean and
//! standard deviation per resource, EWMA with weight `max(1/n, ALPHA)`, censored records only raising
//! the mean), the observation count, and the running mean of the request features. The statistics are
//! fixed arithmetic, not learned: they give the head a class's level from the first observation (a new
//! class is learned in a handful of requests), and the GRU learns what the statistics miss.
//!
//! Layouts (indices into the vectors the network reads):
//! - GRU input ([`GRU_IN`]): `y/16` (5), `(y − mean)/4` (5), censored flag, `1/(1+n)`.
//! - Head input ([`HEAD_IN`]): `h` ([`HIDDEN`]), `median/16` (5), `sd` (5), `mean − median` (5),
//!   `1/sqrt(1+n)`, features (32), features − feature mean (32).
//!
//! The state also keeps a per-class *cover* offset on the upper estimates, steered after each
//! observation so the class's long-run miss rate is [`COVER_MISS`] (adaptive conformal inference):
//! it is arithmetic on the model's own predictions, applied after the head, never an input to it.
//!
//! The head's outputs `o` (10) become `central = median + o[r]` and
//! `upper = central + softplus(o[5 + r] + 2.2)·(sd + 0.05) + calib[r]`, so an untrained head already
//! predicts the class's median and a spread-scaled upper bound (softplus(2.2) ≈ 2.3 ≈ the
//! normal 99 % z-score), and `upper >= central` by construction.

use pagegen_core::{Features, FEATURE_WIDTH};

use crate::target::{Targets, RESOURCES, Y_MAX};

/// GRU hidden size. 16: the smallest size whose validation loss in the evaluation was within noise of
/// 32, at a quarter of the request-path cost.
pub const HIDDEN: usize = 16;
/// Head hidden size.
pub const HEAD_HIDDEN: usize = 32;
/// GRU input width.
pub const GRU_IN: usize = 2 * RESOURCES + 2;
/// Head input width.
pub const HEAD_IN: usize = HIDDEN + 3 * RESOURCES + 1 + 2 * FEATURE_WIDTH;
/// Head output width: central and upper offsets per resource.
pub const HEAD_OUT: usize = 2 * RESOURCES;
/// Statistics weight floor: 0.05, the same half-life (~14 requests) as the EWMA baseline so the model
/// starts from the baseline's information and must earn any improvement.
pub const ALPHA: f32 = 0.05;
/// Added to the upper-offset pre-activation: softplus(2.2) ≈ 2.3 ≈ Φ⁻¹(0.99).
pub const UPPER_BIAS: f32 = 2.2;
/// Spread floor, log space (5 %): a class that never varied still gets some headroom.
pub const SD_FLOOR: f32 = 0.05;
/// Miss rate the per-class cover offset steers the upper estimate to: 0.7 %, under the 1 % goal by
/// the same margin as the trainer's calibration quantile.
pub const COVER_MISS: f32 = 0.007;
/// Step of the per-class cover offset, log space: a miss raises the class's upper estimates by ~5 %,
/// a hit lowers them by `0.05 × 0.007` (adaptive conformal inference, Gibbs & Candès, NeurIPS 2021:
/// the long-run miss rate converges to `COVER_MISS` whatever the model).
pub const COVER_STEP: f32 = 0.1;

/// One observation, ready to fold: log targets, censoring, features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// `ln(1 + v)` per resource.
    pub y: Targets,
    /// Whether the record was censored (a lower bound).
    pub censored: bool,
    /// The request's (sanitized) features.
    pub x: Features,
}

/// A class's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassState {
    /// GRU hidden vector.
    pub h: [f32; HIDDEN],
    /// Running mean of `y`.
    pub mean: Targets,
    /// Running variance of `y`.
    pub var: Targets,
    /// Running median of `y` (stochastic approximation, see [`ClassState::update_stats`]).
    pub median: Targets,
    /// Observations folded (saturating).
    pub n: u32,
    /// Running mean of the features.
    pub xbar: [f32; FEATURE_WIDTH],
    /// Per-class offset added to the upper estimates (adaptive conformal, see [`COVER_STEP`]).
    pub cover: Targets,
}

impl Default for ClassState {
    fn default() -> Self {
        ClassState {
            h: [0.0; HIDDEN],
            mean: [0.0; RESOURCES],
            var: [0.0; RESOURCES],
            median: [0.0; RESOURCES],
            n: 0,
            xbar: [0.0; FEATURE_WIDTH],
            cover: [0.0; RESOURCES],
        }
    }
}

impl ClassState {
    /// The GRU input for folding `step` into this state (uses the statistics *before* the fold).
    pub fn gru_input(&self, step: &Step) -> [f32; GRU_IN] {
        let mut v = [0f32; GRU_IN];
        for r in 0..RESOURCES {
            v[r] = step.y[r] / 16.0;
            v[RESOURCES + r] = ((step.y[r] - self.mean[r]) / 4.0).clamp(-4.0, 4.0);
        }
        v[2 * RESOURCES] = if step.censored { 1.0 } else { 0.0 };
        v[2 * RESOURCES + 1] = 1.0 / (1.0 + self.n as f32);
        v
    }

    /// Standard deviation of `y` per resource.
    pub fn sd(&self) -> Targets {
        self.var.map(|v| v.max(0.0).sqrt())
    }

    /// The head input for a request with features `x` (features must be sanitized).
    pub fn head_input(&self, x: &Features, out: &mut [f32; HEAD_IN]) {
        out[..HIDDEN].copy_from_slice(&self.h);
        let sd = self.sd();
        for r in 0..RESOURCES {
            out[HIDDEN + r] = self.median[r] / 16.0;
            out[HIDDEN + RESOURCES + r] = sd[r];
            out[HIDDEN + 2 * RESOURCES + r] = (self.mean[r] - self.median[r]).clamp(-4.0, 4.0);
        }
        out[HIDDEN + 3 * RESOURCES] = 1.0 / (1.0 + self.n as f32).sqrt();
        let base = HIDDEN + 3 * RESOURCES + 1;
        for i in 0..FEATURE_WIDTH {
            out[base + i] = x.0[i];
            out[base + FEATURE_WIDTH + i] = x.0[i] - self.xbar[i];
        }
    }

    /// Steers the cover offset after an observation whose upper estimate was `upper` (log space).
    pub fn update_cover(&mut self, step: &Step, upper: &Targets) {
        for (r, &u) in upper.iter().enumerate() {
            let miss = step.y[r] > u;
            if step.censored && !miss {
                // A lower bound under the estimate says nothing about coverage.
                continue;
            }
            let d = if miss {
                COVER_STEP * (1.0 - COVER_MISS)
            } else {
                -COVER_STEP * COVER_MISS
            };
            self.cover[r] = (self.cover[r] + d).clamp(-2.0, 4.0);
        }
    }

    /// Folds the statistics of `step` (the GRU part is [`NetWeights::gru_step`](super::NetWeights)).
    pub fn update_stats(&mut self, step: &Step) {
        self.n = self.n.saturating_add(1);
        let w = (1.0 / self.n as f32).max(ALPHA);
        for r in 0..RESOURCES {
            let y = step.y[r].clamp(0.0, Y_MAX);
            let d = y - self.mean[r];
            // Median: the first observation, then steps of ±w·1.25·(sd + floor) towards each new
            // one (the Robbins–Monro quantile recursion, scaled by the class's spread).
            let gamma = w * 1.25 * (self.var[r].max(0.0).sqrt() + SD_FLOOR);
            if self.n == 1 {
                self.median[r] = y;
            } else if y > self.median[r] {
                self.median[r] = (self.median[r] + gamma).min(y);
            } else if !step.censored && y < self.median[r] {
                self.median[r] = (self.median[r] - gamma).max(y);
            }
            if !(step.censored && d <= 0.0) {
                self.mean[r] += w * d;
                self.var[r] = (1.0 - w) * (self.var[r] + w * d * d);
            }
        }
        if !step.censored {
            for i in 0..FEATURE_WIDTH {
                self.xbar[i] += w * (step.x.0[i] - self.xbar[i]);
            }
        }
    }
}

/// Turns head outputs into log-space central and upper estimates around the class median `center`
/// (see the module docs).
pub fn decode_head(
    center: &Targets,
    sd: &Targets,
    o: &[f32; HEAD_OUT],
    calib: &Targets,
) -> (Targets, Targets) {
    let mut c = [0f32; RESOURCES];
    let mut u = [0f32; RESOURCES];
    for r in 0..RESOURCES {
        c[r] = center[r] + o[r];
        u[r] = c[r] + softplus(o[RESOURCES + r] + UPPER_BIAS) * (sd[r] + SD_FLOOR) + calib[r];
        u[r] = u[r].max(c[r]);
    }
    (c, u)
}

/// `ln(1 + e^x)`, computed stably.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }
}
