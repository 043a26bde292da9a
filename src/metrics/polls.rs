//! The executor's poll summary: how many polls ran, how long they took, and how long tasks waited
//! to be polled.

use std::fmt;

use pagegen_executor::clock::ClockSource;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::metrics::registry::{counter, family, seconds};
use crate::runtime::Handle;

/// The quantiles exported, as label values and fractions (1 = the largest value seen). Fixed, so
/// the series count is too; 0.999 is the deepest tail the histograms' 1 % resolution still ranks
/// meaningfully after a few thousand polls.
const QUANTILES: [(&str, f64); 5] = [
    ("0.5", 0.5),
    ("0.9", 0.9),
    ("0.99", 0.99),
    ("0.999", 0.999),
    ("1", 1.0),
];

/// Labels of the quantile gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Quantile {
    quantile: &'static str,
}

/// Labels of `pagegen_poll_clock_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Clock {
    source: &'static str,
}

/// Reads [`Handle::poll_summary`] (merging the workers' published histograms, off the hot path).
#[derive(Debug)]
pub(crate) struct PollCollector {
    handle: Handle,
}

impl PollCollector {
    pub(crate) fn new(handle: Handle) -> Self {
        PollCollector { handle }
    }
}

/// The quantiles of a histogram of `len` values read through `at` (its `value_at_quantile`), ns →
/// s; none for an empty histogram (an absent series, not a false 0). The histogram is passed as a
/// closure because its type is the executor's dependency, not this crate's.
fn quantiles(len: u64, at: impl Fn(f64) -> u64) -> Vec<(Quantile, ConstGauge<f64>)> {
    if len == 0 {
        return Vec::new();
    }
    QUANTILES
        .iter()
        .map(|&(label, q)| {
            (
                Quantile { quantile: label },
                ConstGauge::new(seconds(at(q))),
            )
        })
        .collect()
}

impl Collector for PollCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.handle.poll_summary();
        counter(
            &mut enc,
            "polls",
            "Task polls recorded by the executor's workers (published every 16384 polls and when \
             a worker goes idle).",
            s.polls,
        )?;
        counter(
            &mut enc,
            "long_polls",
            "Polls longer than 50 us, charged thread CPU time instead of wall time.",
            s.long_polls,
        )?;
        family(
            &mut enc,
            "poll_busy",
            "Time per poll since the runtime started, at fixed quantiles.",
            Some(Unit::Seconds),
            quantiles(s.busy_ns.len(), |q| s.busy_ns.value_at_quantile(q)),
        )?;
        family(
            &mut enc,
            "poll_scheduled_delay",
            "Delay from a task's wake (or spawn) to its poll since the runtime started, at fixed \
             quantiles.",
            Some(Unit::Seconds),
            quantiles(s.sched_delay_ns.len(), |q| {
                s.sched_delay_ns.value_at_quantile(q)
            }),
        )?;
        family(
            &mut enc,
            "poll_first_poll_delay",
            "Delay from a task's spawn to its first poll since the runtime started, at fixed \
             quantiles.",
            Some(Unit::Seconds),
            quantiles(s.first_poll_delay_ns.len(), |q| {
                s.first_poll_delay_ns.value_at_quantile(q)
            }),
        )?;
        if let Some(t) = self.handle.tokio_metrics() {
            // What libraries `tokio::spawn`ed: it runs beside pagegen, outside its classes.
            let busy: u64 = (0..t.num_workers())
                .map(|w| t.worker_total_busy_duration(w).as_nanos() as u64)
                .sum();
            let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
                let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)
            };
            gauge(
                &mut enc,
                "tokio_workers",
                "Threads of the tokio compatibility runtime (timers, sockets, tokio::spawn).",
                t.num_workers() as i64,
            )?;
            gauge(
                &mut enc,
                "tokio_alive_tasks",
                "Tasks spawned with tokio::spawn (by libraries) and not yet finished.",
                t.num_alive_tasks() as i64,
            )?;
            gauge(
                &mut enc,
                "tokio_global_queue_depth",
                "tokio::spawned tasks waiting in the tokio runtime's global queue.",
                t.global_queue_depth() as i64,
            )?;
            let m = enc.encode_descriptor(
                "tokio_busy",
                "Time the tokio compatibility runtime's threads spent running tokio::spawned tasks                  and drivers.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            prometheus_client::metrics::counter::ConstCounter::new(seconds(busy)).encode(m)?;
        }
        let source = match s.clock {
            ClockSource::Tsc => "tsc",
            ClockSource::Instant => "instant",
        };
        let m = enc.encode_descriptor(
            "poll_clock",
            "The clock the poll figures are read from.",
            None,
            MetricType::Info,
        )?;
        Info::new(Clock { source }).encode(m)
    }
}
