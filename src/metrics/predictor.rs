//! Which predictor serves the request loop's predictions now.

use std::fmt;
use std::sync::Arc;

use pagegen_model::gate::Serving;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::engine::Engine;
use crate::metrics::registry::family;

/// Labels of `pagegen_predictor_serving`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Predictor {
    predictor: &'static str,
}

/// Reads `Deployed::serving`: one series per predictor, 1 for the one serving (the state-set
/// idiom: it changes at run time, so it is not an info metric).
#[derive(Debug)]
pub(crate) struct PredictorCollector {
    engine: Arc<Engine>,
}

impl PredictorCollector {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        PredictorCollector { engine }
    }
}

impl Collector for PredictorCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let deployed = self.engine.predictor();
        let serving = deployed.serving();
        if let Some(g) = deployed.last_gate() {
            let mut scores: Vec<(&'static str, f64)> = g
                .baselines
                .iter()
                .map(|&(s, v)| (s.name(), f64::from(v)))
                .collect();
            scores.push((Serving::Recurrent.name(), f64::from(g.challenger)));
            if let Some(c) = g.champion {
                scores.push(("champion", f64::from(c)));
            }
            family(
                &mut enc,
                "predictor_score",
                "The last gate round's error of each predictor on recent records (lower is \
                 better): the baselines, the recurrent challenger and the serving champion.",
                None,
                scores
                    .into_iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(name, v)| (Predictor { predictor: name }, ConstGauge::new(v))),
            )?;
        }
        let m = enc.encode_descriptor(
            "model_version",
            "Times the recurrent model's weights were replaced since the runtime started (0: as \
             loaded or fresh).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(deployed.recurrent().version() as i64).encode(m)?;
        family(
            &mut enc,
            "predictor_serving",
            "1 for the predictor that serves the request loop's predictions, 0 for the others.",
            None,
            Serving::ALL.iter().map(|&p| {
                let labels = Predictor {
                    predictor: p.name(),
                };
                (labels, ConstGauge::new(u64::from(p == serving)))
            }),
        )
    }
}
