//! The HTTP edge — the only place in pagegen that names hyper, axum and tower.
//!
//! | module | does |
//! |---|---|
//! | `classify` | [`Classifier`]: a request → its route key (axum's `MatchedPath` by default) |
//! | `layer` | [`LoopLayer`]/[`LoopService`]: the request loop as tower middleware — classify, features, predict, grant, admit, spawn the handler in its class, pool and grant, enforce its deadline, answer 503/500, record |
//! | [`client`] | [`Client`](client::Client): outgoing backend calls accounted in the calling request's profile, on sockets with its priority (`SO_PRIORITY`, DSCP), limited per class |
//! | `accept` | [`serve`]/[`serve_with`]: the accept loop on hyper-util's auto builder (HTTP/1.1 keep-alive and HTTP/2), connection limit, header-read timeout, body limit, graceful shutdown |
//!
//! The steps themselves live in [`crate::engine`] and [`crate::policy`]; this module only turns HTTP
//! into their plain inputs and their decisions back into HTTP.

mod accept;
mod classify;
pub mod client;
mod layer;

pub use accept::{serve, serve_with, Serve};
pub use classify::{Classifier, MatchedPathClassifier};
pub(crate) use layer::bind_current;
pub use layer::{LoopLayer, LoopService};
