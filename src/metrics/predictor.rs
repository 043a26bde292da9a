//! Which predictor serves the request loop's predictions now.

use std::fmt;
use std::sync::Arc;

use pagegen_model::gate::Serving;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::engine::Engine;
use crate::metrics::registry::family;

/// Every predictor the deployment can serve from, with its label value.
const PREDICTORS: [(Serving, &str); 4] = [
    (Serving::Static, "static"),
    (Serving::Ewma, "ewma"),
    (Serving::Histogram, "histogram"),
    (Serving::Recurrent, "recurrent"),
];

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
        let serving = self.engine.predictor().serving();
        family(
            &mut enc,
            "predictor_serving",
            "1 for the predictor that serves the request loop's predictions, 0 for the others.",
            None,
            PREDICTORS.iter().map(|&(p, name)| {
                let labels = Predictor { predictor: name };
                (labels, ConstGauge::new(u64::from(p == serving)))
            }),
        )
    }
}
