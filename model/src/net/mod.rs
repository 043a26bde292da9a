//! The recurrent model: a GRU folds a class's recent history into a state; a small head maps
//! [state, class statistics, request features] to central and upper quantiles of every resource.
//!
//! Two implementations of one function over one set of weights:
//! - [`graph`]: candle (`candle-nn`'s GRU and linear layers), used **only on the trainer thread** to
//!   fit the weights with pinball loss;
//! - [`weights`]: a plain-Rust, allocation-free forward over the same weights, used on the request
//!   path and for per-class state updates (candle's per-op overhead, ~35 µs per GRU step, is too much
//!   for either). A test checks both agree to 1e-5.
//!
//! [`state`] defines the per-class state (GRU hidden vector plus running statistics and the per-class
//! parameter fit of [`rls`]) and how a record is folded into it: the one definition both the trainer's
//! sequence builder and the serving path use. [`cover`] is the per-class conformal offset on the
//! upper estimates, kept by the serving path's writer.

pub mod cover;
pub mod graph;
pub mod rls;
pub mod state;
pub mod weights;

pub use graph::CandleNet;
pub use state::{ClassState, Step};
pub use weights::NetWeights;
