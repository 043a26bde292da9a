//! Request-path cost of each predictor's `predict`, and completion-path cost of `observe`, side by
//! side with the per-class EWMA (the anchor: the cheapest predictor a runtime could use).
//!
//! `cargo bench --bench predict` (`PAGEGEN_BENCH_SMOKE=1` for a short run).
//!
//! Criterion reports each predictor's mean; the request path cares about the tail, so the run
//! ends with a per-call table: every call timed alone (`Instant` around it, interleaved round-robin
//! across the predictors so a noisy moment hits them all), p50 / p99 / p99.9 in ns. The static
//! predictor (a table lookup) and an empty timed call are the noise floor: a p99 at the floor is
//! the machine's, not the predictor's.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hdrhistogram::Histogram;
use pagegen_core::{ClassId, Clock, ProfileRecord, Usage, VirtualClock};
use pagegen_model::features::extract;
use pagegen_model::gate::Serving;
use pagegen_model::net::NetWeights;
use pagegen_model::rng::SplitMix;
use pagegen_model::{
    Deployed, DeployedConfig, EwmaPredictor, HistogramPredictor, Predictor, Prior,
    RecurrentPredictor, StaticPredictor,
};

const CLASSES: u32 = 16;

fn records(n: usize) -> Vec<ProfileRecord> {
    let mut rng = SplitMix::new(7);
    (0..n)
        .map(|i| {
            let class = ClassId::from_raw(1 + rng.below(CLASSES as usize) as u32);
            let size = 1 + rng.below(200);
            let mut u = Usage::default();
            u.cpu.cpu_ns = 50_000 * size as u64;
            u.mem.peak_net_bytes = 4096 * size as i64;
            let mut r = ProfileRecord::new(i as u64, class, u);
            r.features = extract(class, "/items", Some(&format!("size={size}")), 0, 6);
            r
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new());
    let cfg = DeployedConfig::default();
    let ewma = EwmaPredictor::new(cfg.ewma, Prior::default());
    let hist = HistogramPredictor::new(cfg.histogram, Prior::default(), clock.clone());
    let rec = RecurrentPredictor::new(
        cfg.recurrent,
        Prior::default(),
        clock.clone(),
        Arc::new(NetWeights::random(1)),
    );
    let deployed = Deployed::new(
        cfg,
        clock,
        Arc::new(NetWeights::random(1)),
        Serving::Recurrent,
    );
    let fixed = StaticPredictor::new(Prior::default());
    let warm = records(4096);
    let predictors: [&dyn Predictor; 5] = [&fixed, &ewma, &hist, &rec, &deployed];
    for r in &warm {
        for p in predictors {
            p.observe(r);
        }
    }
    rec.flush();
    deployed.recurrent().flush();

    let mut group = c.benchmark_group("predict");
    for p in predictors {
        let mut i = 0usize;
        group.bench_function(p.name(), |b| {
            b.iter(|| {
                i = (i + 1) % warm.len();
                let r = &warm[i];
                black_box(p.predict(black_box(r.class), black_box(&r.features)))
            })
        });
    }
    group.finish();

    tail(&predictors, &warm);

    let mut group = c.benchmark_group("observe");
    for p in predictors {
        let mut i = 0usize;
        group.bench_function(p.name(), |b| {
            b.iter(|| {
                i = (i + 1) % warm.len();
                p.observe(black_box(&warm[i]))
            })
        });
    }
    group.finish();
}

/// Per-call latency of `predict`, each call timed alone (see the module docs).
fn tail(predictors: &[&dyn Predictor], warm: &[ProfileRecord]) {
    let calls = if std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some() {
        20_000
    } else {
        400_000
    };
    let new = || Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("bounds are valid");
    let mut empty = new();
    let mut hists: Vec<Histogram<u64>> = predictors.iter().map(|_| new()).collect();
    for i in 0..calls {
        let r = &warm[i % warm.len()];
        // The record into cache before any timing, so the first predictor timed does not pay
        // for its misses.
        black_box(r.features.0.iter().sum::<f32>() + r.class.raw() as f32);
        let t = std::time::Instant::now();
        black_box(r);
        empty.saturating_record(t.elapsed().as_nanos() as u64);
        for (p, h) in predictors.iter().zip(hists.iter_mut()) {
            let t = std::time::Instant::now();
            black_box(p.predict(black_box(r.class), black_box(&r.features)));
            h.saturating_record(t.elapsed().as_nanos() as u64);
        }
    }
    println!("\npredict per call ({calls} calls each, ns): p50 / p99 / p99.9");
    let row = |name: &str, h: &Histogram<u64>| {
        println!(
            "  {name:<10} {:>6} / {:>6} / {:>6}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    };
    row("(empty)", &empty);
    for (p, h) in predictors.iter().zip(&hists) {
        row(p.name(), h);
    }
}

fn config() -> Criterion {
    let smoke = std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some();
    let (warm, measure) = if smoke { (50, 200) } else { (500, 2000) };
    Criterion::default()
        .warm_up_time(Duration::from_millis(warm))
        .measurement_time(Duration::from_millis(measure))
        .sample_size(if smoke { 10 } else { 50 })
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
