//! The candle implementation of the model, for training on the trainer thread only.
//!
//! Built from a `candle_nn::VarMap` through a `VarBuilder` (candle's convention, as `candle-nn`'s
//! `rnn.rs`): `gru.*` is `candle_nn::rnn::GRU`, `head1`/`head2` are `candle_nn::Linear`. Initial values
//! come from [`NetWeights`] (seeded, so training is reproducible) rather than candle's unseeded
//! initialisers.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::rnn::{GRUConfig, GRUState, GRU, RNN};
use candle_nn::{Linear, Module, VarBuilder, VarMap};

use super::state::{GRU_IN, HEAD_HIDDEN, HEAD_IN, HEAD_OUT, HIDDEN, SD_FLOOR, UPPER_BIAS};
use super::weights::{NetWeights, SHAPES};
use crate::error::ModelError;
use crate::rng::SplitMix;
use crate::target::{RESOURCES, UPPER_QUANTILE};

/// The model as candle layers over a `VarMap`.
pub struct CandleNet {
    varmap: VarMap,
    gru: GRU,
    head1: Linear,
    head2: Linear,
    device: Device,
}

impl std::fmt::Debug for CandleNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleNet").finish_non_exhaustive()
    }
}

/// One training batch, time-major: `T` steps of `B` windows.
#[derive(Debug)]
pub struct Batch {
    /// `[T, B, GRU_IN]`.
    pub gru_in: Tensor,
    /// Head inputs without the GRU state: `[T·B, HEAD_IN − HIDDEN]`.
    pub head_rest: Tensor,
    /// Targets `[T·B, 5]`.
    pub y: Tensor,
    /// Class median the central estimate is relative to `[T·B, 5]`.
    pub center: Tensor,
    /// Class statistics sd `[T·B, 5]`.
    pub sd: Tensor,
    /// 1 for censored rows `[T·B, 1]`.
    pub censored: Tensor,
    /// Loss weight of each row (0 for padding and burn-in) `[T·B, 1]`.
    pub mask: Tensor,
}

impl NetWeights {
    /// Seeded initial weights: candle-nn's Kaiming-uniform bounds for the GRU and first head layer,
    /// and a second head layer scaled down 10× so a fresh model starts near the class statistics.
    pub fn random(seed: u64) -> Self {
        let mut rng = SplitMix::new(seed);
        let mut w = NetWeights::zeros();
        let mut fill = |v: &mut Vec<f32>, fan_in: usize, scale: f32| {
            let bound = (1.0 / fan_in as f32).sqrt() * scale;
            for x in v.iter_mut() {
                *x = ((rng.unit() as f32) * 2.0 - 1.0) * bound;
            }
        };
        fill(&mut w.w_ih, GRU_IN, 1.0);
        fill(&mut w.w_hh, HIDDEN, 1.0);
        fill(&mut w.w1, HEAD_IN, 1.0);
        fill(&mut w.b1, HEAD_IN, 1.0);
        fill(&mut w.w2, HEAD_HIDDEN, 0.1);
        w.generation = seed;
        w
    }
}

impl CandleNet {
    /// Candle layers holding a copy of `weights`.
    pub fn from_weights(weights: &NetWeights) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let gru = candle_nn::rnn::gru(GRU_IN, HIDDEN, GRUConfig::default(), vb.pp("gru"))?;
        let head1 = candle_nn::linear(HEAD_IN, HEAD_HIDDEN, vb.pp("head1"))?;
        let head2 = candle_nn::linear(HEAD_HIDDEN, HEAD_OUT, vb.pp("head2"))?;
        for ((name, shape), data) in SHAPES.iter().zip(weights.tensors()).take(8) {
            let t = if shape[1] == 1 {
                Tensor::from_slice(data, shape[0], &device)?
            } else {
                Tensor::from_slice(data, (shape[0], shape[1]), &device)?
            };
            varmap.set_one(name, t)?;
        }
        Ok(CandleNet {
            varmap,
            gru,
            head1,
            head2,
            device,
        })
    }

    /// The current weights as plain vectors (`calib` and `generation` given by the caller).
    pub fn to_weights(
        &self,
        calib: [f32; RESOURCES],
        generation: u64,
    ) -> Result<NetWeights, ModelError> {
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let get = |name: &str| -> Result<Vec<f32>, ModelError> {
            let var = data
                .get(name)
                .ok_or_else(|| ModelError::Config(format!("missing variable {name}")))?;
            Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        };
        Ok(NetWeights {
            w_ih: get(SHAPES[0].0)?,
            w_hh: get(SHAPES[1].0)?,
            b_ih: get(SHAPES[2].0)?,
            b_hh: get(SHAPES[3].0)?,
            w1: get(SHAPES[4].0)?,
            b1: get(SHAPES[5].0)?,
            w2: get(SHAPES[6].0)?,
            b2: get(SHAPES[7].0)?,
            calib,
            generation,
        })
    }

    /// The trainable variables (for the optimiser).
    pub fn vars(&self) -> Vec<candle_core::Var> {
        self.varmap.all_vars()
    }

    /// The device (always the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One GRU step over a batch: `input [B, GRU_IN]`, `h [B, HIDDEN]`.
    pub fn gru_step(&self, input: &Tensor, h: &Tensor) -> Result<Tensor, ModelError> {
        let s = self.gru.step(input, &GRUState { h: h.clone() })?;
        Ok(s.h)
    }

    /// Raw head outputs `[N, HEAD_OUT]` for head inputs `[N, HEAD_IN]`.
    pub fn head(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        let hidden = self.head1.forward(input)?.relu()?;
        Ok(self.head2.forward(&hidden)?)
    }

    /// Central and upper log predictions `[N, 5]` each, from head outputs and class statistics
    /// (no calibration offset: training fits the uncalibrated model).
    pub fn decode(
        &self,
        o: &Tensor,
        center: &Tensor,
        sd: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let oc = o.narrow(D::Minus1, 0, RESOURCES)?;
        let ou = (o.narrow(D::Minus1, RESOURCES, RESOURCES)? + f64::from(UPPER_BIAS))?;
        let central = (center + oc)?;
        let spread = softplus(&ou)?.mul(&(sd + f64::from(SD_FLOOR))?)?;
        let upper = (&central + spread)?;
        Ok((central, upper))
    }

    /// The masked mean pinball loss of a batch (median for the central estimate, the upper quantile
    /// for the upper one; censored rows are not penalised for over-prediction).
    pub fn loss(&self, batch: &Batch) -> Result<Tensor, ModelError> {
        let (t, b, _) = batch.gru_in.dims3()?;
        let mut h = Tensor::zeros((b, HIDDEN), DType::F32, &self.device)?;
        let mut hs = Vec::with_capacity(t);
        for step in 0..t {
            hs.push(h.clone());
            let input = batch.gru_in.get(step)?;
            h = self.gru_step(&input, &h)?;
        }
        let h_all = Tensor::stack(&hs, 0)?.reshape((t * b, HIDDEN))?;
        let input = Tensor::cat(&[&h_all, &batch.head_rest], 1)?;
        let o = self.head(&input)?;
        let (central, upper) = self.decode(&o, &batch.center, &batch.sd)?;
        let keep_over = (1.0 - &batch.censored)?;
        let lc = pinball(&batch.y, &central, 0.5, &keep_over)?;
        let lu = pinball(&batch.y, &upper, f64::from(UPPER_QUANTILE), &keep_over)?;
        let per_row = (lc + lu)?.sum_keepdim(1)?;
        let total = per_row.mul(&batch.mask)?.sum_all()?;
        let weight = (batch.mask.sum_all()? + 1e-6)?;
        Ok(total.div(&weight)?)
    }
}

fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    // relu(x) + ln(1 + e^{-|x|}): the stable form, as `state::softplus`.
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}

/// Pinball loss per element; `keep_over` (1 or 0 per row) scales the over-prediction part.
fn pinball(y: &Tensor, pred: &Tensor, q: f64, keep_over: &Tensor) -> candle_core::Result<Tensor> {
    let e = (y - pred)?;
    let under = (e.relu()? * q)?;
    let over = (e.neg()?.relu()? * (1.0 - q))?.broadcast_mul(keep_over)?;
    under + over
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{decode_head, ClassState, Step};
    use crate::net::weights::COVER_FROM;
    use pagegen_core::{Features, FEATURE_WIDTH};

    fn state_and_step(rng: &mut SplitMix) -> (ClassState, Step) {
        let mut s = ClassState::default();
        for v in s.h.iter_mut() {
            *v = rng.normal() as f32 * 0.5;
        }
        let mut x = Features::default();
        for v in x.0.iter_mut() {
            *v = rng.normal() as f32;
        }
        let mut y = [0f32; RESOURCES];
        for v in y.iter_mut() {
            *v = (rng.unit() * 20.0) as f32;
        }
        for r in 0..RESOURCES {
            s.mean[r] = (rng.unit() * 20.0) as f32;
            s.median[r] = s.mean[r] + rng.normal() as f32 * 0.3;
            s.var[r] = rng.unit() as f32;
        }
        s.n = 1 + rng.below(100) as u32;
        for v in s.xbar.iter_mut() {
            *v = rng.normal() as f32;
        }
        let step = Step {
            y,
            censored: rng.unit() < 0.3,
            x,
        };
        (s, step)
    }

    #[test]
    fn candle_and_plain_forward_agree() {
        let mut rng = SplitMix::new(11);
        let mut w = NetWeights::random(3);
        // Make the head's second layer matter as much as a trained one would.
        for v in w.w2.iter_mut() {
            *v *= 10.0;
        }
        w.calib = [0.1, -0.05, 0.2, 0.0, 0.3];
        let net = CandleNet::from_weights(&w).unwrap();
        assert_eq!(net.to_weights(w.calib, w.generation).unwrap(), w);
        let dev = Device::Cpu;
        for _ in 0..20 {
            let (s, step) = state_and_step(&mut rng);
            // GRU step.
            let input = s.gru_input(&step);
            let mut h_plain = s.h;
            w.gru_step(&mut h_plain, &input);
            let h_candle = net
                .gru_step(
                    &Tensor::from_slice(&input, (1, GRU_IN), &dev).unwrap(),
                    &Tensor::from_slice(&s.h, (1, HIDDEN), &dev).unwrap(),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in h_plain.iter().zip(&h_candle) {
                assert!((a - b).abs() <= 1e-5, "gru {a} vs {b}");
            }
            // Head and decoding.
            let mut hin = [0f32; HEAD_IN];
            s.head_input(&step.x, &mut hin);
            let o = net
                .head(&Tensor::from_slice(&hin, (1, HEAD_IN), &dev).unwrap())
                .unwrap();
            let center = Tensor::from_slice(&s.median, (1, RESOURCES), &dev).unwrap();
            let sd = Tensor::from_slice(&s.spread(), (1, RESOURCES), &dev).unwrap();
            let (c, u) = net.decode(&o, &center, &sd).unwrap();
            let c = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let u = u.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (pc, pu) = w.predict_log(&s, &step.x);
            let o_plain = w.head(&s, &step.x);
            let (pc0, pu0) = decode_head(&s.median, &s.spread(), &o_plain, &[0.0; RESOURCES]);
            for r in 0..RESOURCES {
                assert!(
                    (pc0[r] - c[r]).abs() <= 1e-5,
                    "central {} vs {}",
                    pc0[r],
                    c[r]
                );
                assert!(
                    (pu0[r] - u[r]).abs() <= 1e-5,
                    "upper {} vs {}",
                    pu0[r],
                    u[r]
                );
                // Served: the class's chosen central, the head's width above it (bias and cover 0).
                let chosen = s.chosen_central(&pc0, &step.x)[r];
                assert!((pc[r] - chosen).abs() <= 1e-6);
                let want = if s.n >= COVER_FROM {
                    chosen // conformal: central + the (empty, 0) cover offset
                } else {
                    (chosen + pu0[r] + w.calib[r] - pc0[r]).max(chosen)
                };
                assert!((pu[r] - want).abs() <= 1e-5);
            }
            assert_eq!(FEATURE_WIDTH, 32);
        }
    }
}
