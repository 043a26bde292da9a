//! The report: raw numbers as JSON, medians and spreads over repeats as Markdown tables.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    capacity::Objective,
    mix::Mix,
    plan::{Outcome, PhaseRecord, RecoveryRecord, TrainingRecord},
    recovery::Recovery,
    runner::RunResult,
    server::RuntimeSpec,
};

/// Median, min and max of one figure over repeats.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Values.
    pub n: usize,
}

impl Spread {
    /// Of `values` (NaN when empty).
    pub fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                n,
            };
        }
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        }
    }

    /// `median` alone, or `median (min–max)` over several repeats, with `scale` applied.
    pub fn show(&self, scale: f64, digits: usize) -> String {
        if self.n == 0 {
            return "–".into();
        }
        let f = |v: f64| format!("{:.*}", digits, v * scale);
        if self.n == 1 || self.min == self.max {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// One (mix, load, runtime) point over its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct PointSummary {
    /// Mix.
    pub mix: String,
    /// Load, % of the reference capacity.
    pub load_pct: f64,
    /// Offered rate.
    pub rate: f64,
    /// Runtime.
    pub runtime: String,
    /// Phases with results.
    pub runs: usize,
    /// Phases whose server did not start.
    pub failed_phases: usize,
    /// Light p99, ms.
    pub light_p99_ms: Spread,
    /// Goodput (fraction).
    pub goodput: Spread,
    /// 503 rate (fraction).
    pub shed_rate: Spread,
    /// Errors + unsent + timed out, per phase.
    pub failed: Spread,
    /// Peak RSS, MiB.
    pub peak_rss_mb: Spread,
    /// Phases that ended in an OOM kill.
    pub oom_kills: usize,
    /// Generator CPU, cores.
    pub generator_cpu: Spread,
    /// Dispatcher lag p99, ms.
    pub dispatch_lag_p99_ms: Spread,
    /// Per class p99, ms.
    pub class_p99_ms: BTreeMap<String, Spread>,
    /// Per class 503 rate (fraction of the class's scheduled requests).
    pub class_shed_rate: BTreeMap<String, Spread>,
}

/// Groups phases by (mix, load, runtime), keeping the mix, load and runtime orders of the run.
pub fn summarise(phases: &[PhaseRecord]) -> Vec<PointSummary> {
    let mut keys: Vec<(String, f64, String)> = Vec::new();
    for p in phases {
        let k = (p.mix.clone(), p.load_pct, p.runtime.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(mix, load, runtime)| {
            let group: Vec<&PhaseRecord> = phases
                .iter()
                .filter(|p| p.mix == mix && p.load_pct == load && p.runtime == runtime)
                .collect();
            let runs: Vec<_> = group.iter().filter_map(|p| p.run.as_ref()).collect();
            let ends: Vec<_> = group.iter().filter_map(|p| p.server.as_ref()).collect();
            let spread = |f: &dyn Fn(&crate::runner::RunResult) -> f64| {
                Spread::of(runs.iter().map(|r| f(r)).collect())
            };
            let mut class_p99_ms = BTreeMap::new();
            let mut class_shed_rate = BTreeMap::new();
            if let Some(first) = runs.first() {
                for (i, c) in first.classes.iter().enumerate() {
                    class_p99_ms.insert(
                        c.class.clone(),
                        Spread::of(runs.iter().map(|r| r.classes[i].p99_ms).collect()),
                    );
                    class_shed_rate.insert(
                        c.class.clone(),
                        Spread::of(runs.iter().map(|r| r.classes[i].shed_rate).collect()),
                    );
                }
            }
            PointSummary {
                rate: group[0].rate,
                failed_phases: group.len() - runs.len(),
                runs: runs.len(),
                light_p99_ms: spread(&|r| r.light_p99_ms),
                goodput: spread(&|r| r.goodput),
                shed_rate: spread(&|r| r.shed_rate),
                failed: spread(&|r| r.failed as f64),
                peak_rss_mb: Spread::of(ends.iter().map(|e| e.peak_rss_mb).collect()),
                oom_kills: ends.iter().filter(|e| e.oom_killed).count(),
                generator_cpu: spread(&|r| r.generator_cpu),
                dispatch_lag_p99_ms: spread(&|r| r.dispatch_lag_p99_ms),
                class_p99_ms,
                class_shed_rate,
                mix,
                load_pct: load,
                runtime,
            }
        })
        .collect()
}

/// Facts about the machine and the run that a reader needs to trust the figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunFacts {
    /// When the run started, UTC.
    pub started_utc: String,
    /// When it finished, UTC.
    pub finished_utc: String,
    /// The command line.
    pub command: String,
    /// Smoke mode.
    pub quick: bool,
    /// CPUs the harness saw.
    pub cpus: usize,
    /// `uname -r`-like kernel release.
    pub kernel: String,
    /// /proc/loadavg at the start.
    pub loadavg_start: String,
    /// How memory limits were applied.
    pub memory_limit_mechanism: String,
    /// Independent generators found on PATH, and what was cross-checked.
    pub independent_generators: String,
    /// The capacity objective.
    pub objective: Objective,
    /// The generator's CPU time over the whole run, s.
    pub generator_cpu_s: f64,
    /// The scheduling policy of the generator's threads (`SCHED_FIFO 1`, or why not).
    pub generator_priority: String,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Run facts.
    pub context: &'a RunFacts,
    /// Runtimes as configured.
    pub runtimes: &'a [RuntimeSpec],
    /// Mixes as loaded.
    pub mixes: Vec<&'a Mix>,
    /// How each mix was prepared (the Azure replay's window and scaling), by mix name.
    pub mix_notes: BTreeMap<String, String>,
    /// Aggregates over repeats.
    pub summary: &'a [PointSummary],
    /// Capacities and every phase, raw.
    pub outcome: &'a Outcome,
}

/// Writes `results.json`.
pub fn write_json(dir: &Path, report: &Report<'_>) -> Result<()> {
    let path = dir.join("results.json");
    let text = serde_json::to_string_pretty(report)?;
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// The Markdown report.
pub fn markdown(report: &Report<'_>, charts: &[String]) -> String {
    let c = report.context;
    let mut md = String::new();
    let _ = writeln!(md, "# pagegen-bench report\n");
    let _ = writeln!(
        md,
        "- run: {} → {} ({:.0} s){}\n- command: `{}`\n- machine: {} CPUs, kernel {}, load average at start {}\n- memory limits: {}\n- load generator CPU: {:.1} s over the run ({:.0} % of one core); its threads: {}\n- independent generator: {}\n- capacity objective: light p99 ≤ {} ms and goodput ≥ {} % (2xx within the class deadline)\n",
        c.started_utc,
        c.finished_utc,
        c.wall_s,
        if c.quick { ", **smoke mode (--quick): short phases, figures are indicative only**" } else { "" },
        c.command,
        c.cpus,
        c.kernel,
        c.loadavg_start.trim(),
        c.memory_limit_mechanism,
        c.generator_cpu_s,
        100.0 * c.generator_cpu_s / c.wall_s.max(1e-9),
        c.generator_priority,
        c.independent_generators,
        c.objective.light_p99_ms,
        c.objective.min_goodput * 100.0,
    );

    let _ = writeln!(md, "## Capacity\n");
    let _ = writeln!(
        md,
        "| runtime | capacity (req/s) | probes (req/s: light p99 ms, goodput %) |"
    );
    let _ = writeln!(md, "|---|---|---|");
    for cap in &report.outcome.capacities {
        let probes = if cap.searched {
            cap.probes
                .iter()
                .map(|p| {
                    format!(
                        "{:.0}{}: {:.2}, {:.1}",
                        p.rate,
                        if p.pass { "✓" } else { "✗" },
                        p.light_p99_ms,
                        p.goodput * 100.0
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            "given with --capacity".into()
        };
        let _ = writeln!(md, "| {} | {:.0} | {} |", cap.runtime, cap.capacity, probes);
    }
    let _ = writeln!(
        md,
        "\nLoad points are % of the reference capacity, {:.0} req/s. Cells over repeats: median (min–max).\n",
        report.outcome.reference_capacity
    );
    if let Some(note) = &report.outcome.reference_note {
        let _ = writeln!(md, "**Note:** {note}.\n");
    }

    training_section(&mut md, &report.outcome.trainings);

    let mut mixes: Vec<&str> = Vec::new();
    for p in report.summary {
        if !mixes.contains(&p.mix.as_str()) {
            mixes.push(&p.mix);
        }
    }
    for mix in mixes {
        let points: Vec<&PointSummary> = report.summary.iter().filter(|p| p.mix == mix).collect();
        let limit = report
            .outcome
            .phases
            .iter()
            .find(|p| p.mix == mix)
            .and_then(|p| p.memory_limit_mb);
        let _ = writeln!(
            md,
            "## Mix `{mix}`{}\n",
            limit.map_or(String::new(), |l| format!(" (server memory limit {l} MiB)"))
        );
        if let Some(m) = report.mixes.iter().find(|m| m.name == mix) {
            if !m.description.is_empty() {
                let _ = writeln!(md, "{}.\n", m.description);
            }
        }
        if let Some(note) = report.mix_notes.get(mix) {
            let _ = writeln!(md, "Replay: {note}.\n");
        }
        let _ = writeln!(
            md,
            "| load | req/s | runtime | light p99 ms | goodput % | 503 % | failed | peak RSS MiB | OOM kills | gen CPU % | gen lag p99 ms |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for p in &points {
            let _ = writeln!(
                md,
                "| {:.0} % | {:.0} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
                p.load_pct,
                p.rate,
                p.runtime,
                p.light_p99_ms.show(1.0, 2),
                p.goodput.show(100.0, 1),
                p.shed_rate.show(100.0, 1),
                p.failed.show(1.0, 0),
                p.peak_rss_mb.show(1.0, 0),
                p.oom_kills,
                if p.failed_phases > 0 {
                    format!(" ({} phases did not start)", p.failed_phases)
                } else {
                    String::new()
                },
                p.generator_cpu.show(100.0, 0),
                p.dispatch_lag_p99_ms.show(1.0, 2),
            );
        }
        let classes: Vec<String> = points
            .iter()
            .find(|p| !p.class_p99_ms.is_empty())
            .map(|p| {
                report
                    .mixes
                    .iter()
                    .find(|m| m.name == mix)
                    .map(|m| m.classes.iter().map(|c| c.name.clone()).collect())
                    .unwrap_or_else(|| p.class_p99_ms.keys().cloned().collect())
            })
            .unwrap_or_default();
        if !classes.is_empty() {
            let _ = writeln!(md, "\np99 per class, ms:\n");
            let _ = writeln!(md, "| load | runtime | {} |", classes.join(" | "));
            let _ = writeln!(md, "|---|---|{}", "---|".repeat(classes.len()));
            for p in &points {
                let cells: Vec<String> = classes
                    .iter()
                    .map(|c| p.class_p99_ms.get(c).map_or("–".into(), |s| s.show(1.0, 2)))
                    .collect();
                let _ = writeln!(
                    md,
                    "| {:.0} % | {} | {} |",
                    p.load_pct,
                    p.runtime,
                    cells.join(" | ")
                );
            }
            if points
                .iter()
                .any(|p| p.class_shed_rate.values().any(|s| s.max > 0.0))
            {
                let _ = writeln!(md, "\n503 per class, % of the class's requests:\n");
                let _ = writeln!(md, "| load | runtime | {} |", classes.join(" | "));
                let _ = writeln!(md, "|---|---|{}", "---|".repeat(classes.len()));
                for p in &points {
                    let cells: Vec<String> = classes
                        .iter()
                        .map(|c| {
                            p.class_shed_rate
                                .get(c)
                                .map_or("–".into(), |s| s.show(100.0, 1))
                        })
                        .collect();
                    let _ = writeln!(
                        md,
                        "| {:.0} % | {} | {} |",
                        p.load_pct,
                        p.runtime,
                        cells.join(" | ")
                    );
                }
            }
        }
        let ends: Vec<String> = report
            .outcome
            .phases
            .iter()
            .filter(|ph| ph.mix == mix)
            .filter_map(|ph| {
                let e = ph.server.as_ref()?;
                (e.died_early || e.oom_killed || e.forced).then(|| {
                    format!(
                        "{} at {:.0} % (repeat {}): {}{}{}",
                        ph.runtime,
                        ph.load_pct,
                        ph.repeat,
                        e.status,
                        if e.oom_killed { ", OOM kill" } else { "" },
                        if e.forced {
                            ", did not stop on SIGTERM"
                        } else {
                            ""
                        }
                    )
                })
            })
            .collect();
        if !ends.is_empty() {
            let _ = writeln!(
                md,
                "\nServers that did not end cleanly: {}.",
                ends.join("; ")
            );
        }
        let _ = writeln!(md);
    }
    recovery_section(&mut md, &report.outcome.recoveries);
    if !charts.is_empty() {
        let _ = writeln!(md, "## Charts\n");
        for c in charts {
            let _ = writeln!(md, "- [{c}]({c})");
        }
    }
    md
}

/// The training stage: each runtime's loads and what its command printed.
fn training_section(md: &mut String, records: &[TrainingRecord]) {
    if records.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Training

Before the sweep, each runtime with a `train` entry served every mix's load on its own state directory (a different schedule from the measured phases), then ran its `train` command; the measured phases start from what the directory then holds.
"
    );
    for r in records {
        let loads = r
            .loads
            .iter()
            .map(|l| {
                format!(
                    "{} at {:.0} req/s: {} requests, goodput {:.1} % ({})",
                    l.mix,
                    l.rate,
                    l.scheduled,
                    l.goodput * 100.0,
                    l.server
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(md, "- **{}**: {loads}.", r.runtime);
        if let Some(cmd) = &r.command {
            let _ = writeln!(
                md,
                "  `{cmd}` ({}, {:.1} s):
",
                r.status.as_deref().unwrap_or("?"),
                r.command_s
            );
            let _ = writeln!(md, "  ```");
            for line in &r.output {
                let _ = writeln!(md, "  {line}");
            }
            let _ = writeln!(md, "  ```");
        }
    }
    let _ = writeln!(md);
}

/// The overload-then-normal runs: per mix and runtime, over repeats.
fn recovery_section(md: &mut String, records: &[RecoveryRecord]) {
    let Some(first) = records.first() else {
        return;
    };
    let p = first.plan;
    let slo = first.recovery.as_ref().map_or(f64::NAN, |r| r.slo_ms);
    let hold = first.recovery.as_ref().map_or(f64::NAN, |r| r.hold_s);
    let _ = writeln!(
        md,
        "## Recovery after overload\n\nWarm-up at {:.0} % ({:.0} req/s), then {:.0} % ({:.0} req/s) for {} s, then {:.0} % again for {} s. Recovery: seconds from the step down until the light p99 over the last second is within {slo} ms for {hold} s in a row (sampled every 100 ms; a light request without a 2xx counts as infinitely slow). Cells over repeats: median (min–max).\n",
        p.after_pct,
        first.after_rate,
        p.over_pct,
        first.over_rate,
        p.over_s,
        p.after_pct,
        p.after_s,
    );
    let mut mixes: Vec<&str> = Vec::new();
    for r in records {
        if !mixes.contains(&r.mix.as_str()) {
            mixes.push(&r.mix);
        }
    }
    for mix in mixes {
        let _ = writeln!(md, "### Mix `{mix}`\n");
        let _ = writeln!(
            md,
            "| runtime | recovered | recovery (s) | light p99 during overload (ms) | light p99 after (ms) | goodput (%) | 503 (%) | peak RSS (MiB) | server |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        let mut runtimes: Vec<&str> = Vec::new();
        for r in records.iter().filter(|r| r.mix == mix) {
            if !runtimes.contains(&r.runtime.as_str()) {
                runtimes.push(&r.runtime);
            }
        }
        for rt in runtimes {
            let rs: Vec<&RecoveryRecord> = records
                .iter()
                .filter(|r| r.mix == mix && r.runtime == rt)
                .collect();
            let measured: Vec<&Recovery> = rs.iter().filter_map(|r| r.recovery.as_ref()).collect();
            let recovered: Vec<f64> = measured.iter().filter_map(|r| r.seconds).collect();
            let runs: Vec<&RunResult> = rs.iter().filter_map(|r| r.run.as_ref()).collect();
            let ends: Vec<String> = rs
                .iter()
                .map(|r| match (&r.server, &r.error) {
                    (Some(e), _) if e.oom_killed => "OOM-killed".to_string(),
                    (Some(e), _) => e.status.clone(),
                    (None, Some(err)) => err.clone(),
                    (None, None) => "–".into(),
                })
                .collect();
            let mut distinct = ends.clone();
            distinct.sort();
            distinct.dedup();
            let _ = writeln!(
                md,
                "| {rt} | {} of {} | {} | {} | {} | {} | {} | {} | {} |",
                recovered.len(),
                rs.len(),
                if recovered.is_empty() {
                    format!("> {}", p.after_s)
                } else {
                    Spread::of(recovered.clone()).show(1.0, 1)
                },
                Spread::of(measured.iter().map(|r| r.over_light_p99_ms).collect()).show(1.0, 2),
                Spread::of(measured.iter().map(|r| r.after_light_p99_ms).collect()).show(1.0, 2),
                Spread::of(runs.iter().map(|r| r.goodput).collect()).show(100.0, 1),
                Spread::of(runs.iter().map(|r| r.shed_rate).collect()).show(100.0, 1),
                Spread::of(
                    rs.iter()
                        .filter_map(|r| r.server.as_ref().map(|e| e.peak_rss_mb))
                        .collect()
                )
                .show(1.0, 0),
                distinct.join("; "),
            );
        }
        let _ = writeln!(md);
    }
}

/// The UTC time now as `YYYY-MM-DDTHH-MM-SSZ` (file-name safe when `sep` is '-').
pub fn utc_stamp(sep: char) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}{sep}{:02}{sep}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), after Howard Hinnant's `civil_from_days`
/// ("chrono-compatible low-level date algorithms").
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of(vec![1.0, 2.0]).median, 1.5);
        assert_eq!(s.show(1.0, 1), "2.0 (1.0–3.0)");
        assert_eq!(Spread::of(vec![]).show(1.0, 1), "–");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
    }
}
