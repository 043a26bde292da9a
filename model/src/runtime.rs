//! [`ModelRuntime`]: everything the prediction half of pagegen keeps, opened from a state directory.
//!
//! Opening: lock the state directory, open the profile store (recovering a torn tail), load the
//! champion checkpoint or start fresh (a bad one is moved aside), and build the [`Deployed`]
//! predictor — serving the checkpoint's model if one loaded, else the EWMA baseline until the first
//! gate round says otherwise. What was recovered is kept in [`ModelRuntime::recovery`] and
//! [`ModelRuntime::start`] for the runtime to report once.
//!
//! Completion path: [`record`](ModelRuntime::record) lets every predictor observe the record, then
//! appends it to the store (one buffered write; a failed write is reported, never propagated into the
//! request). A completion never waits for the store: it only *tries* its mutex. When another thread
//! holds it — another completion, or the trainer taking a [snapshot](crate::store::StoreSnapshot),
//! which may run at `SCHED_IDLE` and be starved while holding it — the record goes to a side buffer
//! that only completions touch, and the next completion that gets the store appends the buffer first.
//! The side buffer is bounded ([`DEFERRED_CAP`] records); a record that finds it full is dropped and
//! counted ([`dropped_records`](ModelRuntime::dropped_records), plus a rate-limited warning), never
//! lost silently. The trainer takes nothing else the completion path takes (see
//! [`crate::recurrent`] for the class states).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use pagegen_core::{Clock, ProfileRecord};

use crate::checkpoint::{self, Start};
use crate::deployed::{Deployed, DeployedConfig};
use crate::error::ModelError;
use crate::gate::Serving;
use crate::net::NetWeights;
use crate::predictor::Predictor;
use crate::state_dir::StateDir;
use crate::store::{ProfileStore, Recovery, StoreConfig};
use crate::trainer::{self, RoundReport, Trainer, TrainerConfig, TrainerHandle};

/// Settings of the whole prediction side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelConfig {
    /// Predictors and exploration.
    pub deployed: DeployedConfig,
    /// Profile store bounds.
    pub store: StoreConfig,
    /// Trainer sizes.
    pub trainer: TrainerConfig,
}

/// The opened prediction state.
#[derive(Debug)]
pub struct ModelRuntime {
    dir: StateDir,
    config: ModelConfig,
    store: Arc<Mutex<ProfileStore>>,
    deployed: Arc<Deployed>,
    /// What the store's recovery found on open.
    pub recovery: Recovery,
    /// How the model started (checkpoint loaded, fresh, or replaced).
    pub start: Start,
    trainer: Option<TrainerHandle>,
    /// Records that found the store busy, waiting for the next completion that gets it. Only
    /// completions (and [`flush`](ModelRuntime::flush)) take this lock, never the trainer.
    deferred: Mutex<Vec<ProfileRecord>>,
    /// `deferred.len()`, readable without the lock (so an empty buffer costs one load).
    deferred_len: AtomicUsize,
    dropped: AtomicU64,
}

/// Most records held back while the store is busy (~1 KiB each, so ≤ ~16 MiB; at 10,000 completions
/// per second, 1.6 s of traffic while the trainer holds the store for a snapshot).
pub const DEFERRED_CAP: usize = 16_384;

/// Seed of a fresh model's weights (any constant: fresh starts are reproducible).
const FRESH_SEED: u64 = 1;

impl ModelRuntime {
    /// Opens everything under `dir` (see the module docs).
    pub fn open(
        dir: StateDir,
        clock: Arc<dyn Clock>,
        config: ModelConfig,
    ) -> Result<Self, ModelError> {
        let (store, recovery) = ProfileStore::open(dir.profiles(), config.store)?;
        let (weights, start) =
            checkpoint::load_or_fresh(&dir.checkpoint(), || NetWeights::random(FRESH_SEED));
        let serving = if start == Start::Loaded {
            Serving::Recurrent
        } else {
            Serving::Ewma
        };
        let deployed = Arc::new(Deployed::new(
            config.deployed,
            clock,
            Arc::new(weights),
            serving,
        ));
        Ok(ModelRuntime {
            dir,
            config,
            store: Arc::new(Mutex::new(store)),
            deployed,
            recovery,
            start,
            trainer: None,
            deferred: Mutex::new(Vec::new()),
            deferred_len: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The predictor the runtime calls on the request path.
    pub fn predictor(&self) -> Arc<Deployed> {
        self.deployed.clone()
    }

    /// Learns from a finished request and stores it; never waits for the store (see the module
    /// docs).
    pub fn record(&self, record: &ProfileRecord) {
        self.deployed.observe(record);
        let mut s = match self.store.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.defer(record);
                return;
            }
        };
        self.append_deferred(&mut s);
        append(&mut s, record);
    }

    fn defer(&self, record: &ProfileRecord) {
        let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= DEFERRED_CAP {
            drop(d);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "profile store busy and its side buffer full: records dropped (not learned from \
                     after a restart; the live predictors still observed them)"
                );
            }
            return;
        }
        d.push(*record);
        self.deferred_len.store(d.len(), Ordering::Release);
    }

    /// Appends the side buffer (store held by the caller).
    fn append_deferred(&self, s: &mut ProfileStore) {
        if self.deferred_len.load(Ordering::Acquire) == 0 {
            return;
        }
        let held = {
            let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            self.deferred_len.store(0, Ordering::Release);
            std::mem::take(&mut *d)
        };
        for r in &held {
            append(s, r);
        }
    }

    /// Records dropped because the store was busy and the side buffer full (see the module docs).
    pub fn dropped_records(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes buffered and held-back records to the store file (waits for the store).
    pub fn flush(&self) -> Result<(), ModelError> {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        self.append_deferred(&mut s);
        s.flush()
    }

    /// Starts the trainer thread (requires `RAYON_NUM_THREADS=1`, see [`trainer::spawn`]).
    pub fn start_trainer(&mut self, interval: Duration) -> Result<(), ModelError> {
        self.start_trainer_with(interval, Box::new(|| {}))
    }

    /// [`start_trainer`](Self::start_trainer), running `on_start` on the trainer thread first (see
    /// [`trainer::StartHook`]; the facade's `pagegen::trainer::start` lowers its OS priority here).
    /// A second call while the trainer runs does nothing.
    pub fn start_trainer_with(
        &mut self,
        interval: Duration,
        on_start: trainer::StartHook,
    ) -> Result<(), ModelError> {
        if self.trainer.is_some() {
            return Ok(());
        }
        let t = Trainer::new(self.config.trainer, &self.deployed.recurrent().weights())?;
        self.trainer = Some(trainer::spawn_with(
            t,
            self.deployed.clone(),
            self.store.clone(),
            Some(self.dir.checkpoint()),
            interval,
            on_start,
        )?);
        Ok(())
    }

    /// Trains now, on the calling thread and without the trainer thread's duty cycle: reads the
    /// newest records as a trainer round does, runs `rounds` rounds on them (one network, trained on
    /// across rounds, as the trainer thread does across ticks), and saves the champion to the
    /// checkpoint when the last round's gate has the model serve: a promoted challenger, or a
    /// champion that kept its place and still beats every baseline. (A fresh champion can be that
    /// one: the per-class parts of the model adapt whatever its weights. Saving it keeps the
    /// gate's decision across the restart; without a checkpoint a server starts on the EWMA.)
    /// The gate's decisions apply to this runtime's predictor as after any round. For offline
    /// training from recorded profiles while no server holds the state directory
    /// (`pagegen train`); beside a busy runtime the trainer thread is the way.
    ///
    /// Returns each round's report and what reading the store met (corrupt parts are skipped).
    pub fn train_now(&self, rounds: usize) -> Result<(Vec<RoundReport>, Recovery), ModelError> {
        let mut trainer = Trainer::new(self.config.trainer, &self.deployed.recurrent().weights())?;
        let (records, recovery) = {
            let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
            self.append_deferred(&mut s);
            s.read_recent(self.config.trainer.window * 2)?
        };
        let mut reports = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            reports.push(trainer.round(records.clone(), &self.deployed)?);
        }
        let serves_model = reports
            .iter()
            .rev()
            .find_map(|r| r.decision.as_ref())
            .is_some_and(|d| d.serve == Serving::Recurrent);
        if serves_model {
            checkpoint::save(&self.deployed.recurrent().weights(), &self.dir.checkpoint())?;
        }
        Ok((reports, recovery))
    }

    /// The running trainer, if [`start_trainer`](Self::start_trainer) started one.
    pub fn trainer(&self) -> Option<&TrainerHandle> {
        self.trainer.as_ref()
    }

    /// Writes the champion's weights for another instance.
    pub fn export(&self, path: &Path) -> Result<(), ModelError> {
        checkpoint::export(&self.deployed.recurrent().weights(), path)
    }

    /// Installs weights another instance exported: they become the champion and serve (the next
    /// gate round may still hand serving to a baseline). A bad file is an error and changes nothing.
    pub fn import(&self, path: &Path) -> Result<(), ModelError> {
        let w = checkpoint::import(path)?;
        checkpoint::save(&w, &self.dir.checkpoint())?;
        self.deployed.recurrent().set_weights(Arc::new(w));
        self.deployed.recurrent().rebase_all();
        self.deployed.set_serving(Serving::Recurrent);
        Ok(())
    }

    /// The state directory.
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }
}

fn append(s: &mut ProfileStore, record: &ProfileRecord) {
    if let Err(e) = s.append(record) {
        tracing::warn!(error = %e, "could not append a profile record");
    }
}

impl Drop for ModelRuntime {
    fn drop(&mut self) {
        if let Some(t) = self.trainer.take() {
            t.stop();
        }
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassId, Features, Usage, VirtualClock};

    fn open(path: &Path) -> ModelRuntime {
        let clock = Arc::new(VirtualClock::new());
        ModelRuntime::open(StateDir::open(path).unwrap(), clock, ModelConfig::default()).unwrap()
    }

    fn rec(i: u64) -> ProfileRecord {
        let mut u = Usage::default();
        u.cpu.cpu_ns = 1_000_000 + i;
        ProfileRecord::new(i, ClassId::from_raw(1), u)
    }

    #[test]
    fn a_busy_store_never_blocks_a_completion_and_drops_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let m = open(tmp.path());
        m.record(&rec(0));
        {
            // The trainer (or anyone) holds the store: completions go on without it.
            let _held = m.store.lock().unwrap();
            for i in 1..=(DEFERRED_CAP as u64 + 10) {
                m.record(&rec(i));
            }
            assert_eq!(m.dropped_records(), 10);
        }
        // The next completion that gets the store appends the held-back records first.
        m.record(&rec(99_999));
        let (all, _) = m.store.lock().unwrap().read_all().unwrap();
        assert_eq!(all.len(), 1 + DEFERRED_CAP + 1);
        assert_eq!(all[1], rec(1));
        assert_eq!(all.last(), Some(&rec(99_999)));
        // `flush` also appends what is held back.
        {
            let _held = m.store.lock().unwrap();
            m.record(&rec(100_000));
        }
        m.flush().unwrap();
        assert_eq!(m.store.lock().unwrap().appended(), DEFERRED_CAP as u64 + 3);
    }

    #[test]
    fn train_now_trains_from_the_store_and_checkpoints_what_it_promotes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = ModelConfig::default();
        cfg.trainer.steps = 60;
        let open_cfg = |path: &Path| {
            let clock = Arc::new(VirtualClock::new());
            ModelRuntime::open(StateDir::open(path).unwrap(), clock, cfg).unwrap()
        };
        {
            let m = open_cfg(tmp.path());
            // Too few records: nothing trains, nothing is written.
            let (reports, recovery) = m.train_now(1).unwrap();
            assert!(recovery.is_clean());
            assert_eq!(reports.len(), 1);
            assert!(reports[0].decision.is_none());
            assert!(!m.dir().checkpoint().exists());
            // Two classes whose CPU follows a query parameter: what the features predict and a
            // per-class mean cannot.
            for i in 0..1200u64 {
                let class = ClassId::from_raw(1 + (i % 2) as u32);
                let pages = 1 + (i * 7919) % 50;
                let mut u = Usage::default();
                u.cpu.cpu_ns = 10_000 * pages * (1 + 2 * (i % 2));
                u.mem.peak_net_bytes = 4096 * pages as i64;
                let mut r = ProfileRecord::new(i, class, u);
                r.started_unix_ms = i * 10;
                r.features =
                    crate::features::extract(class, "/list", Some(&format!("pages={pages}")), 0, 2);
                m.record(&r);
            }
        }
        let m = open_cfg(tmp.path());
        assert_eq!(m.start, Start::Fresh);
        let (reports, _) = m.train_now(2).unwrap();
        assert_eq!(reports.len(), 2);
        let decisions: Vec<&crate::Decision> = reports
            .iter()
            .map(|r| r.decision.as_ref().unwrap())
            .collect();
        assert!(reports.iter().all(|r| r.train_loss.is_finite()));
        // Features that carry the demand: the trained model beats the per-class baselines (the
        // gate's scores on this data: ~0.01 against the EWMA's ~0.15).
        assert!(decisions[0].promote, "{decisions:?}");
        assert_eq!(decisions[1].serve, Serving::Recurrent);
        assert_eq!(m.predictor().serving(), Serving::Recurrent);
        assert!(m.dir().checkpoint().exists());
        let weights = m.predictor().recurrent().weights();
        drop(m);
        let again = open_cfg(tmp.path());
        assert_eq!(again.start, Start::Loaded);
        assert_eq!(again.predictor().recurrent().weights(), weights);
        assert_eq!(again.predictor().serving(), Serving::Recurrent);
        drop(again);

        // A round that keeps the champion, which still beats the baselines, checkpoints it too:
        // without the file a restart would serve the EWMA against the gate's decision. A learning
        // rate this large wrecks the challenger, so the fresh champion stays.
        std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
        let mut wild = cfg;
        wild.trainer.lr = 1e9;
        wild.trainer.steps = 5;
        let m = ModelRuntime::open(
            StateDir::open(tmp.path()).unwrap(),
            Arc::new(VirtualClock::new()),
            wild,
        )
        .unwrap();
        assert_eq!(m.start, Start::Fresh);
        let fresh = m.predictor().recurrent().weights();
        let (reports, _) = m.train_now(1).unwrap();
        let d = reports[0].decision.clone().expect("enough rows");
        assert!(!d.promote, "{d:?}");
        assert_eq!(d.serve, Serving::Recurrent, "{d:?}");
        assert!(m.dir().checkpoint().exists());
        assert_eq!(checkpoint::import(&m.dir().checkpoint()).unwrap(), *fresh);
    }

    #[test]
    fn records_survive_a_restart_and_import_installs_a_model() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let m = open(tmp.path());
            assert_eq!(m.start, Start::Fresh);
            assert_eq!(m.predictor().serving(), Serving::Ewma);
            for i in 0..20 {
                let mut u = Usage::default();
                u.cpu.cpu_ns = 1_000_000;
                m.record(&ProfileRecord::new(i, ClassId::from_raw(1), u));
            }
            let d = m
                .predictor()
                .predict(ClassId::from_raw(1), &Features::default());
            assert!((d.cpu_ns.central as i64 - 1_000_000).abs() < 1000);
        }
        let m = open(tmp.path());
        assert!(m.recovery.is_clean());
        let n = m.store.lock().unwrap().read_all().unwrap().0.len();
        assert_eq!(n, 20);

        let other = tempfile::tempdir().unwrap();
        let file = other.path().join("shared.safetensors");
        let mut w = NetWeights::random(42);
        w.generation = 42;
        checkpoint::export(&w, &file).unwrap();
        m.import(&file).unwrap();
        assert_eq!(m.predictor().serving(), Serving::Recurrent);
        assert_eq!(*m.predictor().recurrent().weights(), w);
        std::fs::write(&file, b"junk").unwrap();
        assert!(m.import(&file).is_err());
        assert_eq!(*m.predictor().recurrent().weights(), w);
        drop(m);
        assert_eq!(open(tmp.path()).start, Start::Loaded);
    }
}
