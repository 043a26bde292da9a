//! The VPA-style decaying-histogram baseline.
//!
//! The idea is the Kubernetes Vertical Pod Autoscaler recommender's (`pkg/recommender/util/histogram.go`
//! and `decaying_histogram.go`): per class and resource a histogram of `ln(1 + v)` in buckets whose
//! bounds grow by a fixed ratio (5 % here, as VPA), where a sample added at time `t` weighs
//! `2^(t / half_life)` — so old samples fade without touching them — and the weights are rescaled when
//! they grow large. Central = the 50th percentile, upper = the 99th percentile plus a safety margin
//! (VPA's default margin is 15 %). Time comes from a [`Clock`], so tests step half-lives exactly.
//! A censored record is added only when it lies above the current median ("at least this much" can
//! only say something about the upper part of the distribution). A record that says nothing
//! (`target::vacuous`: shed before it ran) is skipped, and until a class has one uncensored record
//! its estimates are never below the prior's, as for the EWMA (benches/RESULTS.md, 2026-12-08).
//!
//! # Percentiles without rescanning (completion-path cost)
//!
//! A percentile is the first bucket where the running sum of the weights, added in bucket order in
//! `f32`, reaches `q` of the total. Every observation publishes both percentiles, exactly as a full
//! scan from bucket 0 would compute them — same additions in the same order, so the same bits — but
//! without the full scan:
//! - **one pass** finds the median and the upper percentile together (the second is never left of the
//!   first), and the percentiles of the last publication are kept, so a censored record reads the
//!   median it is compared against instead of scanning for it, and a resource it does not enter
//!   republishes what it had;
//! - **checkpoints**: the running sum at every multiple of `BLOCK` buckets is kept from the last
//!   pass. Adding weight to bucket `b` changes only the sums past `b`, and the total only grows, so
//!   no bucket left of both `b` and the previous median can become the median: the pass restarts at
//!   the last checkpoint at or before both, with the kept sum, and ends at the upper percentile. A
//!   steady class costs the buckets between its median and its 99th percentile plus part of a block
//!   (~10–40 here) instead of three scans from bucket 0 (~200 each for a 20 µs route).
//!
//! A rescale multiplies every weight, so it drops the checkpoints and recomputes the percentiles from
//! bucket 0 (once per ~20 half-lives).

use std::sync::{Arc, Mutex};

use pagegen_core::{ClassId, Clock, Demand, Features, ProfileRecord};

use crate::predictor::Predictor;
use crate::published::{Prior, Published};
use crate::table::ClassTable;
use crate::target::{targets, vacuous, Targets, RESOURCES, UPPER_QUANTILE, Y_MAX};

/// Bucket width in log space: `ln(1.05)`, VPA's 5 % bucket growth.
const BUCKET: f32 = 0.048_79;
const BUCKETS: usize = (Y_MAX / BUCKET) as usize + 1;
/// Buckets per running-sum checkpoint (see the module docs). 16: a pass starts on average half a
/// block before where it has to, and 46 checkpoints per resource are cheap to keep. In
/// `examples/record_cost.rs` 8, 16 and 32 were within this machine's noise of each other (~230–330 ns
/// per observation), 64 slower (~330–350 ns).
const BLOCK: usize = 16;
const BLOCKS: usize = BUCKETS.div_ceil(BLOCK);
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

/// One resource's histogram and what the last pass over it found (see the module docs).
struct Hist {
    weights: [f32; BUCKETS],
    total: f32,
    /// `sums[k]`: the running sum of `weights[..k * BLOCK]`, valid for `k <= valid`.
    sums: [f32; BLOCKS],
    valid: usize,
    /// Bucket of the median (`BUCKETS` when no bucket reached it, 0 before any weight).
    median_at: usize,
    /// The percentiles (bucket upper bounds) of the current weights; 0 while `total` is 0.
    median: f32,
    upper: f32,
}

impl Hist {
    fn new() -> Self {
        Hist {
            weights: [0.0; BUCKETS],
            total: 0.0,
            sums: [0.0; BLOCKS],
            valid: 0,
            median_at: 0,
            median: 0.0,
            upper: 0.0,
        }
    }

    fn add(&mut self, b: usize, weight: f32) {
        self.weights[b] += weight;
        self.total += weight;
        // The checkpoint at `k * BLOCK` sums the buckets below it: those at or before `b` keep.
        self.valid = self.valid.min(b / BLOCK);
        self.update(b.min(self.median_at));
    }

    fn scale(&mut self, s: f32) {
        self.weights.iter_mut().for_each(|x| *x *= s);
        self.total *= s;
        self.valid = 0;
        self.update(0);
    }

    /// Recomputes the percentiles, knowing neither can lie left of bucket `from`.
    fn update(&mut self, from: usize) {
        if self.total <= 0.0 {
            // `total` is never negative: a histogram that lost all its weight to a rescale.
            (self.median_at, self.median, self.upper) = (0, 0.0, 0.0);
            return;
        }
        let (t_median, t_upper) = (self.total * 0.5, self.total * UPPER_QUANTILE);
        let k0 = (from / BLOCK).min(self.valid);
        let mut acc = self.sums[k0];
        let mut median_at = None;
        for k in k0..BLOCKS {
            self.sums[k] = acc;
            self.valid = self.valid.max(k);
            let start = k * BLOCK;
            for (i, &x) in self.weights[start..].iter().take(BLOCK).enumerate() {
                acc += x;
                // The same test as a scan from bucket 0 (`acc > 0`: a percentile sits on weight).
                if acc > 0.0 {
                    if median_at.is_none() && acc >= t_median {
                        median_at = Some(start + i);
                    }
                    if acc >= t_upper {
                        let m = median_at.unwrap_or(start + i);
                        self.median_at = m;
                        self.median = top(m);
                        self.upper = top(start + i);
                        return;
                    }
                }
            }
        }
        // Rounding can leave the running sum just short of `q` of the total: `Y_MAX`, as VPA's scan.
        self.median_at = median_at.unwrap_or(BUCKETS);
        self.median = median_at.map_or(Y_MAX, top);
        self.upper = Y_MAX;
    }
}

/// Upper bound (log space) of bucket `i`.
fn top(i: usize) -> f32 {
    (i + 1) as f32 * BUCKET
}

struct State {
    /// Time of weight 1.
    reference_ns: u64,
    /// Uncensored records seen (saturating).
    measured: u32,
    hists: [Hist; RESOURCES],
}

struct Slot {
    state: Mutex<Box<State>>,
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

    /// [`observe`](Predictor::observe) with the record's [`targets`] and the clock's reading
    /// already taken (by [`Deployed`](crate::Deployed), which shares both among its predictors).
    pub(crate) fn observe_at(&self, record: &ProfileRecord, y: &Targets, now: u64) {
        if vacuous(record, y) {
            return;
        }
        let Some(slot) = self.classes.get_or_init(record.class, || Slot {
            state: Mutex::new(Box::new(State {
                reference_ns: now,
                measured: 0,
                hists: std::array::from_fn(|_| Hist::new()),
            })),
            out: Published::default(),
        }) else {
            return;
        };
        let censored = record.censored();
        let mut guard = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut **guard;
        if !censored {
            st.measured = st.measured.saturating_add(1);
        }
        let half = self.config.half_life_ns.max(1) as f64;
        let mut weight = (now.saturating_sub(st.reference_ns) as f64 / half).exp2();
        if weight > RESCALE_AT {
            let scale = (1.0 / weight) as f32;
            st.hists.iter_mut().for_each(|h| h.scale(scale));
            st.reference_ns = now;
            weight = 1.0;
        }
        let weight = weight as f32;
        let margin = self.config.margin.max(0.0).ln_1p();
        let mut c = [0f32; RESOURCES];
        let mut u = [0f32; RESOURCES];
        for (r, h) in st.hists.iter_mut().enumerate() {
            if !censored || y[r] > h.median {
                h.add(bucket(y[r]), weight);
            }
            if h.total > 0.0 {
                // The bucket's midpoint as the central estimate; the upper bound of the percentile's
                // bucket plus the margin as the upper one (VPA rounds up the same way).
                c[r] = h.median - BUCKET / 2.0;
                u[r] = h.upper + margin;
            }
            if st.measured == 0 {
                self.prior.floor(r, &mut c[r], &mut u[r]);
            }
        }
        slot.out.store(&c, &u);
    }
}

fn bucket(y: f32) -> usize {
    ((y.clamp(0.0, Y_MAX) / BUCKET) as usize).min(BUCKETS - 1)
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
        self.observe_at(record, &targets(record), self.clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{Outcome, Usage, VirtualClock};
    use std::time::Duration;

    fn rec(mem: i64) -> ProfileRecord {
        let mut u = Usage::default();
        u.mem.peak_net_bytes = mem;
        ProfileRecord::new(0, ClassId::from_raw(1), u)
    }

    /// The scan this module replaced (three passes from bucket 0 per resource and observation),
    /// kept verbatim as the reference the incremental passes must match bit for bit.
    struct Reference {
        reference_ns: u64,
        weights: Vec<[f32; BUCKETS]>,
        total: Targets,
    }

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

    impl Reference {
        fn observe(
            &mut self,
            cfg: &HistogramConfig,
            y: &Targets,
            censored: bool,
            now: u64,
        ) -> (Targets, Targets) {
            let st = self;
            let half = cfg.half_life_ns.max(1) as f64;
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
            let margin = cfg.margin.max(0.0).ln_1p();
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
                    c[r] = percentile(&st.weights[r], total, 0.5) - BUCKET / 2.0;
                    u[r] = percentile(&st.weights[r], total, UPPER_QUANTILE) + margin;
                }
            }
            (c, u)
        }
    }

    #[test]
    fn incremental_percentiles_match_full_scans_bit_for_bit() {
        let clock = Arc::new(VirtualClock::new());
        let cfg = HistogramConfig {
            half_life_ns: 1_000_000_000,
            margin: 0.15,
        };
        let p = HistogramPredictor::new(cfg, Prior::default(), clock.clone());
        let published = Published::default();
        let mut reference = Reference {
            reference_ns: 0,
            weights: vec![[0f32; BUCKETS]; RESOURCES],
            total: [0.0; RESOURCES],
        };
        let mut rng = crate::rng::SplitMix::new(3);
        let class = ClassId::from_raw(1);
        for i in 0..20_000u64 {
            // Regimes: tight around a level, wide (zeros and outliers), and level shifts; time
            // steps from nothing to many half-lives (rescales, and weights that underflow to 0).
            let level = [9.0, 14.0, 3.0][(i / 2_000 % 3) as usize];
            let mut u = Usage::default();
            let v =
                |rng: &mut crate::rng::SplitMix, s: f64| (level + s * rng.normal()).exp() as u64;
            u.cpu.cpu_ns = v(&mut rng, 0.2);
            u.cpu.wall_ns = if rng.unit() < 0.1 {
                0
            } else {
                v(&mut rng, 2.0)
            };
            u.mem.peak_net_bytes = v(&mut rng, 0.05) as i64;
            u.io.read_bytes = if rng.unit() < 0.5 {
                0
            } else {
                v(&mut rng, 1.0)
            };
            u.io.ops[0] = rng.below(3) as u64;
            let mut r = ProfileRecord::new(i, class, u);
            if rng.unit() < 0.2 {
                r.outcome = Outcome::Shed;
            }
            let step = match rng.below(1000) {
                _ if i == 0 => 0,
                0 => 200_000_000_000,
                1..=5 => 25_000_000_000,
                6..=200 => rng.below(50_000_000),
                _ => 0,
            };
            clock.advance(Duration::from_nanos(step as u64));
            p.observe(&r);
            let (c, u) = reference.observe(&cfg, &targets(&r), r.censored(), clock.now());
            published.store(&c, &u);
            let got = p.classes.get(class).unwrap().out.load();
            assert_eq!(got, published.load(), "observation {i}");
        }
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

    #[test]
    fn a_class_known_only_from_below_is_never_predicted_under_the_prior() {
        let p = HistogramPredictor::new(
            HistogramConfig::default(),
            Prior::default(),
            Arc::new(VirtualClock::new()),
        );
        let prior = Prior::default().demand();
        let c = ClassId::from_raw(1);
        crate::predictor::testing::shed_before_running(&p, c, 20);
        assert!(p.classes.get(c).is_none(), "a shed request says nothing");
        // A lower bound alone: at least the prior.
        let mut cut = rec(2_000_000);
        cut.outcome = Outcome::Shed;
        p.observe(&cut);
        let d = p.predict(c, &Features::default());
        assert!(d.peak_bytes.central >= prior.peak_bytes.central, "{d:?}");
        assert!(d.cpu_ns.upper >= prior.cpu_ns.upper, "{d:?}");
        // Requests that ran to the end: the class's own measure.
        for _ in 0..50 {
            p.observe(&rec(4_096));
        }
        let d = p.predict(c, &Features::default());
        assert!(d.peak_bytes.central < prior.peak_bytes.central, "{d:?}");
    }
}
