//! Per class: every decision the loop counted, and the requests admitted and not yet finished.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::engine::Engine;
use crate::metrics::registry::family;
use crate::policy::{ClassDecisions, Decision};

/// Labels of `pagegen_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassDecision {
    class: Arc<str>,
    decision: &'static str,
}

/// Labels of the per-class gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: Arc<str>,
}

/// Reads [`Decisions`](crate::policy::Decisions) and the admission controller's per-class load.
#[derive(Debug)]
pub(crate) struct ClassCollector {
    engine: Arc<Engine>,
}

impl ClassCollector {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        ClassCollector { engine }
    }

    /// The classes worth a series: registered in this run (names bounded by the registry) and
    /// with something to say (a non-zero count or an outstanding request).
    fn active(&self) -> Vec<(Arc<str>, ClassDecisions, u64)> {
        let decisions = self.engine.decisions();
        let admission = self.engine.admission();
        self.engine
            .registry()
            .classes()
            .into_iter()
            .filter_map(|(id, spec)| {
                let counts = decisions.class(id);
                let outstanding = admission.outstanding(id);
                (outstanding > 0 || counts.0.iter().any(|&c| c > 0)).then_some((
                    spec.name,
                    counts,
                    outstanding,
                ))
            })
            .collect()
    }
}

impl Collector for ClassCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let classes = self.active();
        family(
            &mut enc,
            "decisions",
            "Decisions and outcomes of the request loop, per class: admissions, sheds, \
             completions, failures, cancels, demotions, records.",
            None,
            classes.iter().flat_map(|(class, counts, _)| {
                Decision::ALL.iter().map(move |&d| {
                    let labels = ClassDecision {
                        class: class.clone(),
                        decision: d.name(),
                    };
                    (labels, ConstCounter::new(counts.get(d)))
                })
            }),
        )?;
        family(
            &mut enc,
            "outstanding_requests",
            "Requests admitted and not yet finished, per class.",
            None,
            classes.iter().map(|(class, _, n)| {
                let labels = Class {
                    class: class.clone(),
                };
                (labels, ConstGauge::new(*n))
            }),
        )
    }
}
