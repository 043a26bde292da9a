//! The runtime's one [`Registry`]: built once, holding only collectors (every figure is read at
//! scrape time), and the helpers the collectors share to write a metric family.

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::capacity::CapacityCollector;
use crate::metrics::classes::ClassCollector;
use crate::metrics::histograms::HistogramCollector;
use crate::metrics::polls::PollCollector;
use crate::metrics::predictor::PredictorCollector;
use crate::metrics::spans::SpanCollector;
use crate::runtime::Runtime;

/// Every metric name starts with this (`pagegen_decisions_total`).
pub(crate) const PREFIX: &str = "pagegen";

/// The registry of `rt`'s metrics (the module docs list them), to serve from the built-in
/// endpoint (`metrics_addr`) or from a route of your own through [`encode`].
pub fn registry(rt: &Runtime) -> Registry {
    let engine = rt.engine().clone();
    let handle = rt.handle();
    let pools = rt.pool_names().iter().map(|n| n.as_str().into()).collect();
    let mut r = Registry::with_prefix(PREFIX);
    r.register_collector(Box::new(ClassCollector::new(engine.clone())));
    r.register_collector(Box::new(CapacityCollector::new(
        engine.clone(),
        handle.clone(),
        pools,
    )));
    r.register_collector(Box::new(SpanCollector::new(engine.clone())));
    r.register_collector(Box::new(HistogramCollector::new(engine.clone())));
    r.register_collector(Box::new(PredictorCollector::new(engine)));
    r.register_collector(Box::new(PollCollector::new(handle)));
    r
}

/// The registry in OpenMetrics text exposition (served with
/// [`CONTENT_TYPE`](crate::metrics::CONTENT_TYPE)), ending in `# EOF`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Seconds from nanoseconds, the unit Prometheus expects for durations.
pub(crate) fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Writes one family: a descriptor, then one sample per label set (nothing when `samples` is
/// empty, as the registry does for an empty `Family`).
pub(crate) fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let ty = first.metric_type();
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), ty)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one unlabelled counter.
pub(crate) fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// Writes one unlabelled gauge.
pub(crate) fn gauge<N: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    v: N,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}
