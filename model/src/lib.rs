//! # pagegen-model — learning how each route behaves
//!
//! From a class's past requests and the features of the request at hand, predict what it is about to
//! need, cheaply enough to sit in front of every request.
//!
//! | module | contract |
//! |---|---|
//! | [`runtime`] | [`ModelRuntime`]: state dir + store + checkpoint + gated predictor + trainer, opened in one call |
//! | [`features`] | request → fixed-width [`Features`](pagegen_core::Features) (layout table there) |
//! | [`target`] | record → log-space targets; log predictions → clamped [`Demand`](pagegen_core::Demand) |
//! | [`predictor`] | the [`Predictor`] trait: allocation-free `predict`, `observe` on completion |
//! | [`baseline`] | static annotation, per-class EWMA, VPA-style decaying histogram |
//! | [`net`] | the recurrent model: candle graph (trainer only) and the plain-Rust forward |
//! | [`store`] | the append-only, checksummed, bounded profile log; recovery skips only damaged records |
//! | [`state_dir`] | `PAGEGEN_STATE_DIR` and its lock file |
//! | [`checkpoint`] | safetensors checkpoints with a format version; export/import |
//! | [`dataset`] | store records → per-class training sequences; train/calibrate/validate split |
//! | [`trainer`] | candle training rounds, calibration, the trainer thread (one core) |
//! | [`gate`] | champion/challenger scoring and the promotion rule |
//! | [`deployed`] | [`Deployed`]: the gated predictor the runtime calls, with exploration |
//! | [`recurrent`] | [`RecurrentPredictor`]: per-class states, batched and rate-limited updates |
//!
//! Candle runs only on the trainer thread and never on more than one core: candle 0.11 sizes its
//! thread pool from `RAYON_NUM_THREADS` (and re-reads `/proc/cpuinfo` per matmul when it is unset), so
//! the trainer requires `RAYON_NUM_THREADS=1` (see [`trainer`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod checkpoint;
pub mod dataset;
pub mod deployed;
pub mod error;
pub mod features;
pub mod gate;
pub mod net;
pub mod predictor;
pub mod published;
pub mod recurrent;
pub mod rng;
pub mod runtime;
pub mod state_dir;
pub mod store;
pub mod table;
pub mod target;
pub mod trainer;

pub use baseline::{
    EwmaConfig, EwmaPredictor, HistogramConfig, HistogramPredictor, StaticPredictor,
};
pub use deployed::{Deployed, DeployedConfig, ExploreConfig, Served};
pub use error::ModelError;
pub use gate::{Decision, Serving};
pub use predictor::Predictor;
pub use published::Prior;
pub use recurrent::{RecurrentConfig, RecurrentPredictor};
pub use runtime::{ModelConfig, ModelRuntime};
pub use state_dir::StateDir;
pub use store::{ProfileStore, Recovery, Skipped, StoreConfig, StoreSnapshot};
pub use trainer::{RoundReport, StartHook, Trainer, TrainerConfig, TrainerHandle};
