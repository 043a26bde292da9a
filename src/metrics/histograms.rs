//! Per class: predicted against actual CPU, memory and I/O, grant sizes and queueing delay, as
//! histograms ([`RequestHistograms`](crate::profile::histograms::RequestHistograms)).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::engine::Engine;
use crate::metrics::registry::family;
use crate::profile::histograms::ClassHistograms;

/// Labels of the predicted/actual families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassKind {
    class: Arc<str>,
    kind: &'static str,
}

/// Labels of the per-class families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: Arc<str>,
}

/// Reads the engine's [`RequestHistograms`](crate::profile::histograms::RequestHistograms).
#[derive(Debug)]
pub(crate) struct HistogramCollector {
    engine: Arc<Engine>,
}

impl HistogramCollector {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        HistogramCollector { engine }
    }
}

type Pick = fn(&ClassHistograms) -> &Histogram;

impl Collector for HistogramCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let registry = self.engine.registry();
        let rows: Vec<(Arc<str>, Arc<ClassHistograms>)> = self
            .engine
            .histograms()
            .snapshot()
            .into_iter()
            .filter_map(|(id, h)| Some((registry.spec(id)?.name, h)))
            .collect();
        let pairs: [(&str, &str, Unit, Pick, Pick); 3] = [
            (
                "request_cpu",
                "CPU time per request: used (kind=actual) and predicted before it ran \
                 (kind=predicted, the central estimate).",
                Unit::Seconds,
                |h| &h.cpu_actual,
                |h| &h.cpu_predicted,
            ),
            (
                "request_memory",
                "Peak net memory per request: used and predicted.",
                Unit::Bytes,
                |h| &h.mem_actual,
                |h| &h.mem_predicted,
            ),
            (
                "request_io",
                "File I/O bytes per request: used and predicted.",
                Unit::Bytes,
                |h| &h.io_actual,
                |h| &h.io_predicted,
            ),
        ];
        for (name, help, unit, actual, predicted) in pairs {
            family(
                &mut enc,
                name,
                help,
                Some(unit),
                rows.iter().flat_map(|(class, h)| {
                    [("actual", actual(h)), ("predicted", predicted(h))].map(|(kind, m)| {
                        (
                            ClassKind {
                                class: class.clone(),
                                kind,
                            },
                            m.clone(),
                        )
                    })
                }),
            )?;
        }
        let singles: [(&str, &str, Unit, Pick); 3] = [
            (
                "grant_cpu",
                "CPU budget granted per request (limited grants).",
                Unit::Seconds,
                |h| &h.grant_cpu,
            ),
            (
                "grant_memory",
                "Memory budget (hard limit) granted per request (limited grants).",
                Unit::Bytes,
                |h| &h.grant_mem,
            ),
            (
                "request_queue_delay",
                "Delay from admission to the handler's first poll per request.",
                Unit::Seconds,
                |h| &h.queue_delay,
            ),
        ];
        for (name, help, unit, pick) in singles {
            family(
                &mut enc,
                name,
                help,
                Some(unit),
                rows.iter().map(|(class, h)| {
                    (
                        Class {
                            class: class.clone(),
                        },
                        pick(h).clone(),
                    )
                }),
            )?;
        }
        Ok(())
    }
}
