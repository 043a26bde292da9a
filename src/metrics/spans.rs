//! Per class and span name: the function-call profile of [`crate::tracing`].

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Unit;

use crate::engine::Engine;
use crate::metrics::registry::{family, seconds};

/// Labels of the span families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassSpan {
    class: Arc<str>,
    span: &'static str,
}

/// Reads [`crate::tracing::stats`] for the classes of one engine.
#[derive(Debug)]
pub(crate) struct SpanCollector {
    engine: Arc<Engine>,
}

impl SpanCollector {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        SpanCollector { engine }
    }
}

impl Collector for SpanCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let registry = self.engine.registry();
        let rows: Vec<_> = crate::tracing::stats()
            .snapshot()
            .into_iter()
            .filter_map(|(class, span, a)| {
                let name = registry.spec(class)?.name;
                Some((ClassSpan { class: name, span }, a))
            })
            .collect();
        family(
            &mut enc,
            "span_calls",
            "tracing spans closed inside requests, per class and span name.",
            None,
            rows.iter()
                .map(|(l, a)| (l.clone(), ConstCounter::new(a.calls))),
        )?;
        family(
            &mut enc,
            "span",
            "Busy time inside tracing spans of requests (entered to exited), per class and span name.",
            Some(Unit::Seconds),
            rows.iter()
                .map(|(l, a)| (l.clone(), ConstCounter::new(seconds(a.busy_ns)))),
        )
    }
}
