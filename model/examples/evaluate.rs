//! Evaluates every predictor on real traces and synthetic parameter-dependent routes.
//!
//! ```text
//! cargo run --release -p pagegen-model --example evaluate            # full: 60 trace minutes
//! cargo run --release -p pagegen-model --example evaluate -- --quick # smoke: 12 minutes, 50 functions
//! ```
//! (`PAGEGEN_EVAL_QUICK=1` also selects the smoke run.) Data: `../shared/data/` from the repository
//! root (override with `PAGEGEN_DATA`).
//!
//! Workloads, all generators fixed here before any model was tuned:
//! - **Azure Functions 2019** (`N_inv/N_run/N_mem.csv`, minutes 600–660 of day 1): each function is a
//!   class; per-minute invocations (capped at 60 per minute per function, spread uniformly in the
//!   minute) are the arrivals. Per request, a duration is drawn from the function's percentile CDF
//!   (piecewise log-linear between the 0/1/25/50/75/99/100 points) — those are percentiles of
//!   *per-minute averages*, so a per-request spread is added as a mean-preserving log-normal factor
//!   (σ = 0.3) — and rescaled ms → µs as CPU time (wall = 1.3 × CPU). Memory is drawn from the memory
//!   percentile CDF (1/5/25/50/75/95/99/100) and rescaled MB → KB; the oracle's upper bound is the
//!   CDF's 99th percentile.
//! - **Azure LLM code trace** (8,819 requests over an hour): class `/complete`, arrivals from the
//!   timestamps, `?ctx=<ContextTokens>&max_tokens=<GeneratedTokens>` as request features; demand
//!   CPU = 50 µs + 400 ns·ctx + 20 µs·gen, memory = 256 KiB + 2 KiB·(ctx + gen), each with log-normal
//!   noise (σ = 0.1 and 0.05).
//! - **Synthetic routes** (Poisson arrivals, 1/s each): `/search?q=<L words>` (CPU 300 µs + 150 µs·L,
//!   σ 0.15; memory 64 KiB + 8 KiB·L, σ 0.1), `/report/{year}` (CPU 2 ms·(year − 1998), σ 0.2; memory
//!   2 MiB + 1 MiB·(year − 2000), σ 0.1; 10 + 2·(year − 2000) I/O ops), `/items?page=P&size=S`
//!   (CPU 50 µs + 8 µs·S, σ 0.2; memory 32 KiB + 4 KiB·S, σ 0.05), `/` (CPU 200 µs, σ 0.2; memory
//!   16 KiB, σ 0.1).
//!
//! New classes: every fifth Azure function and `/items` first appear at the half-way point.
//! Metrics are taken over the second half. See model/README.md for the results and their reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pagegen_core::{ClassId, Clock, Features, ProfileRecord, RouteSpec, Usage, VirtualClock};
use pagegen_model::features::extract;
use pagegen_model::gate::Serving;
use pagegen_model::net::NetWeights;
use pagegen_model::rng::SplitMix;
use pagegen_model::trainer::thread_cpu_ns;
use pagegen_model::{
    Deployed, DeployedConfig, EwmaPredictor, HistogramPredictor, Predictor, ProfileStore,
    RecurrentPredictor, StaticPredictor, StoreConfig, Trainer, TrainerConfig,
};

const Z99: f64 = 2.326;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Group {
    /// Demand depends on request parameters.
    Param,
    /// Demand depends on the class only.
    Other,
}

struct Event {
    t_ns: u64,
    class: ClassId,
    features: Features,
    cpu_ns: u64,
    mem: u64,
    io_ops: u64,
    oracle_mem_p99: f64,
    group: Group,
    new_class: bool,
}

struct Classes {
    names: Vec<String>,
}

impl Classes {
    fn id(&mut self, name: &str) -> ClassId {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return ClassId::from_raw(i as u32 + 1);
        }
        self.names.push(name.to_string());
        ClassId::from_raw(self.names.len() as u32)
    }
}

fn lognormal(rng: &mut SplitMix, sigma: f64) -> f64 {
    // Mean-preserving: E[exp(σZ − σ²/2)] = 1.
    (sigma * rng.normal() - sigma * sigma / 2.0).exp()
}

/// Inverse CDF through `(p, value)` points, log-linear between them.
fn interp(points: &[(f64, f64)], u: f64) -> f64 {
    let u = u.clamp(points[0].0, points[points.len() - 1].0);
    for w in points.windows(2) {
        let ((p0, v0), (p1, v1)) = (w[0], w[1]);
        if u <= p1 {
            let f = if p1 > p0 { (u - p0) / (p1 - p0) } else { 0.0 };
            let (a, b) = (v0.max(1e-3).ln(), v1.max(1e-3).ln());
            return (a + f * (b - a)).exp();
        }
    }
    points[points.len() - 1].1
}

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .collect())
}

fn num(s: &str) -> Result<f64> {
    s.parse::<f64>()
        .with_context(|| format!("not a number: {s:?}"))
}

struct Setup {
    minutes: u64,
    functions: &'static str,
    first_minute: usize,
}

fn azure(
    data: &Path,
    s: &Setup,
    classes: &mut Classes,
    rng: &mut SplitMix,
    out: &mut Vec<Event>,
) -> Result<()> {
    let dir = data.join("azure-functions-2019");
    let inv = read_csv(&dir.join(format!("{}_inv.csv", s.functions)))?;
    let run: HashMap<String, Vec<String>> =
        read_csv(&dir.join(format!("{}_run.csv", s.functions)))?
            .into_iter()
            .map(|r| (r[0].clone(), r))
            .collect();
    let mem: HashMap<String, Vec<String>> =
        read_csv(&dir.join(format!("{}_mem.csv", s.functions)))?
            .into_iter()
            .map(|r| (r[0].clone(), r))
            .collect();
    let half = s.minutes * 60_000_000_000 / 2;
    for (fi, row) in inv.iter().enumerate() {
        let (Some(r), Some(m)) = (run.get(&row[0]), mem.get(&row[0])) else {
            continue;
        };
        // run: ... percentile_Average_{0,1,25,50,75,99,100} at columns 7..14.
        let ps = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0];
        let dur: Vec<(f64, f64)> = ps
            .iter()
            .zip(&r[7..14])
            .map(|(&p, v)| Ok((p, num(v)?)))
            .collect::<Result<_>>()?;
        // mem: AverageAllocatedMb_pct{1,5,25,50,75,95,99,100} at columns 4..12.
        let pm = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0];
        let mems: Vec<(f64, f64)> = pm
            .iter()
            .zip(&m[4..12])
            .map(|(&p, v)| Ok((p, num(v)?)))
            .collect::<Result<_>>()?;
        let oracle = interp(&mems, 0.99) * 1024.0;
        let name = format!("/fn/{fi}");
        let class = classes.id(&name);
        let features = extract(class, &name, None, 0, 8);
        let new_class = fi % 5 == 4;
        for minute in 0..s.minutes {
            let col = 3 + s.first_minute + minute as usize;
            let count = row.get(col).map(|v| num(v)).transpose()?.unwrap_or(0.0) as u64;
            for _ in 0..count.min(60) {
                let t_ns = minute * 60_000_000_000 + (rng.unit() * 60e9) as u64;
                if new_class && t_ns < half {
                    continue;
                }
                let d_ms = interp(&dur, rng.unit()) * lognormal(rng, 0.3);
                let mem_kb = interp(&mems, rng.unit()) * 1024.0;
                out.push(Event {
                    t_ns,
                    class,
                    features,
                    cpu_ns: (d_ms * 1000.0) as u64,
                    mem: mem_kb as u64,
                    io_ops: 0,
                    oracle_mem_p99: oracle,
                    group: Group::Other,
                    new_class,
                });
            }
        }
    }
    Ok(())
}

fn llm(
    data: &Path,
    s: &Setup,
    classes: &mut Classes,
    rng: &mut SplitMix,
    out: &mut Vec<Event>,
) -> Result<()> {
    let rows = read_csv(&data.join("azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv"))?;
    let class = classes.id("/complete");
    let seconds = |ts: &str| -> Result<f64> {
        let time = ts.split(' ').nth(1).context("timestamp without time")?;
        let mut it = time.split(':');
        let h = num(it.next().context("hour")?)?;
        let m = num(it.next().context("minute")?)?;
        let sec = num(it.next().context("second")?)?;
        Ok(h * 3600.0 + m * 60.0 + sec)
    };
    let t0 = seconds(&rows.first().context("empty LLM trace")?[0])?;
    let end = s.minutes as f64 * 60.0;
    for r in &rows {
        let t = seconds(&r[0])? - t0;
        if !(0.0..end).contains(&t) {
            continue;
        }
        let (ctx, gen) = (num(&r[1])?, num(&r[2])?);
        let q = format!("ctx={ctx}&max_tokens={gen}");
        let mem_median = 262_144.0 + 2048.0 * (ctx + gen);
        out.push(Event {
            t_ns: (t * 1e9) as u64,
            class,
            features: extract(class, "/complete", Some(&q), (ctx * 4.0) as u64, 6),
            cpu_ns: ((50_000.0 + 400.0 * ctx + 20_000.0 * gen) * lognormal(rng, 0.1)) as u64,
            mem: (mem_median * lognormal(rng, 0.05)) as u64,
            io_ops: 0,
            oracle_mem_p99: mem_median * (Z99 * 0.05 - 0.05 * 0.05 / 2.0).exp(),
            group: Group::Param,
            new_class: false,
        });
    }
    Ok(())
}

fn synthetic(s: &Setup, classes: &mut Classes, rng: &mut SplitMix, out: &mut Vec<Event>) {
    let end = s.minutes * 60_000_000_000;
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "rust", "page", "render",
    ];
    for route in 0..4 {
        let name = ["/search", "/report", "/items", "/"][route];
        let class = classes.id(name);
        let new_class = route == 2;
        let mut t = if new_class { end / 2 } else { 0 };
        loop {
            t += (-(1.0 - rng.unit()).ln() * 1e9) as u64;
            if t >= end {
                break;
            }
            let (path, query, cpu_med, cpu_s, mem_med, mem_s, io, group) = match route {
                0 => {
                    let l = 1 + rng.below(40);
                    let q: Vec<&str> = (0..l).map(|_| words[rng.below(words.len())]).collect();
                    let l = l as f64;
                    (
                        name.to_string(),
                        Some(format!("q={}", q.join("+"))),
                        300e3 + 150e3 * l,
                        0.15,
                        65_536.0 + 8192.0 * l,
                        0.1,
                        0,
                        Group::Param,
                    )
                }
                1 => {
                    let year = 2000 + rng.below(26) as u64;
                    let y = (year - 2000) as f64;
                    (
                        format!("/report/{year}"),
                        None,
                        2e6 * (y + 2.0),
                        0.2,
                        2_097_152.0 + 1_048_576.0 * y,
                        0.1,
                        10 + 2 * (year - 2000),
                        Group::Param,
                    )
                }
                2 => {
                    let size = [10u64, 20, 50, 100, 200][rng.below(5)];
                    let page = 1 + rng.below(20);
                    (
                        name.to_string(),
                        Some(format!("page={page}&size={size}")),
                        50e3 + 8e3 * size as f64,
                        0.2,
                        32_768.0 + 4096.0 * size as f64,
                        0.05,
                        0,
                        Group::Param,
                    )
                }
                _ => (
                    name.to_string(),
                    None,
                    200e3,
                    0.2,
                    16_384.0,
                    0.1,
                    0,
                    Group::Other,
                ),
            };
            // These generators use median-preserving noise (the formula is the median).
            out.push(Event {
                t_ns: t,
                class,
                features: extract(class, &path, query.as_deref(), 0, 5),
                cpu_ns: (cpu_med * (cpu_s * rng.normal()).exp()) as u64,
                mem: (mem_med * (mem_s * rng.normal()).exp()) as u64,
                io_ops: io,
                oracle_mem_p99: mem_med * (Z99 * mem_s).exp(),
                group,
                new_class,
            });
        }
    }
}

#[derive(Default)]
struct Tally {
    cpu_ape: Vec<f64>,
    under: usize,
    n: usize,
    slack: Vec<f64>,
    oracle_slack: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// Requests until a new class is learned: the first `n` from which the mean APE (each capped at
/// 100 %) of the next 5 requests is within 1.1× (+2 points) of the predictor's own mean capped APE
/// over the class's requests from 100 on. Classes with fewer than 120 requests are not counted.
fn requests_to_learn(apes: &[f64]) -> Option<usize> {
    if apes.len() < 120 {
        return None;
    }
    let capped: Vec<f64> = apes.iter().map(|a| a.min(1.0)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let steady = mean(&capped[100..]);
    (0..capped.len() - 5).find(|&n| mean(&capped[n..n + 5]) <= 1.1 * steady + 0.02)
}

fn main() -> Result<()> {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Single-threaded here, before any thread exists: the one safe moment to set it.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let verbose = std::env::args().any(|a| a == "--verbose");
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("PAGEGEN_EVAL_QUICK").is_some();
    let setup = if quick {
        Setup {
            minutes: 12,
            functions: "50",
            first_minute: 600,
        }
    } else {
        Setup {
            minutes: 60,
            functions: "200",
            first_minute: 600,
        }
    };
    let data = std::env::var_os("PAGEGEN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            root.join("../shared/data")
        });
    if !data.join("README.md").exists() {
        bail!("data not found at {} (set PAGEGEN_DATA)", data.display());
    }

    let mut rng = SplitMix::new(20_260_101);
    let mut classes = Classes { names: Vec::new() };
    let mut events = Vec::new();
    azure(&data, &setup, &mut classes, &mut rng, &mut events)?;
    llm(&data, &setup, &mut classes, &mut rng, &mut events)?;
    synthetic(&setup, &mut classes, &mut rng, &mut events);
    events.sort_by_key(|e| e.t_ns);
    let duration_ns = setup.minutes * 60_000_000_000;
    println!(
        "evaluate: {} mode, {} minutes, {} classes, {} requests, data {}",
        if quick { "quick" } else { "full" },
        setup.minutes,
        classes.names.len(),
        events.len(),
        data.display()
    );

    // Static annotation = what a developer who load-tested each route with 30 requests would write:
    // their median CPU and their largest memory (an informed annotation, not a strawman).
    let clock = Arc::new(VirtualClock::new());
    let prior = pagegen_model::Prior::default();
    let cfg = DeployedConfig::default();
    let fixed = StaticPredictor::new(prior);
    let mut per_class: HashMap<ClassId, (Vec<f64>, Vec<f64>)> = HashMap::new();
    for e in &events {
        let s = per_class.entry(e.class).or_default();
        if s.0.len() < 30 {
            s.0.push(e.cpu_ns as f64);
            s.1.push(e.mem as f64);
        }
    }
    let deployed = Deployed::new(
        cfg,
        clock.clone(),
        Arc::new(NetWeights::random(1)),
        Serving::Ewma,
    );
    for (c, (cpu, mem)) in per_class.iter_mut() {
        let route = RouteSpec {
            cpu: Some(std::time::Duration::from_nanos(median(cpu) as u64)),
            mem: Some(percentile(mem, 1.0) as u64),
            ..RouteSpec::default()
        };
        fixed.annotate(*c, &route);
        deployed.annotate(*c, &route);
    }
    let ewma = EwmaPredictor::new(cfg.ewma, prior);
    let hist = HistogramPredictor::new(cfg.histogram, prior, clock.clone());
    let raw = RecurrentPredictor::new(
        cfg.recurrent,
        prior,
        clock.clone(),
        Arc::new(NetWeights::random(1)),
    );
    let predictors: [&dyn Predictor; 5] = [&fixed, &ewma, &hist, &raw, &deployed];

    let tmp = tempfile::tempdir()?;
    let (mut store, _) = ProfileStore::open(tmp.path(), StoreConfig::default())?;
    let tcfg = TrainerConfig {
        steps: if quick { 60 } else { 500 },
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(tcfg, &NetWeights::random(1))?;
    let round_every = if quick {
        120_000_000_000
    } else {
        300_000_000_000
    };
    let mut next_round = round_every;
    let mut trainer_cpu = 0u64;
    let mut rounds = 0;
    let mut promotions = 0;

    let half = duration_ns / 2;
    let mut tallies: Vec<[Tally; 2]> = (0..predictors.len()).map(|_| Default::default()).collect();
    let mut learn: Vec<HashMap<ClassId, Vec<f64>>> = vec![HashMap::new(); predictors.len()];
    for (i, e) in events.iter().enumerate() {
        if e.t_ns > clock.now() {
            clock.set(e.t_ns);
        }
        while e.t_ns >= next_round {
            next_round += round_every;
            let before = thread_cpu_ns();
            let wall = Instant::now();
            deployed.recurrent().flush();
            raw.flush();
            let (records, _) = store.read_recent(tcfg.window * 2)?;
            let report = trainer.round(records, &deployed)?;
            if let Some(w) = &report.challenger {
                raw.set_weights(w.clone());
                raw.rebase_all();
            }
            let spent = match (before, thread_cpu_ns()) {
                (Some(a), Some(b)) => b - a,
                _ => wall.elapsed().as_nanos() as u64,
            };
            trainer_cpu += spent;
            rounds += 1;
            if let Some(d) = &report.decision {
                promotions += usize::from(d.promote);
                println!(
                    "  round {rounds:2} at {:3} min: {} train rows, loss {:.3}, challenger {:.3} champion {:.3} baselines {}, {} → serving {:?} ({:.2} s CPU)",
                    e.t_ns / 60_000_000_000,
                    report.train_rows,
                    report.train_loss,
                    d.challenger,
                    d.champion.unwrap_or(f32::NAN),
                    d.baselines.iter().map(|(k, s)| format!("{k:?}={s:.3}")).collect::<Vec<_>>().join(" "),
                    if d.promote { "promoted" } else { "kept" },
                    d.serve,
                    spent as f64 / 1e9
                );
            }
        }
        let mut usage = Usage::default();
        usage.cpu.cpu_ns = e.cpu_ns;
        usage.cpu.wall_ns = e.cpu_ns * 13 / 10;
        usage.mem.peak_net_bytes = e.mem as i64;
        usage.mem.alloc_bytes = e.mem;
        usage.io.ops[0] = e.io_ops;
        let mut record = ProfileRecord::new(i as u64, e.class, usage);
        record.started_unix_ms = e.t_ns / 1_000_000;
        record.features = e.features;
        for (k, p) in predictors.iter().enumerate() {
            let d = p.predict(e.class, &e.features);
            let ape = (d.cpu_ns.central as f64 - e.cpu_ns as f64).abs() / (e.cpu_ns.max(1) as f64);
            if e.new_class {
                learn[k].entry(e.class).or_default().push(ape);
            }
            if e.t_ns >= half {
                let t = &mut tallies[k][usize::from(e.group == Group::Other)];
                t.cpu_ape.push(ape);
                t.n += 1;
                t.under += usize::from(e.mem > d.peak_bytes.upper);
                let actual = e.mem.max(1) as f64;
                t.slack.push((d.peak_bytes.upper as f64 - actual) / actual);
                t.oracle_slack.push((e.oracle_mem_p99 - actual) / actual);
            }
            p.observe(&record);
        }
        store.append(&record)?;
    }

    // Request-path inference cost, measured per call after the replay (warm state).
    let sample: Vec<&Event> = events
        .iter()
        .step_by((events.len() / 20_000).max(1))
        .collect();
    let mut lat: Vec<Vec<f64>> = vec![Vec::with_capacity(sample.len()); predictors.len()];
    let mut sink = 0u64;
    for e in &sample {
        for (k, p) in predictors.iter().enumerate() {
            let t = Instant::now();
            let d = p.predict(e.class, &e.features);
            lat[k].push(t.elapsed().as_nanos() as f64);
            sink = sink.wrapping_add(d.cpu_ns.central);
        }
    }

    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    println!("\nprocess threads after training: {threads} (RAYON_NUM_THREADS={}; candle stayed on the calling thread if this is 1)", std::env::var("RAYON_NUM_THREADS").unwrap_or_default());
    println!("trainer: {rounds} rounds, {promotions} promotions, {:.2} s CPU over {} min of trace = {:.3} % of one core", trainer_cpu as f64 / 1e9, setup.minutes, 100.0 * trainer_cpu as f64 / duration_ns as f64);
    println!("\n| predictor | CPU MdAPE param | CPU MdAPE other | mem under-pred (upper) | mem slack − oracle slack (median, points) | requests to learn a new class (median) | predict p50 / p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (k, p) in predictors.iter().enumerate() {
        let [param, other] = &mut tallies[k];
        let under = (param.under + other.under) as f64 / (param.n + other.n).max(1) as f64;
        if verbose {
            for (g, t) in [("param", &mut *param), ("other", &mut *other)] {
                eprintln!(
                    "  {} {g}: under {:.2} %, slack {:.1} vs oracle {:.1}",
                    p.name(),
                    100.0 * t.under as f64 / t.n.max(1) as f64,
                    100.0 * median(&mut t.slack),
                    100.0 * median(&mut t.oracle_slack)
                );
            }
        }
        let mut slack: Vec<f64> = param.slack.iter().chain(&other.slack).copied().collect();
        let mut oslack: Vec<f64> = param
            .oracle_slack
            .iter()
            .chain(&other.oracle_slack)
            .copied()
            .collect();
        let mut learned: Vec<f64> = learn[k]
            .values()
            .filter_map(|a| requests_to_learn(a))
            .map(|n| n as f64)
            .collect();
        let n_learn = learned.len();
        println!(
            "| {} | {:.1} % | {:.1} % | {:.2} % | {:+.1} ({:.1} vs oracle {:.1}) | {} (over {} classes) | {:.0} ns / {:.0} ns |",
            p.name(),
            100.0 * median(&mut param.cpu_ape),
            100.0 * median(&mut other.cpu_ape),
            100.0 * under,
            100.0 * (median(&mut slack) - median(&mut oslack)),
            100.0 * median(&mut slack),
            100.0 * median(&mut oslack),
            median(&mut learned),
            n_learn,
            percentile(&mut lat[k], 0.5),
            percentile(&mut lat[k], 0.99),
        );
    }
    println!("\n(param = /search, /report, /items, /complete; other = Azure functions and /; metrics over the second half; checksum {})", sink % 10);
    Ok(())
}
