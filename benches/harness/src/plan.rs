//! The experiment: capacity searches, then every mix at every load point for every runtime,
//! runtimes interleaved (A, B, A, B…) inside each load point and the whole sweep repeated, each
//! phase on a freshly started server (state kept per runtime across phases, as a deployment
//! keeps it across restarts).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::{
    capacity::{Objective, Search},
    cgroup::{Mechanism, MemoryCgroup},
    mix::Workload,
    recovery::{self, Recovery},
    runner::{self, RunResult, RunSpec},
    schedule::Episode,
    server::{self, RuntimeSpec, Server, ServerEnd},
};

/// The lowest rate the capacity search tries, requests/s.
const MIN_RATE: f64 = 10.0;

/// Everything a run needs, resolved from the options.
#[derive(Debug)]
pub struct Plan {
    /// Runtimes, in interleaving order.
    pub runtimes: Vec<RuntimeSpec>,
    /// Index of the runtime whose capacity sets the load points.
    pub reference: usize,
    /// Mixes to sweep.
    pub mixes: Vec<Workload>,
    /// The mix capacities are searched with.
    pub capacity_mix: Workload,
    /// Load points, % of the reference capacity.
    pub loads: Vec<f64>,
    /// Sweep repeats.
    pub repeats: usize,
    /// Measured window per phase.
    pub phase: Duration,
    /// Warm-up per phase and probe.
    pub warmup: Duration,
    /// Measured window per capacity probe.
    pub probe: Duration,
    /// Bisection steps.
    pub bisect_steps: usize,
    /// First and highest rates of the search.
    pub capacity_start: f64,
    /// Highest rate the search tries.
    pub capacity_max: f64,
    /// Known reference capacity (skips its search).
    pub capacity_override: Option<f64>,
    /// Search every runtime's capacity.
    pub capacity_all: bool,
    /// The capacity objective.
    pub objective: Objective,
    /// `--workers` for the servers.
    pub workers: usize,
    /// Connection pool cap.
    pub pool_cap: usize,
    /// Base seed.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// How memory limits are applied (probed when a mix asks for one).
    pub mechanism: Mechanism,
    /// Overrides the mixes' memory limits, MiB.
    pub memory_limit_override: Option<u64>,
    /// Overload-then-normal runs, after the sweep.
    pub recovery: Option<RecoveryPlan>,
    /// The generator's dispatcher threads ask for real-time priority.
    pub realtime: bool,
    /// The training stage before the sweep (`None`: none).
    pub train: Option<TrainPlan>,
}

/// The training stage: for each runtime with a `train` entry, a load of every mix, then its
/// command (see [`RuntimeSpec::train`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TrainPlan {
    /// Seconds of load per mix.
    pub seconds: f64,
    /// Load, % of the reference capacity.
    pub load_pct: f64,
}

/// One mix's training load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainLoad {
    /// Mix name.
    pub mix: String,
    /// Offered rate, requests/s.
    pub rate: f64,
    /// Requests sent.
    pub scheduled: u64,
    /// Share answered 2xx.
    pub goodput: f64,
    /// How the server ended, or why the load could not run.
    pub server: String,
}

/// A runtime's training stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Runtime name.
    pub runtime: String,
    /// The loads, one per mix, in order.
    pub loads: Vec<TrainLoad>,
    /// The command run after them (absent: load only).
    pub command: Option<String>,
    /// Its exit status.
    pub status: Option<String>,
    /// Its standard output, line by line (what it learned; `pagegen train` prints the gate's
    /// scores).
    pub output: Vec<String>,
    /// Wall seconds the command took.
    pub command_s: f64,
}

/// An overload followed by normal load, to see how soon the light class's tail recovers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecoveryPlan {
    /// Load during the overload, % of the reference capacity.
    pub over_pct: f64,
    /// Load before (the warm-up) and after the overload, % of the reference capacity.
    pub after_pct: f64,
    /// Length of the overload, s.
    pub over_s: f64,
    /// Measured time after the overload, s.
    pub after_s: f64,
}

/// One overload-then-normal run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// Runtime name.
    pub runtime: String,
    /// Mix name.
    pub mix: String,
    /// Repeat index (0-based).
    pub repeat: usize,
    /// The loads and lengths.
    pub plan: RecoveryPlan,
    /// Offered rate during the overload, requests/s.
    pub over_rate: f64,
    /// Offered rate before and after it, requests/s.
    pub after_rate: f64,
    /// Memory limit the server ran in, MiB.
    pub memory_limit_mb: Option<u64>,
    /// The light class's recovery (absent when the server did not start).
    pub recovery: Option<Recovery>,
    /// Load figures over the whole measured window (overload and after).
    pub run: Option<RunResult>,
    /// How the server ended.
    pub server: Option<ServerEnd>,
    /// Why the run could not happen.
    pub error: Option<String>,
}

/// One capacity probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Offered rate.
    pub rate: f64,
    /// Objective met.
    pub pass: bool,
    /// Light p99, ms.
    pub light_p99_ms: f64,
    /// Goodput.
    pub goodput: f64,
    /// How the server ended.
    pub server: String,
}

/// A runtime's capacity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityResult {
    /// Runtime name.
    pub runtime: String,
    /// Highest passing rate, requests/s (0: none passed).
    pub capacity: f64,
    /// False when given with `--capacity`.
    pub searched: bool,
    /// The probes in order.
    pub probes: Vec<ProbeRecord>,
}

/// One phase: a runtime, a mix, a load point, a repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Runtime name.
    pub runtime: String,
    /// Mix name.
    pub mix: String,
    /// Repeat index (0-based).
    pub repeat: usize,
    /// Load, % of the reference capacity.
    pub load_pct: f64,
    /// Offered rate, requests/s.
    pub rate: f64,
    /// Memory limit the server ran in, MiB.
    pub memory_limit_mb: Option<u64>,
    /// Load figures (absent when the server did not start).
    pub run: Option<RunResult>,
    /// How the server ended.
    pub server: Option<ServerEnd>,
    /// Why the phase could not run.
    pub error: Option<String>,
}

/// Output of the whole plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Capacity per searched runtime (reference first).
    pub capacities: Vec<CapacityResult>,
    /// The reference capacity the load points are relative to.
    pub reference_capacity: f64,
    /// Set when the reference capacity is not a measured one (no rate met the objective).
    pub reference_note: Option<String>,
    /// Every phase in the order run.
    pub phases: Vec<PhaseRecord>,
    /// Overload-then-normal runs, in the order run.
    #[serde(default)]
    pub recoveries: Vec<RecoveryRecord>,
    /// Training stages, in the order run (before the sweep).
    #[serde(default)]
    pub trainings: Vec<TrainingRecord>,
}

/// Prints a line without breaking the progress bar (or to stderr when the bar is hidden).
pub fn say(pb: &ProgressBar, msg: &str) {
    if pb.is_hidden() {
        eprintln!("{msg}");
    } else {
        pb.println(msg);
    }
}

impl Plan {
    fn sample_every(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn limit_mb(&self, w: &Workload) -> Option<u64> {
        w.mix
            .memory_limit_mb
            .map(|m| self.memory_limit_override.unwrap_or(m))
    }

    /// Starts a server, runs the load, stops the server.
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &self,
        rt: &RuntimeSpec,
        workload: &Workload,
        rate: f64,
        measure: Duration,
        seed: u64,
        episode: Option<Episode>,
        label: &str,
        pb: &ProgressBar,
    ) -> Result<(RunResult, ServerEnd)> {
        let logs = self.out.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{label}.log"));
        let cgroup = match self.limit_mb(workload) {
            Some(mb) => MemoryCgroup::create(
                &self.mechanism,
                &format!("pagegen-bench-{}-{label}", std::process::id()),
                mb * 1024 * 1024,
            )?,
            None => None,
        };
        let mut server = Server::start(
            rt,
            &server::state_dir(&self.out, &rt.name),
            self.workers,
            &log,
            cgroup,
            Duration::from_secs(60),
            self.sample_every(),
        )
        .await?;
        let spec = RunSpec {
            rate,
            warmup: self.warmup,
            measure,
            seed,
            pool_cap: self.pool_cap,
            episode,
            realtime: self.realtime,
        };
        pb.set_message(label.to_string());
        let run = runner::run(workload, server.addr, spec, |_| pb.tick()).await;
        let early = server.exited();
        let end = server.stop(Duration::from_secs(15)).await;
        if early {
            say(
                pb,
                &format!("  {label}: server died during the run: {}", end.status),
            );
        }
        Ok((run, end))
    }

    async fn search(&self, idx: usize, pb: &ProgressBar) -> Result<CapacityResult> {
        let rt = &self.runtimes[idx];
        let mut search = Search::new(
            self.capacity_start,
            MIN_RATE,
            self.capacity_max,
            self.bisect_steps,
        );
        let mut probes = Vec::new();
        while let Some(rate) = search.next_rate() {
            let label = format!("capacity-{}-{:.0}rps", rt.name, rate);
            let (pass, record) = match self
                .measure(
                    rt,
                    &self.capacity_mix,
                    rate,
                    self.probe,
                    self.seed,
                    None,
                    &label,
                    pb,
                )
                .await
            {
                Ok((run, end)) => {
                    let pass = !end.died_early && self.objective.met(run.light_p99_ms, run.goodput);
                    (
                        pass,
                        ProbeRecord {
                            rate,
                            pass,
                            light_p99_ms: run.light_p99_ms,
                            goodput: run.goodput,
                            server: end.status,
                        },
                    )
                }
                // A server that cannot start at all (a wrong path, a bad flag) fails the run at
                // once rather than reading as "capacity 0".
                Err(e) if probes.is_empty() => return Err(e),
                Err(e) => (
                    false,
                    ProbeRecord {
                        rate,
                        pass: false,
                        light_p99_ms: f64::NAN,
                        goodput: 0.0,
                        server: format!("{e:#}"),
                    },
                ),
            };
            say(
                pb,
                &format!(
                    "  capacity {}: {:.0} req/s → light p99 {:.2} ms, goodput {:.2} % → {}",
                    rt.name,
                    rate,
                    record.light_p99_ms,
                    record.goodput * 100.0,
                    if pass { "pass" } else { "fail" }
                ),
            );
            probes.push(record);
            search.report(pass);
            pb.inc(1);
        }
        Ok(CapacityResult {
            runtime: rt.name.clone(),
            capacity: search.capacity(),
            searched: true,
            probes,
        })
    }

    /// Runs everything.
    pub async fn execute(&self, pb: &ProgressBar) -> Result<Outcome> {
        let mut capacities = Vec::new();
        let reference = match self.capacity_override {
            Some(c) => {
                capacities.push(CapacityResult {
                    runtime: self.runtimes[self.reference].name.clone(),
                    capacity: c,
                    searched: false,
                    probes: Vec::new(),
                });
                c
            }
            None => {
                let r = self.search(self.reference, pb).await?;
                let c = r.capacity;
                capacities.push(r);
                c
            }
        };
        say(
            pb,
            &format!(
                "reference capacity ({}): {reference:.0} req/s",
                self.runtimes[self.reference].name
            ),
        );
        let mut reference = reference;
        let mut reference_note = None;
        if reference <= 0.0 {
            // A noisy machine (or a slow server) can miss the objective everywhere; the sweep still
            // runs, relative to the search's floor, and the report says so instead of stopping.
            let note = format!(
                "{} met the objective at no rate down to {MIN_RATE} req/s; load points are relative to {MIN_RATE} req/s instead (server logs under {})",
                self.runtimes[self.reference].name,
                self.out.join("logs").display()
            );
            say(pb, &format!("warning: {note}"));
            reference = MIN_RATE;
            reference_note = Some(note);
        }
        if self.capacity_all {
            for i in (0..self.runtimes.len()).filter(|&i| i != self.reference) {
                capacities.push(self.search(i, pb).await?);
            }
        }

        let trainings = match self.train {
            Some(t) => self.train(t, reference, pb).await?,
            None => Vec::new(),
        };

        let mut phases = Vec::new();
        for repeat in 0..self.repeats {
            for w in &self.mixes {
                for (li, &load) in self.loads.iter().enumerate() {
                    let rate = reference * load / 100.0;
                    // Same schedule for every runtime at this point; a new one per repeat.
                    let seed = self.seed ^ ((repeat as u64) << 32) ^ ((li as u64) << 16);
                    for rt in &self.runtimes {
                        let label =
                            format!("{}-{}-{:.0}pct-r{}", w.mix.name, rt.name, load, repeat);
                        let mut record = PhaseRecord {
                            runtime: rt.name.clone(),
                            mix: w.mix.name.clone(),
                            repeat,
                            load_pct: load,
                            rate,
                            memory_limit_mb: self.limit_mb(w),
                            run: None,
                            server: None,
                            error: None,
                        };
                        match self
                            .measure(rt, w, rate, self.phase, seed, None, &label, pb)
                            .await
                        {
                            Ok((run, end)) => {
                                say(
                                    pb,
                                    &format!(
                                        "  {label}: {:.0} req/s, light p99 {:.2} ms, goodput {:.1} %, 503 {:.1} %, peak RSS {:.0} MiB, {}{}",
                                        rate,
                                        run.light_p99_ms,
                                        run.goodput * 100.0,
                                        run.shed_rate * 100.0,
                                        end.peak_rss_mb,
                                        end.status,
                                        if end.oom_killed { " (OOM-killed)" } else { "" }
                                    ),
                                );
                                record.run = Some(run);
                                record.server = Some(end);
                            }
                            Err(e) => {
                                say(pb, &format!("  {label}: {e:#}"));
                                record.error = Some(format!("{e:#}"));
                            }
                        }
                        phases.push(record);
                        pb.inc(1);
                    }
                }
            }
        }
        let recoveries = match self.recovery {
            Some(r) => self.recover(r, reference, pb).await,
            None => Vec::new(),
        };
        Ok(Outcome {
            capacities,
            reference_capacity: reference,
            reference_note,
            phases,
            recoveries,
            trainings,
        })
    }

    /// The training stage (see [`TrainPlan`]): for each runtime with a `train` entry, every mix's
    /// load in turn on a fresh server over the runtime's state directory, then its command. A
    /// command that cannot start fails the run (as a server that cannot start does); one that
    /// exits non-zero is reported and the sweep goes on.
    async fn train(
        &self,
        t: TrainPlan,
        reference: f64,
        pb: &ProgressBar,
    ) -> Result<Vec<TrainingRecord>> {
        let rate = reference * t.load_pct / 100.0;
        let mut out = Vec::new();
        for rt in self.runtimes.iter().filter(|r| r.train.is_some()) {
            let dir = server::state_dir(&self.out, &rt.name);
            let mut record = TrainingRecord {
                runtime: rt.name.clone(),
                loads: Vec::new(),
                command: None,
                status: None,
                output: Vec::new(),
                command_s: 0.0,
            };
            for (mi, w) in self.mixes.iter().enumerate() {
                let label = format!("train-{}-{}", w.mix.name, rt.name);
                // Not the sweep's schedules: the model must not have seen the measured requests.
                let seed = self.seed ^ 0x7a11_0000 ^ ((mi as u64) << 8);
                let measure = Duration::from_secs_f64(t.seconds);
                let load = match self
                    .measure(rt, w, rate, measure, seed, None, &label, pb)
                    .await
                {
                    Ok((run, end)) => TrainLoad {
                        mix: w.mix.name.clone(),
                        rate,
                        scheduled: run.scheduled,
                        goodput: run.goodput,
                        server: end.status,
                    },
                    Err(e) => TrainLoad {
                        mix: w.mix.name.clone(),
                        rate,
                        scheduled: 0,
                        goodput: 0.0,
                        server: format!("{e:#}"),
                    },
                };
                say(
                    pb,
                    &format!(
                        "  {label}: {:.0} req/s for {:.0} s, {} requests, goodput {:.1} %, {}",
                        rate,
                        t.seconds,
                        load.scheduled,
                        load.goodput * 100.0,
                        load.server
                    ),
                );
                record.loads.push(load);
                pb.inc(1);
            }
            if let Some(argv) = rt.train_argv(&dir) {
                let started = std::time::Instant::now();
                let output = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .envs(&rt.env)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .with_context(|| format!("starting {}'s train command {argv:?}", rt.name))?;
                record.command_s = started.elapsed().as_secs_f64();
                let stdout = String::from_utf8_lossy(&output.stdout);
                let stderr = String::from_utf8_lossy(&output.stderr);
                let logs = self.out.join("logs");
                std::fs::create_dir_all(&logs)?;
                std::fs::write(
                    logs.join(format!("train-{}.log", rt.name)),
                    format!("$ {}\n{stdout}{stderr}", argv.join(" ")),
                )?;
                record.output = stdout.lines().map(String::from).collect();
                record.status = Some(output.status.to_string());
                record.command = Some(argv.join(" "));
                for line in &record.output {
                    say(pb, &format!("  train {}: {line}", rt.name));
                }
                if !output.status.success() {
                    say(
                        pb,
                        &format!(
                            "  train {}: {} ({}); the sweep goes on with what the directory holds",
                            rt.name,
                            output.status,
                            stderr.trim()
                        ),
                    );
                }
            }
            out.push(record);
        }
        Ok(out)
    }

    /// For every repeat, mix and runtime (interleaved): warm up at the normal load, overload,
    /// then the normal load again, and measure how soon the light class's p99 recovers.
    async fn recover(
        &self,
        r: RecoveryPlan,
        reference: f64,
        pb: &ProgressBar,
    ) -> Vec<RecoveryRecord> {
        let after_rate = reference * r.after_pct / 100.0;
        let over_rate = reference * r.over_pct / 100.0;
        let warmup = self.warmup.as_secs_f64();
        let episode = Episode {
            factor: r.over_pct / r.after_pct,
            from_s: warmup,
            until_s: warmup + r.over_s,
        };
        let measure = Duration::from_secs_f64(r.over_s + r.after_s);
        let mut out = Vec::new();
        for repeat in 0..self.repeats {
            let seed = self.seed ^ ((repeat as u64) << 32) ^ 0xec0e_5000;
            for w in &self.mixes {
                for rt in &self.runtimes {
                    let label = format!(
                        "recovery-{}-{}-{:.0}to{:.0}pct-r{}",
                        w.mix.name, rt.name, r.over_pct, r.after_pct, repeat
                    );
                    let mut record = RecoveryRecord {
                        runtime: rt.name.clone(),
                        mix: w.mix.name.clone(),
                        repeat,
                        plan: r,
                        over_rate,
                        after_rate,
                        memory_limit_mb: self.limit_mb(w),
                        recovery: None,
                        run: None,
                        server: None,
                        error: None,
                    };
                    match self
                        .measure(rt, w, after_rate, measure, seed, Some(episode), &label, pb)
                        .await
                    {
                        Ok((run, end)) => {
                            let rec = recovery::analyse(
                                &run.light_samples,
                                r.over_s,
                                r.over_s + r.after_s,
                                recovery::DEFAULT_WINDOW,
                                self.objective.light_p99_ms,
                            );
                            say(
                                pb,
                                &format!(
                                    "  {label}: light p99 {:.2} ms during the overload, {:.2} ms after; {}; goodput {:.1} %, {}",
                                    rec.over_light_p99_ms,
                                    rec.after_light_p99_ms,
                                    match rec.seconds {
                                        Some(s) => format!("back within {} ms for {} s from {s:.1} s after the step", rec.slo_ms, rec.hold_s),
                                        None => format!("not back within {} ms for {} s by the end", rec.slo_ms, rec.hold_s),
                                    },
                                    run.goodput * 100.0,
                                    end.status,
                                ),
                            );
                            record.recovery = Some(rec);
                            record.run = Some(run);
                            record.server = Some(end);
                        }
                        Err(e) => {
                            say(pb, &format!("  {label}: {e:#}"));
                            record.error = Some(format!("{e:#}"));
                        }
                    }
                    out.push(record);
                    pb.inc(1);
                }
            }
        }
        out
    }
}
