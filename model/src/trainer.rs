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
//! One core: candle 0.11 parallelises matmuls over its rayon pool and re-reads `/proc/cpuinfo` per
//! matmul when `RAYON_NUM_THREADS` is unset, so [`spawn`] requires `RAYON_NUM_THREADS=1` (the facade's
//! `#[pagegen::main]` sets it before any thread starts unless the user did).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
        {
            return Err(ModelError::Config(format!(
                "trainer needs batch, seq_len, window > 0 and lr > 0, got {config:?}"
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
        })
    }

    /// Trains on `ds` for the configured steps; returns the mean loss.
    pub fn fit(&mut self, ds: &Dataset) -> Result<f32, ModelError> {
        let mut total = 0f32;
        for _ in 0..self.config.steps {
            let batch = ds.batch(&mut self.rng, self.config.batch, self.config.seq_len)?;
            let loss = self.net.loss(&batch)?;
            total += loss.to_scalar::<f32>()?;
            self.opt.backward_step(&loss)?;
        }
        Ok(total / self.config.steps.max(1) as f32)
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

    /// What the trainer thread does on each tick: fold pending class updates, read the newest
    /// records from `store`, run a [`round`](Self::round), and save a promoted champion to
    /// `checkpoint`.
    pub fn tick(
        &mut self,
        deployed: &Deployed,
        store: &Mutex<ProfileStore>,
        checkpoint: Option<&std::path::Path>,
    ) -> Result<RoundReport, ModelError> {
        deployed.recurrent().flush();
        let (records, recovery) = {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            s.read_recent(self.config.window * 2)?
        };
        if !recovery.is_clean() {
            tracing::warn!(notes = ?recovery.notes, "trainer skipped corrupt profile records");
        }
        let report = self.round(records, deployed)?;
        if let (Some(d), Some(path)) = (&report.decision, checkpoint) {
            if d.promote {
                checkpoint::save(&deployed.recurrent().weights(), path)?;
            }
        }
        Ok(report)
    }

    /// One round: train, calibrate, gate, apply (see the module docs).
    pub fn round(
        &mut self,
        records: Vec<ProfileRecord>,
        deployed: &Deployed,
    ) -> Result<RoundReport, ModelError> {
        let ds = Dataset::build(records, self.config.window, self.config.replay_per_class);
        let train_rows = ds.train_rows();
        if train_rows < self.config.min_train_rows {
            return Ok(RoundReport {
                train_rows,
                train_loss: f32::NAN,
                decision: None,
                challenger: None,
            });
        }
        let train_loss = self.fit(&ds)?;
        let prior = deployed.config().prior;
        let challenger = Arc::new(self.challenger(&ds, prior)?);
        let decision = gate_round(&challenger, &ds, deployed);
        if decision.promote {
            deployed.recurrent().set_weights(challenger.clone());
            deployed.recurrent().rebase_all();
        }
        deployed.set_serving(decision.serve);
        Ok(RoundReport {
            train_rows,
            train_loss,
            decision: Some(decision),
            challenger: Some(challenger),
        })
    }
}

/// Scores a challenger against the deployment's champion and baselines on `ds` (fresh replays).
pub fn gate_round(challenger: &NetWeights, ds: &Dataset, deployed: &Deployed) -> Decision {
    let cfg = *deployed.config();
    let ch = score_weights(challenger, ds, cfg.prior);
    let champ = score_weights(&deployed.recurrent().weights(), ds, cfg.prior);
    let ewma = EwmaPredictor::new(cfg.ewma, cfg.prior);
    let e = score(&ewma, &ds.records, |_| {});
    let (clock, step) = replay_clock(&ds.records);
    let hist = HistogramPredictor::new(cfg.histogram, cfg.prior, clock);
    let h = score(&hist, &ds.records, step);
    let s = score(deployed.fixed(), &ds.records, |_| {});
    decide(
        ch,
        Some(champ),
        &[
            (Serving::Static, s),
            (Serving::Ewma, e),
            (Serving::Histogram, h),
        ],
    )
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

/// A running trainer thread; dropping the handle stops it.
#[derive(Debug)]
pub struct TrainerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    rounds: Arc<AtomicU64>,
}

impl TrainerHandle {
    /// Ticks finished so far (trained or not, failed or not).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TrainerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether `RAYON_NUM_THREADS=1`, i.e. candle will stay on the calling thread's core.
pub fn single_threaded_candle() -> bool {
    std::env::var("RAYON_NUM_THREADS").is_ok_and(|v| v.trim() == "1")
}

/// Something the trainer thread runs once, first, on itself: the place to lower its OS priority
/// (the facade's `pagegen::trainer` passes `pagegen_executor::lower_current_thread_priority`; this
/// crate forbids `unsafe` and so cannot call the OS itself).
pub type StartHook = Box<dyn FnOnce() + Send + 'static>;

/// Starts the trainer thread: every `interval` it folds pending class updates, reads the newest
/// records from `store`, runs a [`round`](Trainer::round), and saves a promoted champion to
/// `checkpoint`. Refuses to start unless `RAYON_NUM_THREADS=1` (see the module docs). Same as
/// [`spawn_with`] with no start hook.
pub fn spawn(
    trainer: Trainer,
    deployed: Arc<Deployed>,
    store: Arc<Mutex<ProfileStore>>,
    checkpoint: Option<PathBuf>,
    interval: Duration,
) -> Result<TrainerHandle, ModelError> {
    spawn_with(
        trainer,
        deployed,
        store,
        checkpoint,
        interval,
        Box::new(|| {}),
    )
}

/// [`spawn`], running `on_start` on the trainer thread before its first round (see [`StartHook`]).
pub fn spawn_with(
    mut trainer: Trainer,
    deployed: Arc<Deployed>,
    store: Arc<Mutex<ProfileStore>>,
    checkpoint: Option<PathBuf>,
    interval: Duration,
    on_start: StartHook,
) -> Result<TrainerHandle, ModelError> {
    if !single_threaded_candle() {
        return Err(ModelError::Config(
            "the trainer needs RAYON_NUM_THREADS=1 in the environment before any thread starts \
             (#[pagegen::main] sets it; set it yourself when building the runtime by hand)"
                .into(),
        ));
    }
    let (tx, rx) = mpsc::channel::<()>();
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = rounds.clone();
    let thread = std::thread::Builder::new()
        .name("pagegen-trainer".into())
        .spawn(move || {
            on_start();
            loop {
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                match trainer.tick(&deployed, &store, checkpoint.as_deref()) {
                    Ok(report) => tracing::debug!(?report, "trainer round"),
                    Err(e) => tracing::warn!(error = %e, "trainer round failed"),
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| ModelError::io("pagegen-trainer thread", e))?;
    Ok(TrainerHandle {
        stop: Some(tx),
        thread: Some(thread),
        rounds,
    })
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

    #[test]
    fn spawn_requires_single_threaded_candle() {
        if single_threaded_candle() {
            // The environment already satisfies the requirement; the refusal cannot be observed.
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(tmp.path(), StoreConfig::default())
            .unwrap()
            .0;
        let deployed = Arc::new(Deployed::new(
            crate::DeployedConfig::default(),
            Arc::new(VirtualClock::new()),
            Arc::new(NetWeights::zeros()),
            Serving::Ewma,
        ));
        let t = Trainer::new(TrainerConfig::default(), &NetWeights::zeros()).unwrap();
        let r = spawn(
            t,
            deployed,
            Arc::new(Mutex::new(store)),
            None,
            Duration::from_secs(3600),
        );
        assert!(matches!(r, Err(ModelError::Config(_))));
    }

    #[test]
    fn bad_config_is_an_error() {
        let cfg = TrainerConfig {
            batch: 0,
            ..TrainerConfig::default()
        };
        assert!(Trainer::new(cfg, &NetWeights::zeros()).is_err());
    }
}
