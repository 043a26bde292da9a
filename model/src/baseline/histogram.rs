//! The VPA-style decaying-histogram baseline.
//!
//! The idea is the Kubernetes Vertical Pod Autoscaler recommender's (`pkg/recommender/util/histogram.go`
//! and `decaying_histogram.go`): per class and resource a histogram of `ln(1 + v)` in buckets whose
//! bounds grow by a fixed ratio (5 % here, as VPA), where a sample added at time `t` weighs
//! `2^(t / half_life)` — so old samples fade without touching them — and the weights are rescaled when
//! they grow large. Central = the 50th percentile, upper = the 99th percentile plus a safety margin
//! (VPA's default margin is 15 %). Time comes from a [`Clock`], so tests step half-lives exactly.
//! A censored record is added only when it lies above the current median ("at least this much" can
//! only say something about the upper part of the distribution).

use std::sync::{Arc, Mutex};

use pagegen_core::{ClassId, Clock, Demand, Features, ProfileRecord};

use crate::predictor::Predictor;
use crate::published::{Prior, Published};
use crate::table::ClassTable;
use crate::target::{targets, Targets, RESOURCES, UPPER_QUANTILE, Y_MAX};

/// Bucket width in log space: `ln(1.05)`, VPA's 5 % bucket growth.
const BUCKET: f32 = 0.048_79;
const BUCKETS: usize = (Y_MAX / BUCKET) as usize + 1;
/// Weights are rescaled when the newest sample's weight passes this (f32 keeps 7 digits: old samples
/// at 1e-6 of the newest are noise by then anyway).
const RESCALE_AT: f64 = 1e6;

/// Histogram settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramConfig {
    /// Time for a sample's weight to halve, ns.
    pub half_life_ns: u64,
    /// Safety margin added to the upper percentile, as a fraction (0.15 = +15 %).
    pub margin: f32,
}

impl Default for HistogramConfig {
    fn default() -> Self {
        // VPA uses a 24 h half-life for pod-lifetime resources; requests of a web route change with
        // deploys and traffic mix within minutes, so 10 minutes (plucked from thin air; the
        // evaluation reports how it fares). Margin: VPA's default 15 %.
        HistogramConfig {
            half_life_ns: 600_000_000_000,
            margin: 0.15,
        }
    }
}

struct State {
    /// Time of weight 1.
    reference_ns: u64,
    weights: Vec<[f32; BUCKETS]>,
    total: Targets,
}

struct Slot {
    state: Mutex<State>,
    out: Published,
}

/// Per-class decaying histograms of log demand.
pub struct HistogramPredictor {
    config: HistogramConfig,
    prior: Prior,
    clock: Arc<dyn Clock>,
    classes: ClassTable<Slot>,
}

impl std::fmt::Debug for HistogramPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramPredictor")
            .field("config", &self.config)
            .field("classes", &self.classes)
            .finish()
    }
}

impl HistogramPredictor {
    /// A predictor that has seen nothing, reading time from `clock`.
    pub fn new(config: HistogramConfig, prior: Prior, clock: Arc<dyn Clock>) -> Self {
        HistogramPredictor {
            config,
            prior,
            clock,
            classes: ClassTable::new(),
        }
    }
}

fn bucket(y: f32) -> usize {
    ((y.clamp(0.0, Y_MAX) / BUCKET) as usize).min(BUCKETS - 1)
}

/// Upper bound (log space) of the bucket where the cumulative weight reaches `q` of the total.
fn percentile(w: &[f32; BUCKETS], total: f32, q: f32) -> f32 {
    let target = total * q;
    let mut acc = 0.0;
    for (i, &x) in w.iter().enumerate() {
        acc += x;
        if acc >= target && acc > 0.0 {
            return (i + 1) as f32 * BUCKET;
        }
    }
    Y_MAX
}

impl Predictor for HistogramPredictor {
    fn name(&self) -> &'static str {
        "histogram"
    }
    fn predict(&self, class: ClassId, _features: &Features) -> Demand {
        match self.classes.get(class) {
            Some(s) => s.out.demand(),
            None => self.prior.demand(),
        }
    }
    fn observe(&self, record: &ProfileRecord) {
        let now = self.clock.now();
        let Some(slot) = self.classes.get_or_init(record.class, || Slot {
            state: Mutex::new(State {
                reference_ns: now,
                weights: vec![[0f32; BUCKETS]; RESOURCES],
                total: [0.0; RESOURCES],
            }),
            out: Published::default(),
        }) else {
            return;
        };
        let y = targets(record);
        let censored = record.censored();
        let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let half = self.config.half_life_ns.max(1) as f64;
        let mut weight = (now.saturating_sub(st.reference_ns) as f64 / half).exp2();
        if weight > RESCALE_AT {
            let scale = (1.0 / weight) as f32;
            for r in 0..RESOURCES {
                st.weights[r].iter_mut().for_each(|x| *x *= scale);
                st.total[r] *= scale;
            }
            st.reference_ns = now;
            weight = 1.0;
        }
        let weight = weight as f32;
        let margin = self.config.margin.max(0.0).ln_1p();
        let mut c = [0f32; RESOURCES];
        let mut u = [0f32; RESOURCES];
        for r in 0..RESOURCES {
            let median = if st.total[r] > 0.0 {
                percentile(&st.weights[r], st.total[r], 0.5)
            } else {
                0.0
            };
            if !censored || y[r] > median {
                st.weights[r][bucket(y[r])] += weight;
                st.total[r] += weight;
            }
            let total = st.total[r];
            if total > 0.0 {
                // The bucket's midpoint as the central estimate; the upper bound of the percentile's
                // bucket plus the margin as the upper one (VPA rounds up the same way).
                c[r] = percentile(&st.weights[r], total, 0.5) - BUCKET / 2.0;
                u[r] = percentile(&st.weights[r], total, UPPER_QUANTILE) + margin;
            }
        }
        slot.out.store(&c, &u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{Usage, VirtualClock};
    use std::time::Duration;

    fn rec(mem: i64) -> ProfileRecord {
        let mut u = Usage::default();
        u.mem.peak_net_bytes = mem;
        ProfileRecord::new(0, ClassId::from_raw(1), u)
    }

    #[test]
    fn upper_percentile_covers_and_old_samples_fade() {
        let clock = Arc::new(VirtualClock::new());
        let cfg = HistogramConfig {
            half_life_ns: 1_000_000_000,
            margin: 0.15,
        };
        let p = HistogramPredictor::new(cfg, Prior::default(), clock.clone());
        for i in 0..1000i64 {
            p.observe(&rec(1_000_000 + i * 1000));
        }
        let d = p.predict(ClassId::from_raw(1), &Features::default());
        assert!(d.peak_bytes.upper >= 1_990_000, "{d:?}");
        assert!(d.peak_bytes.central > 1_400_000 && d.peak_bytes.central < 1_600_000);
        // Sixty half-lives later, a few new samples outweigh a thousand old ones (and the rescale
        // path runs).
        clock.advance(Duration::from_secs(60));
        for _ in 0..10 {
            p.observe(&rec(100_000));
        }
        let d = p.predict(ClassId::from_raw(1), &Features::default());
        assert!(d.peak_bytes.upper < 130_000, "{d:?}");
    }
}
