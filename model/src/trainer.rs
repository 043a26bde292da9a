//! The trainer: retrains the recurrent model from the profile store and runs the gate.
//!
//! One [`round`](Trainer::round): build the window ([`Dataset`]: newest records plus a replay of older
//! classes), take `steps` AdamW steps on batches of per-class sequences (pinball loss, candle), set the
//! upper-estimate calibration offsets on the calibrate part (split conformal: the offset that makes the
//! upper estimate cover [`CALIB_QUANTILE`] of held-out residuals), then score the challenger, the
//! champion and the baselines on the validate part ([`crate::gate`]) and apply the decision: promote
//! (atomic swap, class states rebuilt) or keep; the best of champion and baselines serves.
//!
//! The trainer keeps its own candle network across rounds (continual training, warm-started from the
//! checkpoint); a challenger is a snapshot of it.
//!
//! The thread that runs rounds beside a busy runtime, its duty cycle and its one-core rule are in
//! [`thread`]; their items are re-exported here ([`spawn`], [`TrainerHandle`], [`DutyCycle`]).

use std::sync::{Arc, Mutex};

use candle_nn::{AdamW, Optimizer};
use pagegen_core::{ProfileRecord, VirtualClock};

use crate::baseline::{EwmaPredictor, HistogramPredictor};
use crate::checkpoint;
use crate::dataset::{Dataset, Part};
use crate::deployed::Deployed;
use crate::error::ModelError;
use crate::gate::{decide, score, Decision, Serving};
use crate::net::{CandleNet, NetWeights};
use crate::predictor::Predictor;
use crate::recurrent::{RecurrentConfig, RecurrentPredictor};
use crate::rng::SplitMix;
use crate::store::ProfileStore;
use crate::target::{targets, to_log, RESOURCES};
use pagegen_core::Resource;

pub mod thread;
pub use thread::{
    single_threaded_candle, spawn, spawn_with, thread_cpu_ns, DutyCycle, StartHook, TrainerHandle,
};

/// Coverage the calibration aims the upper estimate at on held-out records: 0.993, above the stated
/// 0.99 to leave a margin for the drift between the calibrate part and the newer records served next
/// (the margin's size is plucked, not measured).
pub const CALIB_QUANTILE: f64 = 0.993;
/// Fewest calibrate-part residuals for a calibration offset; with fewer the offset stays 0 (a 0.993
/// quantile of fewer than ~150 points is the maximum or close to it).
const MIN_CALIB: usize = 200;

/// Trainer settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Newest records per round.
    pub window: usize,
    /// Older records replayed per class absent from the window.
    pub replay_per_class: usize,
    /// Optimiser steps per round.
    pub steps: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Steps per sequence (backpropagation through time).
    pub seq_len: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Fewest training rows for a round to train at all.
    pub min_train_rows: usize,
    /// Seed of the batch sampler.
    pub seed: u64,
    /// Share of one core the trainer *thread* may use ([`spawn`]): it sleeps between steps so its
    /// CPU time since the round began stays under `cpu_share ×` the wall time since then (0.02: a
    /// round of 2 s of CPU is spread over at least 100 s). `1.0` or more: no bound. Must be > 0.
    /// [`Trainer::round`] called directly (the evaluation) is never paced.
    pub cpu_share: f64,
    /// Fewest records appended to the store since the last round for the trainer thread to run the
    /// next one (the first round after start always runs); fewer and the tick does nothing.
    pub min_new_records: u64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        // Sizes from the evaluation (model/README.md): 500 steps of 32 sequences × 24 requests plus
        // the gate's replays take ~1.9 s of one core; a round every 5 minutes is ~0.6 % of a core.
        // 150 → 500 steps cut the memory slack by ~3 points; the window holds ~25 minutes of that
        // workload's traffic.
        TrainerConfig {
            window: 16_384,
            replay_per_class: 64,
            steps: 500,
            batch: 32,
            seq_len: 24,
            lr: 3e-3,
            min_train_rows: 256,
            seed: 0x7061_6765,
            // 2 % of a core: four times the evaluation's average need (a round per 5 minutes is
            // ~0.6 %), small enough that a saturated 2-core runtime loses ≤ 1 % (benches/trainer.rs).
            cpu_share: 0.02,
            // A quarter of the validate split's worth: fewer new records cannot change the gate much.
            min_new_records: 1024,
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// Training rows in the window.
    pub train_rows: usize,
    /// Mean training loss over the round's steps (`NaN` if it did not train).
    pub train_loss: f32,
    /// The gate's decision (`None` if the round did not train).
    pub decision: Option<Decision>,
    /// The challenger the round built, promoted or not (`None` if the round did not train).
    pub challenger: Option<Arc<NetWeights>>,
}

/// The model trainer (lives on the trainer thread).
pub struct Trainer {
    config: TrainerConfig,
    net: CandleNet,
    opt: AdamW,
    rng: SplitMix,
    generation: u64,
    /// Store appends seen at the last round (`None` before the first).
    last_appended: Option<u64>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn replay_clock(
    records: &[(ProfileRecord, Part)],
) -> (Arc<VirtualClock>, impl FnMut(&ProfileRecord)) {
    let clock = Arc::new(VirtualClock::new());
    let origin = records.first().map_or(0, |(r, _)| r.started_unix_ms);
    let c = clock.clone();
    let step = move |r: &ProfileRecord| {
        let t = r
            .started_unix_ms
            .saturating_sub(origin)
            .saturating_mul(1_000_000);
        if t > pagegen_core::Clock::now(&*c) {
            c.set(t);
        }
    };
    (clock, step)
}

/// Scores `weights` on the validate part by replaying the window (no rate limit: every record folds).
pub fn score_weights(weights: &NetWeights, ds: &Dataset, prior: crate::Prior) -> f32 {
    let (clock, step) = replay_clock(&ds.records);
    let p = RecurrentPredictor::new(
        RecurrentConfig {
            min_update_interval_ns: 0,
        },
        prior,
        clock,
        Arc::new(weights.clone()),
    );
    score(&p, &ds.records, step)
}

impl Trainer {
    /// A trainer starting from `initial` weights.
    pub fn new(config: TrainerConfig, initial: &NetWeights) -> Result<Self, ModelError> {
        if config.batch == 0
            || config.seq_len == 0
            || config.window == 0
            || config.lr.is_nan()
            || config.lr <= 0.0
            || config.cpu_share.is_nan()
            || config.cpu_share <= 0.0
        {
            return Err(ModelError::Config(format!(
                "trainer needs batch, seq_len, window > 0, lr > 0 and cpu_share > 0, got {config:?}"
            )));
        }
        let net = CandleNet::from_weights(initial)?;
        let opt = AdamW::new_lr(net.vars(), config.lr)?;
        Ok(Trainer {
            config,
            net,
            opt,
            rng: SplitMix::new(config.seed),
            generation: initial.generation,
            last_appended: None,
        })
    }

    /// Trains on `ds` for the configured steps; returns the mean loss.
    pub fn fit(&mut self, ds: &Dataset) -> Result<f32, ModelError> {
        self.fit_paced(ds, &mut || true)
            .map(|l| l.unwrap_or(f32::NAN))
    }

    /// [`fit`](Self::fit), calling `pace` after every step; `Ok(None)` if `pace` says stop.
    fn fit_paced(&mut self, ds: &Dataset, pace: Pace<'_>) -> Result<Option<f32>, ModelError> {
        let mut total = 0f32;
        for _ in 0..self.config.steps {
            let batch = ds.batch(&mut self.rng, self.config.batch, self.config.seq_len)?;
            let loss = self.net.loss(&batch)?;
            total += loss.to_scalar::<f32>()?;
            self.opt.backward_step(&loss)?;
            if !pace() {
                return Ok(None);
            }
        }
        Ok(Some(total / self.config.steps.max(1) as f32))
    }

    /// A challenger: the trainer's current weights, calibrated on the calibrate part of `ds`.
    pub fn challenger(
        &mut self,
        ds: &Dataset,
        prior: crate::Prior,
    ) -> Result<NetWeights, ModelError> {
        self.generation = self.generation.wrapping_add(1).max(1);
        let mut w = self.net.to_weights([0.0; RESOURCES], self.generation)?;
        w.calib = calibration(&w, ds, prior);
        Ok(w)
    }

    /// What the trainer thread does on each tick, unpaced: take a snapshot of `store` (holding it
    /// only for that), read the newest records from it, run a [`round`](Self::round), and save a
    /// promoted champion to `checkpoint`. Pending class updates are left to the completion path
    /// (the trainer takes no class lock, see [`crate::recurrent`]). Skips the round (a report with
    /// no decision) when fewer than [`TrainerConfig::min_new_records`] records arrived since the
    /// last one.
    pub fn tick(
        &mut self,
        deployed: &Deployed,
        store: &Mutex<ProfileStore>,
        checkpoint: Option<&std::path::Path>,
    ) -> Result<RoundReport, ModelError> {
        self.tick_paced(deployed, store, checkpoint, &mut || true)
            .map(|r| r.unwrap_or_else(RoundReport::skipped))
    }

    /// [`tick`](Self::tick) as the trainer thread runs it: `Ok(None)` when too few records arrived
    /// since the last round ([`TrainerConfig::min_new_records`]) or `pace` said stop; `pace` is called
    /// between steps and phases (it sleeps to keep the duty cycle and returns `false` to stop).
    fn tick_paced(
        &mut self,
        deployed: &Deployed,
        store: &Mutex<ProfileStore>,
        checkpoint: Option<&std::path::Path>,
        pace: Pace<'_>,
    ) -> Result<Option<RoundReport>, ModelError> {
        // Hold the store only for the snapshot; read it afterwards (see `crate::store`).
        let snapshot = store.lock().unwrap_or_else(|e| e.into_inner()).snapshot()?;
        if let Some(last) = self.last_appended {
            if snapshot.appended.saturating_sub(last) < self.config.min_new_records {
                return Ok(None);
            }
        }
        self.last_appended = Some(snapshot.appended);
        let Some((records, recovery)) = snapshot.read_recent_with(self.config.window * 2, pace)
        else {
            return Ok(None);
        };
        if !recovery.is_clean() {
            tracing::warn!(notes = ?recovery.notes, "trainer skipped corrupt profile records");
        }
        let Some(report) = self.round_paced(records, deployed, pace)? else {
            return Ok(None);
        };
        if let (Some(d), Some(path)) = (&report.decision, checkpoint) {
            if d.promote {
                checkpoint::save(&deployed.recurrent().weights(), path)?;
            }
        }
        Ok(Some(report))
    }

    /// One round: train, calibrate, gate, apply (see the module docs).
    pub fn round(
        &mut self,
        records: Vec<ProfileRecord>,
        deployed: &Deployed,
    ) -> Result<RoundReport, ModelError> {
        self.round_paced(records, deployed, &mut || true)
            .map(|r| r.unwrap_or_else(RoundReport::skipped))
    }

    /// [`round`](Self::round) with `pace` called between steps and phases; `Ok(None)` if it said stop.
    fn round_paced(
        &mut self,
        records: Vec<ProfileRecord>,
        deployed: &Deployed,
        pace: Pace<'_>,
    ) -> Result<Option<RoundReport>, ModelError> {
        if !pace() {
            return Ok(None);
        }
        let ds = Dataset::build(records, self.config.window, self.config.replay_per_class);
        let train_rows = ds.train_rows();
        if train_rows < self.config.min_train_rows {
            return Ok(Some(RoundReport {
                train_rows,
                ..RoundReport::skipped()
            }));
        }
        if !pace() {
            return Ok(None);
        }
        let Some(train_loss) = self.fit_paced(&ds, pace)? else {
            return Ok(None);
        };
        let prior = deployed.config().prior;
        let challenger = Arc::new(self.challenger(&ds, prior)?);
        if !pace() {
            return Ok(None);
        }
        let Some(decision) = gate_round_paced(&challenger, &ds, deployed, pace) else {
            return Ok(None);
        };
        if decision.promote {
            // Class states rebuild under the new weights at their next completion (the trainer takes
            // no class lock, see `crate::recurrent`).
            deployed.recurrent().set_weights(challenger.clone());
        }
        deployed.gate_round(decision.clone());
        Ok(Some(RoundReport {
            train_rows,
            train_loss,
            decision: Some(decision),
            challenger: Some(challenger),
        }))
    }
}

/// Called by a paced round between steps and phases; `false` = stop now.
type Pace<'a> = &'a mut dyn FnMut() -> bool;

impl RoundReport {
    /// A round that did not train.
    fn skipped() -> Self {
        RoundReport {
            train_rows: 0,
            train_loss: f32::NAN,
            decision: None,
            challenger: None,
        }
    }
}

/// Scores a challenger against the deployment's champion and baselines on `ds` (fresh replays).
pub fn gate_round(challenger: &NetWeights, ds: &Dataset, deployed: &Deployed) -> Decision {
    gate_round_paced(challenger, ds, deployed, &mut || true)
        .expect("an unpaced gate round always finishes")
}

fn gate_round_paced(
    challenger: &NetWeights,
    ds: &Dataset,
    deployed: &Deployed,
    pace: Pace<'_>,
) -> Option<Decision> {
    let cfg = *deployed.config();
    let ch = score_weights(challenger, ds, cfg.prior);
    pace().then_some(())?;
    let champ = score_weights(&deployed.recurrent().weights(), ds, cfg.prior);
    pace().then_some(())?;
    let ewma = EwmaPredictor::new(cfg.ewma, cfg.prior);
    let e = score(&ewma, &ds.records, |_| {});
    let (clock, step) = replay_clock(&ds.records);
    let hist = HistogramPredictor::new(cfg.histogram, cfg.prior, clock);
    let h = score(&hist, &ds.records, step);
    pace().then_some(())?;
    let s = score(deployed.fixed(), &ds.records, |_| {});
    Some(decide(
        ch,
        Some(champ),
        &[
            (Serving::Static, s),
            (Serving::Ewma, e),
            (Serving::Histogram, h),
        ],
    ))
}

/// Per-resource offsets that make the upper estimate cover [`CALIB_QUANTILE`] of the calibrate part.
fn calibration(w: &NetWeights, ds: &Dataset, prior: crate::Prior) -> [f32; RESOURCES] {
    let (clock, mut step) = replay_clock(&ds.records);
    let p = RecurrentPredictor::new(
        RecurrentConfig {
            min_update_interval_ns: 0,
        },
        prior,
        clock,
        Arc::new(w.clone()),
    );
    let mut residuals: Vec<Vec<f32>> = vec![Vec::new(); RESOURCES];
    for (r, part) in &ds.records {
        step(r);
        if *part == Part::Calibrate && !r.censored() && p.state(r.class).is_some_and(|s| s.n > 0) {
            let d = p.predict(r.class, &r.features);
            let y = targets(r);
            for (i, res) in Resource::ALL.into_iter().enumerate() {
                residuals[i].push(y[i] - to_log(d.get(res).upper));
            }
        }
        p.observe(r);
    }
    let mut calib = [0f32; RESOURCES];
    for (i, res) in residuals.iter_mut().enumerate() {
        if res.len() >= MIN_CALIB {
            res.sort_by(f32::total_cmp);
            let k = ((res.len() as f64 * CALIB_QUANTILE).ceil() as usize).min(res.len() - 1);
            calib[i] = res[k].clamp(-4.0, 4.0);
        }
    }
    calib
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::extract;
    use crate::store::StoreConfig;
    use pagegen_core::{ClassId, Usage};

    fn records(n: usize) -> Vec<ProfileRecord> {
        let mut rng = SplitMix::new(1);
        (0..n)
            .map(|i| {
                let pages = 1 + rng.below(50) as u64;
                let class = ClassId::from_raw(1 + (i % 2) as u32);
                let mut u = Usage::default();
                u.cpu.cpu_ns = 10_000 * pages * if i % 2 == 0 { 1 } else { 3 };
                u.mem.peak_net_bytes = 4096 * pages as i64;
                let mut r = ProfileRecord::new(i as u64, class, u);
                r.started_unix_ms = i as u64 * 10;
                r.features = extract(class, "/list", Some(&format!("pages={pages}")), 0, 2);
                r
            })
            .collect()
    }

    #[test]
    fn tick_trains_from_the_store_and_checkpoints_a_promotion() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, _) =
            ProfileStore::open(tmp.path().join("p"), StoreConfig::default()).unwrap();
        for r in records(1200) {
            store.append(&r).unwrap();
        }
        let store = Mutex::new(store);
        let clock = Arc::new(VirtualClock::new());
        let deployed = Deployed::new(
            crate::DeployedConfig::default(),
            clock,
            Arc::new(NetWeights::random(5)),
            Serving::Ewma,
        );
        let cfg = TrainerConfig {
            steps: 40,
            ..TrainerConfig::default()
        };
        let mut t = Trainer::new(cfg, &NetWeights::random(5)).unwrap();
        let ckpt = tmp.path().join("model.safetensors");
        let report = t.tick(&deployed, &store, Some(&ckpt)).unwrap();
        let d = report.decision.expect("enough rows to train");
        assert!(report.train_loss.is_finite());
        assert_eq!(d.promote, ckpt.exists());
        if d.promote {
            assert_eq!(
                checkpoint::import(&ckpt).unwrap(),
                *deployed.recurrent().weights()
            );
        }
        // Too few rows: no training, nothing changes.
        let small = Mutex::new(
            ProfileStore::open(tmp.path().join("q"), StoreConfig::default())
                .unwrap()
                .0,
        );
        let r = t.tick(&deployed, &small, None).unwrap();
        assert!(r.decision.is_none() && r.train_rows == 0);
    }

    fn fixture(steps: usize) -> (tempfile::TempDir, Mutex<ProfileStore>, Deployed, Trainer) {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, _) =
            ProfileStore::open(tmp.path().join("p"), StoreConfig::default()).unwrap();
        for r in records(1200) {
            store.append(&r).unwrap();
        }
        let deployed = Deployed::new(
            crate::DeployedConfig::default(),
            Arc::new(VirtualClock::new()),
            Arc::new(NetWeights::random(5)),
            Serving::Ewma,
        );
        let cfg = TrainerConfig {
            steps,
            min_new_records: 100,
            ..TrainerConfig::default()
        };
        let t = Trainer::new(cfg, &NetWeights::random(5)).unwrap();
        (tmp, Mutex::new(store), deployed, t)
    }

    #[test]
    fn a_paced_round_paces_between_steps_and_stops_when_told() {
        let (_tmp, store, deployed, mut t) = fixture(12);
        let mut calls = 0;
        let r = t
            .tick_paced(&deployed, &store, None, &mut || {
                calls += 1;
                true
            })
            .unwrap();
        assert!(r.is_some_and(|r| r.decision.is_some()));
        assert!(
            calls > 12,
            "pace after every step and between phases: {calls}"
        );
        // Told to stop mid-training: no round, nothing served changes.
        for r in records(200) {
            store.lock().unwrap().append(&r).unwrap();
        }
        let before = (deployed.serving(), deployed.recurrent().weights());
        let mut left = 5;
        let r = t
            .tick_paced(&deployed, &store, None, &mut || {
                left -= 1;
                left > 0
            })
            .unwrap();
        assert!(r.is_none());
        assert_eq!(before, (deployed.serving(), deployed.recurrent().weights()));
    }

    #[test]
    fn a_tick_with_too_few_new_records_skips_the_round() {
        let (_tmp, store, deployed, mut t) = fixture(2);
        let go = &mut || true;
        // The first tick after start always trains.
        assert!(t.tick_paced(&deployed, &store, None, go).unwrap().is_some());
        for r in records(99) {
            store.lock().unwrap().append(&r).unwrap();
        }
        assert!(t.tick_paced(&deployed, &store, None, go).unwrap().is_none());
        store.lock().unwrap().append(&records(1)[0]).unwrap();
        assert!(t.tick_paced(&deployed, &store, None, go).unwrap().is_some());
    }

    #[test]
    fn bad_config_is_an_error() {
        let cfg = TrainerConfig {
            batch: 0,
            ..TrainerConfig::default()
        };
        assert!(Trainer::new(cfg, &NetWeights::zeros()).is_err());
        for share in [0.0, -1.0, f64::NAN] {
            let cfg = TrainerConfig {
                cpu_share: share,
                ..TrainerConfig::default()
            };
            assert!(Trainer::new(cfg, &NetWeights::zeros()).is_err());
        }
    }
}
