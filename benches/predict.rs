//! Request-path cost of each predictor's `predict`, and completion-path cost of `observe`, side by
//! side with the per-class EWMA (the anchor: the cheapest predictor a runtime could use).
//!
//! `cargo bench --bench predict` (`PAGEGEN_BENCH_SMOKE=1` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pagegen_core::{ClassId, Clock, ProfileRecord, Usage, VirtualClock};
use pagegen_model::features::extract;
use pagegen_model::gate::Serving;
use pagegen_model::net::NetWeights;
use pagegen_model::rng::SplitMix;
use pagegen_model::{
    Deployed, DeployedConfig, EwmaPredictor, HistogramPredictor, Predictor, Prior,
    RecurrentPredictor,
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
    let warm = records(4096);
    let predictors: [&dyn Predictor; 4] = [&ewma, &hist, &rec, &deployed];
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
