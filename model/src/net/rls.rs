//! Per-class recursive least squares from request parameters to log demand.
//!
//! One global head cannot tell, from a hashed feature slot alone, whether slot 12 holds `/items`'
//! page number (irrelevant) or `/complete`'s prompt length (decisive): keys of different routes share
//! slots. So each class also fits its own linear map from its numeric features to `y = ln(1 + v)`,
//! by recursive least squares (the textbook recursion, e.g. Haykin, *Adaptive Filter Theory*, ch. 10)
//! with a forgetting factor, and the head reads the fit's prediction relative to the class median. It
//! is plain arithmetic on the class's history — like the running statistics, not a learned weight —
//! so the trainer's sequences compute it exactly as serving does.
//!
//! Inputs ([`RLS_DIM`]): the class-standardised features
//! ([`ClassState::standardize`](super::ClassState::standardize)) of slots 0 (bias), 2 (path length),
//! 4 (query length), 6 (body size), 8..20 (numeric path and query values, query value lengths). The inverse-covariance matrix is shared
//! by the five resources (same inputs); its trace is capped so directions a class never excites
//! (constant slots) cannot wind up under forgetting.

use pagegen_core::Features;

use crate::target::{Targets, RESOURCES};

/// Inputs of the per-class fit.
pub const RLS_DIM: usize = 16;
const SLOTS: [usize; RLS_DIM] = [0, 2, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
/// Forgetting factor: 0.995, a memory of ~200 requests (long enough to separate a parameter's effect
/// from noise at σ ≈ 0.3, short enough to follow a deploy).
const LAMBDA: f32 = 0.995;
/// Initial inverse covariance `δ·I`: δ = 10 lets the first observations move the fit freely.
const DELTA: f32 = 10.0;
/// Cap on the trace of the inverse covariance (anti-windup), `DELTA × RLS_DIM`.
const TRACE_CAP: f32 = DELTA * RLS_DIM as f32;

/// The fit's weights, one row per resource.
pub type RlsWeights = [[f32; RLS_DIM]; RESOURCES];

/// The inputs of the fit for features `x`.
#[inline]
pub fn inputs(x: &Features) -> [f32; RLS_DIM] {
    let mut z = [0f32; RLS_DIM];
    for (v, &s) in z.iter_mut().zip(&SLOTS) {
        *v = x.0[s];
    }
    z
}

/// The fit's prediction for features `x`.
#[inline]
pub fn predict(w: &RlsWeights, x: &Features) -> Targets {
    let z = inputs(x);
    let mut y = [0f32; RESOURCES];
    for (out, row) in y.iter_mut().zip(w) {
        *out = row.iter().zip(&z).map(|(a, b)| a * b).sum();
    }
    y
}

/// The fit's inverse covariance, row-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RlsCov(pub [f32; RLS_DIM * RLS_DIM]);

impl Default for RlsCov {
    fn default() -> Self {
        let mut p = [0f32; RLS_DIM * RLS_DIM];
        for i in 0..RLS_DIM {
            p[i * RLS_DIM + i] = DELTA;
        }
        RlsCov(p)
    }
}

/// Folds one observation `(x, y)` into the fit.
pub fn update(w: &mut RlsWeights, p: &mut RlsCov, x: &Features, y: &Targets) {
    let z = inputs(x);
    let p = &mut p.0;
    let mut pz = [0f32; RLS_DIM];
    for i in 0..RLS_DIM {
        pz[i] = (0..RLS_DIM).map(|j| p[i * RLS_DIM + j] * z[j]).sum();
    }
    let denom = LAMBDA + z.iter().zip(&pz).map(|(a, b)| a * b).sum::<f32>();
    if !(denom.is_finite() && denom > 1e-6) {
        return;
    }
    let k = pz.map(|v| v / denom);
    for (r, row) in w.iter_mut().enumerate() {
        let e = y[r] - row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>();
        for (wi, ki) in row.iter_mut().zip(&k) {
            *wi += ki * e;
        }
    }
    // P ← (P − k·(Pz)ᵀ)/λ (P symmetric, so zᵀP = (Pz)ᵀ).
    let mut trace = 0f32;
    for i in 0..RLS_DIM {
        for j in 0..RLS_DIM {
            let v = (p[i * RLS_DIM + j] - k[i] * pz[j]) / LAMBDA;
            p[i * RLS_DIM + j] = v;
        }
        trace += p[i * RLS_DIM + i];
    }
    if !(trace.is_finite()) || trace <= 0.0 {
        *p = RlsCov::default().0;
    } else if trace > TRACE_CAP {
        let s = TRACE_CAP / trace;
        p.iter_mut().for_each(|v| *v *= s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn fits_a_linear_map_of_a_parameter() {
        let mut w = RlsWeights::default();
        let mut p = RlsCov::default();
        let mut rng = SplitMix::new(3);
        for _ in 0..300 {
            let mut x = Features::default();
            x.0[0] = 1.0;
            x.0[8] = rng.unit() as f32;
            x.0[12] = rng.unit() as f32; // irrelevant
            let y = [3.0 + 5.0 * x.0[8], 0.0, 1.0, 0.0, 0.0];
            update(&mut w, &mut p, &x, &y);
        }
        let mut x = Features::default();
        x.0[0] = 1.0;
        x.0[8] = 0.5;
        x.0[12] = 0.9;
        let y = predict(&w, &x);
        assert!((y[0] - 5.5).abs() < 0.05, "{y:?}");
        assert!((y[2] - 1.0).abs() < 0.05, "{y:?}");
        assert!(p.0.iter().all(|v| v.is_finite()));
    }
}
