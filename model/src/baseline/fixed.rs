//! The static baseline: annotation values, unchanged by anything the runtime sees.

use std::sync::Mutex;

use pagegen_core::{ClassId, Demand, Features, ProfileRecord, RouteSpec};

use crate::predictor::Predictor;
use crate::published::{Prior, Published};
use crate::table::ClassTable;
use crate::target::{to_log, RESOURCES};

/// Upper estimate of an annotated value: twice the annotation (a developer's number is a typical
/// request, not a worst case; 2× is the headroom the DESIGN.md examples leave between `/search`'s
/// typical and heavy queries at the median of their range). Plucked from that example, not measured.
const UPPER_FACTOR: f64 = 2.0;

/// Serves each class's `#[pagegen::route(...)]` annotation; unannotated resources get the prior.
#[derive(Debug, Default)]
pub struct StaticPredictor {
    prior: Prior,
    classes: ClassTable<Published>,
    write: Mutex<()>,
}

impl StaticPredictor {
    /// A predictor with no annotations yet.
    pub fn new(prior: Prior) -> Self {
        StaticPredictor {
            prior,
            classes: ClassTable::new(),
            write: Mutex::new(()),
        }
    }
    /// Sets the annotation of a class (called when the class registers).
    pub fn annotate(&self, class: ClassId, route: &RouteSpec) {
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.prior.central;
        let mut u = self.prior.upper;
        let mut set = |i: usize, v: Option<f64>| {
            if let Some(v) = v {
                c[i] = to_log(v as u64);
                u[i] = to_log((v * UPPER_FACTOR) as u64);
            }
        };
        set(0, route.cpu.map(|d| d.as_nanos() as f64));
        set(1, route.timeout.map(|d| d.as_nanos() as f64 / UPPER_FACTOR));
        set(2, route.mem.map(|m| m as f64));
        set(3, route.io_ops.map(f64::from));
        debug_assert_eq!(c.len(), RESOURCES);
        if let Some(p) = self.classes.get_or_init(class, Published::default) {
            p.store(&c, &u);
        }
    }
}

impl Predictor for StaticPredictor {
    fn name(&self) -> &'static str {
        "static"
    }
    fn predict(&self, class: ClassId, _features: &Features) -> Demand {
        match self.classes.get(class) {
            Some(p) => p.demand(),
            None => self.prior.demand(),
        }
    }
    fn observe(&self, _record: &ProfileRecord) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn annotation_values_are_served() {
        let p = StaticPredictor::new(Prior::default());
        let c = ClassId::from_raw(2);
        p.annotate(
            c,
            &RouteSpec {
                cpu: Some(Duration::from_millis(3)),
                mem: Some(1 << 20),
                ..RouteSpec::default()
            },
        );
        let d = p.predict(c, &Features::default());
        assert!((d.cpu_ns.central as i64 - 3_000_000).abs() < 1000);
        assert!(d.cpu_ns.upper > 5_000_000);
        assert!((d.peak_bytes.central as i64 - (1 << 20)).abs() < 100);
        assert_eq!(
            p.predict(ClassId::from_raw(9), &Features::default()),
            Prior::default().demand()
        );
    }
}
