//! The baselines every learned model must beat: each a real competitor, not a strawman.
//!
//! - [`StaticPredictor`]: the route's `#[pagegen::route(...)]` annotation values.
//! - [`EwmaPredictor`]: per class, an exponentially weighted mean and variance of `ln(1 + v)`.
//! - [`HistogramPredictor`]: the Kubernetes VPA recommender's estimator: a per-class histogram with
//!   exponentially decaying sample weights (half-life on a [`Clock`](pagegen_core::Clock)), upper
//!   percentile plus a safety margin.

mod ewma;
mod fixed;
mod histogram;

pub use ewma::{EwmaConfig, EwmaPredictor};
pub use fixed::StaticPredictor;
pub use histogram::{HistogramConfig, HistogramPredictor};
