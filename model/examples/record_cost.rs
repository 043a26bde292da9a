//! Cost of the completion path: ns per [`ModelRuntime::record`] for a steady stream of records.
//!
//! ```text
//! cargo run --release -p pagegen-model --example record_cost
//! cargo run --release -p pagegen-model --example record_cost -- --records 50000 --runs 3
//! ```
//!
//! Opens a `ModelRuntime` on a temp dir (real clock, default configuration) and times `record` over
//! 200,000 records (after 20,000 unmeasured), five times, reporting the median ns per record and the
//! spread. The records are four classes of a small web service in the proportions a trivial page
//! under load sees — `/` (70 %: ~25 µs CPU, ~12 KiB, no I/O), `/items?page&size` (15 %),
//! `/search?q` (10 %) and `/report/{year}` (5 %, with file I/O) — each with log-normal noise, and
//! 1 % shed (censored) records; a pool of 4,096 is drawn once with a fixed seed and cycled.
//!
//! Then the same stream through each part alone (the three learning predictors' `observe` and the
//! store's `append`), so a regression can be placed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use pagegen_core::{ClassId, Clock, Outcome, ProfileRecord, RealClock, Usage};
use pagegen_model::features::extract;
use pagegen_model::net::NetWeights;
use pagegen_model::rng::SplitMix;
use pagegen_model::{
    EwmaPredictor, HistogramPredictor, ModelConfig, ModelRuntime, Predictor, Prior, ProfileStore,
    RecurrentPredictor, StateDir, StoreConfig,
};

const POOL: usize = 4096;

fn records(seed: u64) -> Vec<ProfileRecord> {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(POOL);
    for i in 0..POOL {
        let pick = rng.unit();
        let noise = |rng: &mut SplitMix, s: f64| (s * rng.normal()).exp();
        let (class, path, query, cpu, mem, io_ops) = if pick < 0.70 {
            (1, "/".to_string(), None, 25_000.0, 12_288.0, 0)
        } else if pick < 0.85 {
            let size = 10 + rng.below(90);
            (
                2,
                "/items".to_string(),
                Some(format!("page={}&size={size}", 1 + rng.below(20))),
                50_000.0 + 8_000.0 * size as f64,
                32_768.0 + 4_096.0 * size as f64,
                0,
            )
        } else if pick < 0.95 {
            let words = 1 + rng.below(6);
            let q = vec!["word"; words].join("+");
            (
                3,
                "/search".to_string(),
                Some(format!("q={q}")),
                300_000.0 + 150_000.0 * words as f64,
                65_536.0 + 8_192.0 * words as f64,
                0,
            )
        } else {
            let year = 2001 + rng.below(24);
            (
                4,
                format!("/report/{year}"),
                None,
                2e6 * (year - 1998) as f64,
                2_097_152.0 + 1_048_576.0 * (year - 2000) as f64,
                10 + 2 * (year - 2000) as u64,
            )
        };
        let class = ClassId::from_raw(class);
        let mut u = Usage::default();
        u.cpu.cpu_ns = (cpu * noise(&mut rng, 0.2)) as u64;
        u.cpu.wall_ns = (1.3 * u.cpu.cpu_ns as f64 * noise(&mut rng, 0.1)) as u64;
        u.cpu.busy_ns = u.cpu.cpu_ns;
        u.cpu.polls = 2 + rng.below(4) as u64;
        u.mem.peak_net_bytes = (mem * noise(&mut rng, 0.1)) as i64;
        u.mem.alloc_bytes = 2 * u.mem.peak_net_bytes as u64;
        u.mem.freed_bytes = u.mem.alloc_bytes;
        u.io.ops[0] = io_ops;
        u.io.read_bytes = io_ops * 16_384;
        let mut r = ProfileRecord::new(i as u64, class, u);
        r.features = extract(class, &path, query.as_deref(), 0, 6);
        if rng.unit() < 0.01 {
            r.outcome = Outcome::Shed;
        }
        out.push(r);
    }
    out
}

/// Median and range of `runs` timings of `n` calls of `f` (after `warm` unmeasured ones), ns/call.
fn time(
    runs: usize,
    n: usize,
    warm: usize,
    pool: &[ProfileRecord],
    mut f: impl FnMut(&ProfileRecord),
) -> (f64, f64, f64) {
    for r in pool.iter().cycle().take(warm) {
        f(r);
    }
    let mut ns: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for r in pool.iter().cycle().take(n) {
                f(std::hint::black_box(r));
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    (ns[ns.len() / 2], ns[0], ns[ns.len() - 1])
}

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let n = arg("--records", 200_000)?;
    let runs = arg("--runs", 5)?.max(1);
    let warm = n / 10;
    let pool = records(7);
    let report = |what: &str, (med, lo, hi): (f64, f64, f64)| {
        println!("{what:<34} {med:>8.1} ns/record  (min {lo:.1}, max {hi:.1}; {runs} runs of {n})");
    };

    let tmp = tempfile::tempdir()?;
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let m = ModelRuntime::open(
        StateDir::open(tmp.path())?,
        clock.clone(),
        ModelConfig::default(),
    )?;
    report(
        "ModelRuntime::record",
        time(runs, n, warm, &pool, |r| m.record(r)),
    );
    drop(m);

    let prior = Prior::default();
    let d = ModelConfig::default().deployed;
    let ewma = EwmaPredictor::new(d.ewma, prior);
    report(
        "  EwmaPredictor::observe",
        time(runs, n, warm, &pool, |r| ewma.observe(r)),
    );
    let hist = HistogramPredictor::new(d.histogram, prior, clock.clone());
    report(
        "  HistogramPredictor::observe",
        time(runs, n, warm, &pool, |r| hist.observe(r)),
    );
    // A virtual clock that never moves would fold only once; the real one folds every 10 ms.
    let rec = RecurrentPredictor::new(d.recurrent, prior, clock, Arc::new(NetWeights::random(1)));
    report(
        "  RecurrentPredictor::observe",
        time(runs, n, warm, &pool, |r| rec.observe(r)),
    );
    let store_dir = tempfile::tempdir()?;
    let (mut store, _) = ProfileStore::open(store_dir.path(), StoreConfig::default())?;
    report(
        "  ProfileStore::append",
        time(runs, n, warm, &pool, |r| store.append(r).expect("append")),
    );
    Ok(())
}
