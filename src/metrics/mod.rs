//! Prometheus metrics: what the request loop decided, per class, and how the runtime is doing,
//! served as text exposition on `GET /metrics` when the `metrics_addr` knob is set (off by default;
//! [`crate::config`]).
//!
//! One `prometheus_client` [`Registry`](prometheus_client::registry::Registry) per runtime, built
//! at startup by [`registry`] (no global registry). Every figure is **read at scrape time** by
//! collectors ([`prometheus_client::collector::Collector`]) from the counters and gauges the loop
//! keeps anyway ([`Decisions`](crate::policy::Decisions), [`Admission`](crate::policy::Admission),
//! the executor's pool sizes and poll summary, the deployed predictor), so serving metrics adds
//! nothing to the request path.
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `pagegen_decisions_total` | counter | `class`, `decision` ([`Decision::name`](crate::policy::Decision::name)) | [`Decisions::class`](crate::policy::Decisions::class) |
//! | `pagegen_outstanding_requests` | gauge | `class` | [`Admission::outstanding`](crate::policy::Admission::outstanding) |
//! | `pagegen_memory_pool_capacity_bytes`, `pagegen_memory_pool_reserved_bytes`, `pagegen_memory_pool_small_reserve_bytes` | gauge | — | the memory pool (the last: bytes only small budgets may take, `mem_reserve`) |
//! | `pagegen_pool_predicted_queue_delay_seconds` | gauge | `pool` | [`Admission::predicted_delay_ns`](crate::policy::Admission::predicted_delay_ns) |
//! | `pagegen_pool_configured_workers`, `pagegen_pool_active_workers`, `pagegen_pool_parked_workers` | gauge | `pool` | [`Handle::pool_size`](crate::runtime::Handle::pool_size) |
//! | `pagegen_refused_connections_total` | counter | — | [`Engine::refused_connections`](crate::engine::Engine::refused_connections) |
//! | `pagegen_predictor_serving` | gauge | `predictor` (`static`, `ewma`, `histogram`, `recurrent`: [`Serving::name`](pagegen_model::Serving::name)) | `Deployed::serving`: 1 for the predictor serving, 0 for the others |
//! | `pagegen_polls_total`, `pagegen_long_polls_total` | counter | — | [`PollSummary`](crate::runtime::PollSummary) |
//! | `pagegen_poll_busy_seconds`, `pagegen_poll_scheduled_delay_seconds`, `pagegen_poll_first_poll_delay_seconds` | gauge | `quantile` (0.5, 0.9, 0.99, 0.999, 1) | [`PollSummary`](crate::runtime::PollSummary) |
//! | `pagegen_request_cpu_seconds`, `pagegen_request_memory_bytes`, `pagegen_request_io_bytes` | histogram | `class`, `kind` (`actual`, `predicted`) | [`RequestHistograms`](crate::profile::histograms::RequestHistograms), fed by the recorder |
//! | `pagegen_grant_cpu_seconds`, `pagegen_grant_memory_bytes`, `pagegen_request_queue_delay_seconds` | histogram | `class` | same |
//! | `pagegen_predictor_score` | gauge | `predictor` | the last gate round's error of each predictor on recent records (lower is better; `recurrent` = the challenger, `champion` = the serving model's weights) |
//! | `pagegen_model_version` | gauge | — | weight replacements since start (0: as loaded) |
//! | `pagegen_span_calls_total`, `pagegen_span_seconds_total` | counter | `class`, `span` | [`crate::tracing::stats`] (spans closed inside requests, with [`crate::tracing::layer`] installed) |
//! | `pagegen_tokio_workers`, `pagegen_tokio_alive_tasks`, `pagegen_tokio_global_queue_depth` | gauge | — | the tokio compatibility runtime (what libraries `tokio::spawn`) |
//! | `pagegen_tokio_busy_seconds_total` | counter | — | its threads' busy time |
//! | `pagegen_poll_clock_info` | info | `source` (`tsc`, `instant`) | [`PollSummary`](crate::runtime::PollSummary) |
//!
//! **Cardinality** is bounded by the class registry: a class appears only once it has a non-zero
//! decision count or an outstanding request (requests that match no route share one class), each
//! with 17 `decision` values; pools and quantiles are fixed at startup.
//!
//! The poll quantiles are over everything published since the runtime started (the executor's
//! histograms are cumulative), not a rolling window.
//!
//! The endpoint itself ([`endpoint`]) runs on a thread of its own, not on a pagegen task; its
//! module docs say why.

mod capacity;
mod classes;
pub mod endpoint;
mod histograms;
mod polls;
mod predictor;
mod registry;
mod spans;

pub use endpoint::CONTENT_TYPE;
pub use registry::{encode, registry};
