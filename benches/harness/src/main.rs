//! `pagegen-bench`: an open-loop HTTP load harness for page-generation servers.
//!
//! It starts each runtime's server as a separate process, drives it over loopback with Poisson
//! arrivals from a workload mix, measures every request from its intended send time, finds each
//! runtime's capacity by bisection, sweeps the mixes at fractions of the reference capacity with
//! runtimes interleaved, and writes JSON, Markdown and SVG. See `benches/harness/README.md`.
#![deny(unsafe_code)]

mod args;
mod azure;
mod capacity;
mod cgroup;
mod chart;
mod client;
mod latency;
mod mix;
mod plan;
mod recovery;
mod report;
mod runner;
mod schedule;
mod server;
mod sys;

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::{
    args::Args,
    capacity::Objective,
    cgroup::Mechanism,
    mix::Workload,
    plan::{Plan, RecoveryPlan, TrainPlan},
    report::{Report, RunFacts},
    server::RuntimeSpec,
};

/// The runtimes file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimesFile {
    #[serde(rename = "runtime", default)]
    runtimes: Vec<RuntimeSpec>,
}

fn load_runtimes(a: &Args) -> Result<Vec<RuntimeSpec>> {
    let mut runtimes = Vec::new();
    let default = Path::new("benches/harness/runtimes.toml");
    let file = match (&a.config, a.runtime_cmds.is_empty()) {
        (Some(f), _) => Some(f.clone()),
        (None, true) => Some(default.to_path_buf()),
        (None, false) => None,
    };
    if let Some(file) = file {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading runtimes file {}", file.display()))?;
        let parsed: RuntimesFile =
            toml::from_str(&text).with_context(|| format!("runtimes file {}", file.display()))?;
        runtimes.extend(parsed.runtimes);
    }
    for spec in &a.runtime_cmds {
        let (name, cmd) = spec
            .split_once('=')
            .with_context(|| format!("--runtime {spec:?}: write NAME=COMMAND ARGS"))?;
        let cmd: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if name.is_empty() || cmd.is_empty() {
            bail!("--runtime {spec:?}: write NAME=COMMAND ARGS");
        }
        runtimes.push(RuntimeSpec {
            name: name.to_string(),
            cmd,
            env: Default::default(),
            train: None,
        });
    }
    if let Some(only) = &a.runtimes {
        let mut picked = Vec::new();
        for name in only {
            let rt = runtimes
                .iter()
                .find(|r| &r.name == name)
                .with_context(|| format!("--runtimes: no runtime named {name:?}"))?;
            picked.push(rt.clone());
        }
        runtimes = picked;
    }
    if runtimes.is_empty() {
        bail!("no runtimes: give --server-cmd, --runtime NAME=CMD or a runtimes file");
    }
    let mut names: Vec<&str> = runtimes.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != runtimes.len() {
        bail!("two runtimes have the same name");
    }
    Ok(runtimes)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(a) = Args::parse(argv.clone())? else {
        print!("{}", args::USAGE);
        return Ok(());
    };
    let started = Instant::now();
    let started_utc = report::utc_stamp(':');
    let cpu0 = sys::own_cpu_time();
    // The pool's connections plus the server's side of each, and room for files and pipes.
    let want = (a.pool_cap as u64).saturating_mul(2).saturating_add(256);
    let files = sys::raise_open_files(want);
    if files < want {
        eprintln!(
            "pagegen-bench: open-file limit {files} < {want} for --pool-cap {}: an overloaded phase may see connect errors",
            a.pool_cap
        );
    }

    let mut runtimes = load_runtimes(&a)?;
    if a.quick && a.runtimes.is_none() && runtimes.len() > 2 {
        // One or two runtimes in smoke mode: tokio and pagegen when the file has them.
        let mut keep: Vec<RuntimeSpec> = ["tokio", "pagegen"]
            .iter()
            .filter_map(|n| runtimes.iter().find(|r| r.name == *n).cloned())
            .collect();
        if keep.is_empty() {
            keep = runtimes[..2].to_vec();
        }
        runtimes = keep;
    }
    let reference = match &a.reference {
        Some(n) => runtimes
            .iter()
            .position(|r| &r.name == n)
            .with_context(|| format!("--reference: no runtime named {n:?}"))?,
        None => runtimes.iter().position(|r| r.name == "tokio").unwrap_or(0),
    };

    let quick = a.quick;
    let mix_names = a.mixes.clone().unwrap_or_else(|| {
        if quick {
            vec!["steady".into()]
        } else {
            ["steady", "bursts", "hog", "azure"]
                .map(String::from)
                .to_vec()
        }
    });
    let phase = Duration::from_secs_f64(a.phase_s.unwrap_or(if quick { 3.0 } else { 20.0 }));
    let warmup = Duration::from_secs_f64(a.warmup_s.unwrap_or(if quick { 1.0 } else { 3.0 }));
    let probe = Duration::from_secs_f64(a.probe_s.unwrap_or(if quick { 2.0 } else { 8.0 }));
    let data = a
        .data
        .clone()
        .or_else(|| std::env::var_os("PAGEGEN_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let longest = (warmup + phase.max(probe)).as_secs_f64();
    let mixes = mix::load_named(&a.mix_dir, &mix_names)?
        .into_iter()
        .map(|m| Workload::new(m, &data, longest))
        .collect::<Result<Vec<_>>>()?;
    let capacity_mix = Workload::new(
        mix::Mix::load(&a.mix_dir.join(format!("{}.toml", a.capacity_mix)))?,
        &data,
        longest,
    )?;

    let out = match &a.out {
        Some(o) => o.clone(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            target.join("pagegen-bench").join(report::utc_stamp('-'))
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let needs_limit = mixes.iter().any(|w| w.mix.memory_limit_mb.is_some());
    let mechanism = if needs_limit {
        cgroup::probe()
    } else {
        Mechanism::None
    };
    let mechanism_text = if needs_limit {
        mechanism.describe()
    } else {
        "not needed (no mix asked for a limit)".into()
    };

    let generators: Vec<String> = ["oha", "wrk2", "wrk", "vegeta", "h2load"]
        .iter()
        .filter_map(|g| find_in_path(g).map(|p| p.display().to_string()))
        .collect();
    let generators_text = if generators.is_empty() {
        "none on PATH (checked oha, wrk2, wrk, vegeta, h2load); see benches/harness/README.md"
            .into()
    } else {
        format!(
            "on PATH: {} (cross-check by hand, see benches/harness/README.md)",
            generators.join(", ")
        )
    };

    let loads = a.loads.clone().unwrap_or_else(|| {
        if quick {
            vec![50.0, 110.0]
        } else {
            vec![50.0, 70.0, 90.0, 110.0, 200.0]
        }
    });
    let repeats = a.repeats.unwrap_or(if quick { 1 } else { 3 });
    let recovery = a
        .recovery
        .unwrap_or(Some(if quick { (200.0, 50.0) } else { (200.0, 70.0) }))
        .map(|(over_pct, after_pct)| {
            let (over_s, after_s) =
                a.recovery_s
                    .unwrap_or(if quick { (1.0, 3.0) } else { (10.0, 20.0) });
            RecoveryPlan {
                over_pct,
                after_pct,
                over_s,
                after_s,
            }
        });
    let plan = Plan {
        reference,
        capacity_all: a.capacity_all.unwrap_or(!quick),
        capacity_override: a.capacity,
        capacity_start: a.capacity_start,
        capacity_max: a.capacity_max,
        bisect_steps: a.bisect_steps.unwrap_or(if quick { 3 } else { 5 }),
        objective: Objective {
            light_p99_ms: a.light_p99_ms,
            min_goodput: a.min_goodput,
        },
        loads,
        repeats,
        phase,
        warmup,
        probe,
        workers: a.workers,
        pool_cap: a.pool_cap,
        seed: a.seed,
        out: out.clone(),
        mechanism,
        memory_limit_override: a.memory_limit_mb,
        recovery,
        realtime: a.gen_realtime,
        train: Some(a.train_s.unwrap_or(if quick { 3.0 } else { 30.0 }))
            .filter(|&s| s > 0.0)
            .map(|seconds| TrainPlan {
                seconds,
                load_pct: a.train_load,
            }),
        mixes,
        capacity_mix,
        runtimes,
    };

    let phases = (plan.repeats
        * plan.mixes.len()
        * (plan.loads.len() + usize::from(plan.recovery.is_some()))
        * plan.runtimes.len()) as u64;
    let probes_estimate = if plan.capacity_override.is_some() {
        0
    } else {
        5 + plan.bisect_steps as u64
    } * if plan.capacity_all {
        plan.runtimes.len() as u64
    } else {
        1
    };
    let trainings = plan.train.map_or(0, |_| {
        plan.runtimes.iter().filter(|r| r.train.is_some()).count() * plan.mixes.len()
    }) as u64;
    let pb = ProgressBar::new(phases + probes_estimate + trainings);
    if std::io::stdout().is_terminal() {
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    plan::say(
        &pb,
        &format!(
            "pagegen-bench: {} runtime(s) [{}], mixes [{}], {}, loads {:?} %, {}, {} repeat(s), out {}; memory limits: {}",
            plan.runtimes.len(),
            plan.runtimes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
            mix_names.join(", "),
            match plan.train {
                Some(t) if trainings > 0 => format!(
                    "training {:.0} s per mix at {:.0} % for [{}]",
                    t.seconds,
                    t.load_pct,
                    plan.runtimes
                        .iter()
                        .filter(|r| r.train.is_some())
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => "no training".into(),
            },
            plan.loads,
            match plan.recovery {
                Some(r) => format!(
                    "recovery {:.0} % for {} s then {:.0} % for {} s",
                    r.over_pct, r.over_s, r.after_pct, r.after_s
                ),
                None => "no recovery runs".into(),
            },
            plan.repeats,
            out.display(),
            mechanism_text
        ),
    );

    for w in &plan.mixes {
        if let Some(note) = &w.note {
            plan::say(&pb, &format!("mix {}: {note}", w.mix.name));
        }
    }
    // The generator's receiving side runs on this thread (a current-thread runtime) and its
    // dispatcher on a thread of its own; both ask for real-time priority so that their lag does
    // not add to the latencies they measure. Servers started from here do not inherit it.
    let generator_priority = if plan.realtime {
        match sys::raise_thread_to_realtime() {
            Ok(()) => format!(
                "{} (servers and other threads at normal priority)",
                sys::thread_policy()
            ),
            Err(e) => {
                let text = format!("{} (real-time priority refused: {e})", sys::thread_policy());
                plan::say(&pb, &format!("generator priority: {text}"));
                text
            }
        }
    } else {
        format!("{} (--gen-priority normal)", sys::thread_policy())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the generator's runtime")?;
    let outcome = rt.block_on(plan.execute(&pb))?;
    pb.finish_and_clear();

    let summary = report::summarise(&outcome.phases);
    let facts = RunFacts {
        started_utc,
        finished_utc: report::utc_stamp(':'),
        command: std::iter::once("pagegen-bench".to_string())
            .chain(argv)
            .collect::<Vec<_>>()
            .join(" "),
        quick,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        memory_limit_mechanism: mechanism_text,
        independent_generators: generators_text,
        objective: plan.objective,
        generator_cpu_s: sys::own_cpu_time().saturating_sub(cpu0).as_secs_f64(),
        generator_priority,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let doc = Report {
        context: &facts,
        runtimes: &plan.runtimes,
        mixes: plan.mixes.iter().map(|w| &w.mix).collect(),
        mix_notes: plan
            .mixes
            .iter()
            .filter_map(|w| Some((w.mix.name.clone(), w.note.clone()?)))
            .collect(),
        summary: &summary,
        outcome: &outcome,
    };
    report::write_json(&out, &doc)?;
    let charts = chart::all(
        &out,
        &summary,
        &outcome.phases,
        &outcome.recoveries,
        plan.objective.light_p99_ms,
    )?;
    let md = report::markdown(&doc, &charts);
    std::fs::write(out.join("report.md"), &md)
        .with_context(|| format!("writing {}", out.join("report.md").display()))?;
    println!("{md}");
    println!(
        "report: {} (results.json, report.md, {} charts)",
        out.display(),
        charts.len()
    );
    Ok(())
}
