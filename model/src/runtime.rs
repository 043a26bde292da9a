//! [`ModelRuntime`]: everything the prediction half of pagegen keeps, opened from a state directory.
//!
//! Opening: lock the state directory, open the profile store (recovering a torn tail), load the
//! champion checkpoint or start fresh (a bad one is moved aside), and build the [`Deployed`]
//! predictor — serving the checkpoint's model if one loaded, else the EWMA baseline until the first
//! gate round says otherwise. What was recovered is kept in [`ModelRuntime::recovery`] and
//! [`ModelRuntime::start`] for the runtime to report once.
//!
//! Completion path: [`record`](ModelRuntime::record) lets every predictor observe the record, then
//! appends it to the store under the store's mutex (one buffered write; a failed write is reported,
//! never propagated into the request).

use std::path::Path;
use std::sync::{Arc, Mutex};
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
use crate::trainer::{self, Trainer, TrainerConfig, TrainerHandle};

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
}

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
        })
    }

    /// The predictor the runtime calls on the request path.
    pub fn predictor(&self) -> Arc<Deployed> {
        self.deployed.clone()
    }

    /// Learns from a finished request and stores it.
    pub fn record(&self, record: &ProfileRecord) {
        self.deployed.observe(record);
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = s.append(record) {
            tracing::warn!(error = %e, "could not append a profile record");
        }
    }

    /// Writes buffered records to the store file.
    pub fn flush(&self) -> Result<(), ModelError> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).flush()
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
