//! [`Deployed`]: the predictor the runtime calls — whichever of the recurrent champion and the
//! baselines the gate last chose, plus a little exploration.
//!
//! All four predictors observe every completion, so whichever the gate picks next is warm. Who serves
//! is one atomic byte and the champion's weights sit behind an `ArcSwap`: a swap never blocks a reader.
//!
//! Exploration: one request in [`ExploreConfig::every`] (counted per thread, so no shared counter is
//! touched on the request path) gets its upper estimates multiplied by [`ExploreConfig::factor`]. A
//! grant sized from an over-prediction is never exceeded, so without this an over-prediction would never
//! be corrected from below; with it, the occasional request shows what it uses with room to spare.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use pagegen_core::{
    ClassId, ClassObserver, ClassSpec, Clock, Demand, Features, ProfileRecord, Resource, RouteSpec,
};

use crate::baseline::{
    EwmaConfig, EwmaPredictor, HistogramConfig, HistogramPredictor, StaticPredictor,
};
use crate::gate::{Decision, Serving};
use crate::net::NetWeights;
use crate::predictor::Predictor;
use crate::published::Prior;
use crate::recurrent::{RecurrentConfig, RecurrentPredictor};
use crate::target::targets;

/// Exploration settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExploreConfig {
    /// One request in `every` explores (0 disables). 64: ~1.6 % of requests, a few per second at web
    /// rates — enough to correct a class within seconds, small against the memory headroom it costs.
    pub every: u32,
    /// Factor applied to the upper estimates of an exploring request (2×, plucked from thin air).
    pub factor: f64,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            every: 64,
            factor: 2.0,
        }
    }
}

thread_local! {
    static EXPLORE_COUNTER: Cell<u32> = const { Cell::new(0) };
}

/// Settings of a [`Deployed`] predictor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeployedConfig {
    /// What an unknown class gets.
    pub prior: Prior,
    /// EWMA baseline.
    pub ewma: EwmaConfig,
    /// Histogram baseline.
    pub histogram: HistogramConfig,
    /// Recurrent model serving.
    pub recurrent: RecurrentConfig,
    /// Exploration.
    pub explore: ExploreConfig,
    /// Pins who serves (`None`: the gate decides). A pinned deployment ignores
    /// [`Deployed::set_serving`] — gate rounds still score every predictor, but never hand serving
    /// over — so an operator (or a benchmark comparing predictors) gets exactly the one it named.
    pub pin: Option<Serving>,
}

/// The gated predictor.
#[derive(Debug)]
pub struct Deployed {
    config: DeployedConfig,
    fixed: StaticPredictor,
    ewma: EwmaPredictor,
    histogram: HistogramPredictor,
    recurrent: RecurrentPredictor,
    serving: AtomicU8,
    /// The last gate round's scores and decision.
    last_gate: Mutex<Option<Decision>>,
    /// The clock the histogram and the recurrent model read (read once per completion for both).
    clock: Arc<dyn Clock>,
}

impl Deployed {
    /// A deployment whose model starts from `weights`; `serving` says who serves until the first gate
    /// round (a loaded checkpoint: [`Serving::Recurrent`]; a fresh start: [`Serving::Ewma`]).
    pub fn new(
        config: DeployedConfig,
        clock: Arc<dyn Clock>,
        weights: Arc<NetWeights>,
        serving: Serving,
    ) -> Self {
        Deployed {
            config,
            fixed: StaticPredictor::new(config.prior),
            ewma: EwmaPredictor::new(config.ewma, config.prior),
            histogram: HistogramPredictor::new(config.histogram, config.prior, clock.clone()),
            recurrent: RecurrentPredictor::new(
                config.recurrent,
                config.prior,
                clock.clone(),
                weights,
            ),
            serving: AtomicU8::new(config.pin.unwrap_or(serving) as u8),
            last_gate: Mutex::new(None),
            clock,
        }
    }
    /// The settings.
    pub fn config(&self) -> &DeployedConfig {
        &self.config
    }
    /// Who serves now.
    pub fn serving(&self) -> Serving {
        Serving::from_u8(self.serving.load(Ordering::Acquire))
    }
    /// Changes who serves, unless [`DeployedConfig::pin`] names one (then this does nothing).
    pub fn set_serving(&self, s: Serving) {
        if self.config.pin.is_none() {
            self.serving.store(s as u8, Ordering::Release);
        }
    }
    /// Keeps a gate round's scores (each predictor's error on the round's recent records) and
    /// hands serving to its choice (unless pinned).
    pub fn gate_round(&self, decision: Decision) {
        self.set_serving(decision.serve);
        *self.last_gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(decision);
    }
    /// The last gate round's scores and decision (`None` before the first round).
    pub fn last_gate(&self) -> Option<Decision> {
        self.last_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Records a class's annotation (for the static baseline).
    pub fn annotate(&self, class: ClassId, route: &RouteSpec) {
        self.fixed.annotate(class, route);
    }
    /// The static baseline.
    pub fn fixed(&self) -> &StaticPredictor {
        &self.fixed
    }
    /// The recurrent model.
    pub fn recurrent(&self) -> &RecurrentPredictor {
        &self.recurrent
    }
    /// The serving predictor's prediction for a request, with who made it and whether it is one
    /// of the explored requests (one in [`ExploreConfig::every`], upper estimates widened by its
    /// factor): what the request's profile record keeps of its prediction.
    pub fn predict_served(&self, class: ClassId, features: &Features) -> Served {
        let by = self.serving();
        let mut demand = self.get(by).predict(class, features);
        let every = self.config.explore.every;
        let mut explored = false;
        if every > 0 {
            let n = EXPLORE_COUNTER.with(|c| {
                let n = c.get().wrapping_add(1);
                c.set(n);
                n
            });
            if n.is_multiple_of(every) {
                explored = true;
                for r in Resource::ALL {
                    let e = demand.get_mut(r);
                    let up = (e.upper as f64 * self.config.explore.factor).min(u64::MAX as f64);
                    e.upper = (up as u64).max(e.central);
                }
            }
        }
        Served {
            demand,
            by,
            explored,
        }
    }

    /// The predictor a [`Serving`] names.
    pub fn get(&self, s: Serving) -> &dyn Predictor {
        match s {
            Serving::Static => &self.fixed,
            Serving::Ewma => &self.ewma,
            Serving::Histogram => &self.histogram,
            Serving::Recurrent => &self.recurrent,
        }
    }
}

/// A prediction and where it came from ([`Deployed::predict_served`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Served {
    /// The prediction.
    pub demand: Demand,
    /// The predictor that made it.
    pub by: Serving,
    /// Whether its upper estimates were widened to explore.
    pub explored: bool,
}

impl Predictor for Deployed {
    fn name(&self) -> &'static str {
        "deployed"
    }
    fn predict(&self, class: ClassId, features: &Features) -> Demand {
        self.predict_served(class, features).demand
    }
    /// Every learning predictor observes the record, as its own `observe` would, with the record's
    /// log-space targets computed once and the clock read once for all of them.
    fn observe(&self, record: &ProfileRecord) {
        let y = targets(record);
        let now = self.clock.now();
        self.ewma.observe_targets(record, &y);
        self.histogram.observe_at(record, &y, now);
        self.recurrent.observe_at(record, &y, now);
    }
}

/// Registering a class with the runtime's [`ClassRegistry`](pagegen_core::ClassRegistry) hands its
/// annotation to the static baseline (idempotent, as the registry's contract asks).
impl ClassObserver for Deployed {
    fn class_registered(&self, id: ClassId, spec: &ClassSpec) {
        self.annotate(id, &spec.route);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassRegistry, VirtualClock};
    use std::time::Duration;

    fn deployed(every: u32) -> Deployed {
        let cfg = DeployedConfig {
            explore: ExploreConfig { every, factor: 2.0 },
            ..DeployedConfig::default()
        };
        Deployed::new(
            cfg,
            Arc::new(VirtualClock::new()),
            Arc::new(NetWeights::zeros()),
            Serving::Static,
        )
    }

    #[test]
    fn one_request_in_every_explores_with_a_larger_upper() {
        let d = deployed(4);
        let c = ClassId::from_raw(1);
        let base = d.fixed().predict(c, &Features::default());
        let uppers: Vec<u64> = (0..8)
            .map(|_| d.predict(c, &Features::default()).cpu_ns.upper)
            .collect();
        let explored = uppers
            .iter()
            .filter(|&&u| u == base.cpu_ns.upper * 2)
            .count();
        let plain = uppers.iter().filter(|&&u| u == base.cpu_ns.upper).count();
        assert_eq!((explored, plain), (2, 6), "{uppers:?}");
        let off = deployed(0);
        assert!((0..8).all(|_| off.predict(c, &Features::default()) == base));
    }

    #[test]
    fn a_served_prediction_names_its_predictor_and_its_exploration() {
        let d = deployed(4);
        let c = ClassId::from_raw(1);
        let base = d.fixed().predict(c, &Features::default());
        let served: Vec<Served> = (0..8)
            .map(|_| d.predict_served(c, &Features::default()))
            .collect();
        assert!(served.iter().all(|s| s.by == Serving::Static));
        for s in &served {
            let widened = s.demand.cpu_ns.upper == base.cpu_ns.upper * 2;
            assert_eq!(s.explored, widened, "{s:?}");
        }
        assert_eq!(served.iter().filter(|s| s.explored).count(), 2);
        d.set_serving(Serving::Ewma);
        let s = d.predict_served(c, &Features::default());
        assert_eq!(s.by, Serving::Ewma);
        assert_eq!(
            s.demand,
            d.get(Serving::Ewma).predict(c, &Features::default()),
            "the ninth request is not explored"
        );
    }

    #[test]
    fn a_pinned_deployment_serves_what_it_names_whatever_the_gate_says() {
        let cfg = DeployedConfig {
            pin: Some(Serving::Ewma),
            ..DeployedConfig::default()
        };
        let d = Deployed::new(
            cfg,
            Arc::new(VirtualClock::new()),
            Arc::new(NetWeights::zeros()),
            Serving::Recurrent,
        );
        assert_eq!(d.serving(), Serving::Ewma);
        d.set_serving(Serving::Recurrent);
        assert_eq!(d.serving(), Serving::Ewma);
        // A gate round's scores are kept for the metrics; its hand-over is ignored under a pin.
        assert_eq!(d.last_gate(), None);
        let round = crate::gate::decide(0.5, None, &[(Serving::Ewma, 0.9)]);
        d.gate_round(round.clone());
        assert_eq!(d.last_gate(), Some(round));
        assert_eq!(d.serving(), Serving::Ewma);
        let free = deployed(0);
        free.set_serving(Serving::Histogram);
        assert_eq!(free.serving(), Serving::Histogram);
    }

    #[test]
    fn registry_annotations_reach_the_static_baseline() {
        let d = Arc::new(deployed(0));
        let reg = ClassRegistry::in_memory();
        reg.subscribe(d.clone());
        let spec = ClassSpec::new("GET /report").with_route(RouteSpec {
            cpu: Some(Duration::from_millis(7)),
            ..RouteSpec::default()
        });
        let id = reg.register(spec).unwrap();
        let p = d.predict(id, &Features::default());
        assert!(
            (p.cpu_ns.central as i64 - 7_000_000).abs() < 10_000,
            "{p:?}"
        );
    }
}
