//! The plain-Rust forward: the same function as [`CandleNet`](super::CandleNet), over the same weights,
//! without allocation, for the request path and per-class state updates.
//!
//! Weight layouts follow candle-nn exactly (row-major `[out, in]` matrices; the GRU's three gates
//! stacked `r, z, n` as in `candle_nn::rnn::GRU`, itself PyTorch's layout), so a conversion is a copy.
//! The GRU step is the textbook one, as candle computes it:
//! `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
//! `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = z ⊙ h + (1 − z) ⊙ n`.

use pagegen_core::Features;

use super::state::{decode_head, ClassState, GRU_IN, HEAD_HIDDEN, HEAD_IN, HEAD_OUT, HIDDEN};
use crate::target::{Targets, RESOURCES};

/// Observations after which a class's upper estimate is its conformal one (central + the cover
/// window's offset): 16 skipped ([`crate::recurrent`]) + [`super::cover::COVER_MIN`] residuals.
pub const COVER_FROM: u32 = super::state::SPREAD_MIN_N + super::cover::COVER_MIN as u32;

/// Every weight of the model, flat, in candle's layouts.
#[derive(Clone, Debug, PartialEq)]
pub struct NetWeights {
    /// `[3·HIDDEN, GRU_IN]`.
    pub w_ih: Vec<f32>,
    /// `[3·HIDDEN, HIDDEN]`.
    pub w_hh: Vec<f32>,
    /// `[3·HIDDEN]`.
    pub b_ih: Vec<f32>,
    /// `[3·HIDDEN]`.
    pub b_hh: Vec<f32>,
    /// `[HEAD_HIDDEN, HEAD_IN]`.
    pub w1: Vec<f32>,
    /// `[HEAD_HIDDEN]`.
    pub b1: Vec<f32>,
    /// `[HEAD_OUT, HEAD_HIDDEN]`.
    pub w2: Vec<f32>,
    /// `[HEAD_OUT]`.
    pub b2: Vec<f32>,
    /// Per-resource offset added to the upper estimate (conformal calibration on held-out records).
    pub calib: Targets,
    /// Identifies this set of weights; class states built under another generation are rebuilt.
    pub generation: u64,
}

/// Expected length of each named tensor (name, len), in checkpoint order.
pub const SHAPES: [(&str, [usize; 2]); 9] = [
    ("gru.weight_ih_l0", [3 * HIDDEN, GRU_IN]),
    ("gru.weight_hh_l0", [3 * HIDDEN, HIDDEN]),
    ("gru.bias_ih_l0", [3 * HIDDEN, 1]),
    ("gru.bias_hh_l0", [3 * HIDDEN, 1]),
    ("head1.weight", [HEAD_HIDDEN, HEAD_IN]),
    ("head1.bias", [HEAD_HIDDEN, 1]),
    ("head2.weight", [HEAD_OUT, HEAD_HIDDEN]),
    ("head2.bias", [HEAD_OUT, 1]),
    ("calib", [RESOURCES, 1]),
];

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `out[i] = b[i] + Σ_j w[i·n + j]·x[j]`.
#[inline]
fn affine(w: &[f32], b: &[f32], x: &[f32], out: &mut [f32]) {
    let n = x.len();
    for (i, o) in out.iter_mut().enumerate() {
        let row = &w[i * n..(i + 1) * n];
        // Eight independent partial sums: lets the compiler vectorise (a single f32 accumulator
        // serialises on the add latency); the reordering changes results by ~1e-7 relative.
        let mut acc = [0f32; 8];
        let mut rc = row.chunks_exact(8);
        let mut xc = x.chunks_exact(8);
        for (a, v) in (&mut rc).zip(&mut xc) {
            for k in 0..8 {
                acc[k] += a[k] * v[k];
            }
        }
        let mut tail = 0f32;
        for (a, v) in rc.remainder().iter().zip(xc.remainder()) {
            tail += a * v;
        }
        *o = acc.iter().sum::<f32>() + tail + b[i];
    }
}

impl NetWeights {
    /// All-zero weights (an untrained head: predicts the class statistics).
    pub fn zeros() -> Self {
        let len = |i: usize| SHAPES[i].1[0] * SHAPES[i].1[1];
        NetWeights {
            w_ih: vec![0.0; len(0)],
            w_hh: vec![0.0; len(1)],
            b_ih: vec![0.0; len(2)],
            b_hh: vec![0.0; len(3)],
            w1: vec![0.0; len(4)],
            b1: vec![0.0; len(5)],
            w2: vec![0.0; len(6)],
            b2: vec![0.0; len(7)],
            calib: [0.0; RESOURCES],
            generation: 0,
        }
    }

    /// The flat tensors in [`SHAPES`] order (calib included).
    pub fn tensors(&self) -> [&[f32]; 9] {
        [
            &self.w_ih,
            &self.w_hh,
            &self.b_ih,
            &self.b_hh,
            &self.w1,
            &self.b1,
            &self.w2,
            &self.b2,
            &self.calib,
        ]
    }

    /// Whether every tensor has its expected length and every value is finite.
    pub fn is_valid(&self) -> bool {
        self.tensors()
            .iter()
            .zip(SHAPES)
            .all(|(t, (_, s))| t.len() == s[0] * s[1] && t.iter().all(|v| v.is_finite()))
    }

    /// One GRU step: folds `input` into `h`.
    pub fn gru_step(&self, h: &mut [f32; HIDDEN], input: &[f32; GRU_IN]) {
        let mut gi = [0f32; 3 * HIDDEN];
        let mut gh = [0f32; 3 * HIDDEN];
        affine(&self.w_ih, &self.b_ih, input, &mut gi);
        affine(&self.w_hh, &self.b_hh, h, &mut gh);
        for k in 0..HIDDEN {
            let r = sigmoid(gi[k] + gh[k]);
            let z = sigmoid(gi[HIDDEN + k] + gh[HIDDEN + k]);
            let n = (gi[2 * HIDDEN + k] + r * gh[2 * HIDDEN + k]).tanh();
            h[k] = z * h[k] + (1.0 - z) * n;
        }
    }

    /// Raw head outputs for a state and (sanitized) features.
    pub fn head(&self, state: &ClassState, x: &Features) -> [f32; HEAD_OUT] {
        let mut input = [0f32; HEAD_IN];
        state.head_input(x, &mut input);
        let mut hidden = [0f32; HEAD_HIDDEN];
        affine(&self.w1, &self.b1, &input, &mut hidden);
        for v in &mut hidden {
            *v = v.max(0.0);
        }
        let mut o = [0f32; HEAD_OUT];
        affine(&self.w2, &self.b2, &hidden, &mut o);
        o
    }

    /// Log-space central and upper predictions before the class's bias and cover offsets.
    pub fn predict_log_raw(&self, state: &ClassState, x: &Features) -> (Targets, Targets) {
        let o = self.head(state, x);
        decode_head(&state.median, &state.spread(), &o, &self.calib)
    }

    /// Log-space central and upper predictions for a state and (sanitized) features, as served:
    /// the central is the head's plus the class's bias offset, or another candidate where the class's
    /// choice says so ([`ClassState::chosen_central`]); the upper is that central plus the class's
    /// conformal offset once the class has [`COVER_FROM`] observations ([`super::cover`]), before
    /// that the head's width above the central.
    pub fn predict_log(&self, state: &ClassState, x: &Features) -> (Targets, Targets) {
        let (c_raw, u_raw) = self.predict_log_raw(state, x);
        // The served central once: the young class's upper is the head's width above it
        // ([`upper_before_cover`](Self::upper_before_cover), which chooses it again).
        let c = state.chosen_central(&std::array::from_fn(|r| c_raw[r] + state.bias[r]), x);
        let conformal = state.n >= COVER_FROM;
        (
            c,
            std::array::from_fn(|r| {
                if conformal {
                    c[r] + state.cover[r].max(0.0)
                } else {
                    c[r] + (u_raw[r] - c_raw[r])
                }
                .max(c[r])
            }),
        )
    }

    /// A young class's upper estimate: the head's width (`upper − central` of
    /// [`predict_log_raw`](Self::predict_log_raw)) above the served central estimate
    /// ([`ClassState::chosen_central`]), so it follows whichever central estimate serves.
    pub fn upper_before_cover(
        &self,
        state: &ClassState,
        x: &Features,
        c_raw: &Targets,
        u_raw: &Targets,
    ) -> Targets {
        let c = state.chosen_central(&std::array::from_fn(|r| c_raw[r] + state.bias[r]), x);
        std::array::from_fn(|r| c[r] + (u_raw[r] - c_raw[r]))
    }

    /// Folds one observation into a state: the GRU step on the statistics before the fold, then
    /// the statistics (the cover offset is the caller's, see [`super::cover`]). Returns the GRU
    /// input used.
    pub fn fold(&self, state: &mut ClassState, step: &super::Step) -> [f32; GRU_IN] {
        let input = state.gru_input(step);
        self.gru_step(&mut state.h, &input);
        state.update_stats(step);
        input
    }
}
