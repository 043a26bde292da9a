//! SVG charts (plotters' SVG backend; text is left to the viewer's fonts): per-class p99 against
//! load, one line per runtime; 503 rate against load; server memory over time.

use std::{ops::Range, path::Path};

use anyhow::{anyhow, Result};
use plotters::{
    coord::ranged1d::{AsRangedCoord, ValueFormatter},
    prelude::*,
};

use crate::{
    plan::{PhaseRecord, RecoveryRecord},
    report::PointSummary,
};

type Series = (String, Vec<(f64, f64)>);

fn color(i: usize) -> RGBColor {
    // Okabe and Ito's colour-blind-safe palette (2008).
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    C[i % C.len()]
}

/// An axis label without trailing zeros: 2, 2.5, 0.25.
fn tidy(v: &f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[allow(clippy::too_many_arguments)]
fn draw<Y>(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: Range<f64>,
    y: Y,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tidy)
        .y_label_formatter(&tidy)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if points.len() < 60 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    if let Some((v, label)) = hline {
        // A limit, not a series: red and dashed, so it does not read as a mesh line.
        let red = RGBColor(200, 30, 30);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x.start, v), (x.end, v)],
                8,
                5,
                red.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn x_range(points: &[&PointSummary]) -> Range<f64> {
    let max = points.iter().map(|p| p.load_pct).fold(0.0, f64::max);
    0.0..(max * 1.08).max(10.0)
}

fn by_runtime(points: &[&PointSummary], f: impl Fn(&PointSummary) -> f64) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in points {
        let v = f(p);
        if !v.is_finite() {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == p.runtime) {
            Some((_, s)) => s.push((p.load_pct, v)),
            None => out.push((p.runtime.clone(), vec![(p.load_pct, v)])),
        }
    }
    for (_, s) in &mut out {
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The light class's rolling p99 through the overload and after it, per mix: one line per runtime
/// (repeat 0). A window where a light request got no 2xx is drawn at the top of the chart.
fn recovery(
    dir: &Path,
    records: &[RecoveryRecord],
    p99_limit_ms: f64,
    files: &mut Vec<String>,
) -> Result<()> {
    let mut mixes: Vec<&str> = Vec::new();
    for r in records {
        if !mixes.contains(&r.mix.as_str()) {
            mixes.push(&r.mix);
        }
    }
    for mix in mixes {
        let picked: Vec<(&RecoveryRecord, &crate::recovery::Recovery)> = records
            .iter()
            .filter(|r| r.mix == mix && r.repeat == 0)
            .filter_map(|r| Some((r, r.recovery.as_ref()?)))
            .collect();
        let Some((first, rec)) = picked.first() else {
            continue;
        };
        let finite = || {
            picked
                .iter()
                .flat_map(|(_, r)| r.timeline.iter().map(|p| p.1))
                .filter(|v| v.is_finite())
        };
        let top = finite().fold(p99_limit_ms, f64::max) * 1.25;
        let bottom = finite().fold(p99_limit_ms, f64::min).max(0.01) * 0.8;
        let series: Vec<Series> = picked
            .iter()
            .map(|(r, rec)| {
                let label = match rec.seconds {
                    Some(s) => format!("{} (recovered {s:.1} s after)", r.runtime),
                    None => format!("{} (not recovered)", r.runtime),
                };
                let points = rec
                    .timeline
                    .iter()
                    .filter(|p| !p.1.is_nan())
                    .map(|&(t, v)| (t, v.min(top)))
                    .collect();
                (label, points)
            })
            .collect();
        let name = format!("recovery_{}.svg", file_safe(mix));
        draw(
            &dir.join(&name),
            &format!(
                "{mix}: light p99 over the last {} s; {:.0} % load until {} s, then {:.0} %",
                rec.window_s, first.plan.over_pct, rec.step_s, first.plan.after_pct
            ),
            "seconds since the overload began",
            "rolling light p99, ms (log)",
            0.0..rec.end_s,
            (bottom..top * 1.05).log_scale(),
            &series,
            Some((p99_limit_ms, "objective")),
        )?;
        files.push(name);
    }
    Ok(())
}

/// Draws every chart for the run into `dir`; returns their file names.
pub fn all(
    dir: &Path,
    summary: &[PointSummary],
    phases: &[PhaseRecord],
    recoveries: &[RecoveryRecord],
    p99_limit_ms: f64,
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    recovery(dir, recoveries, p99_limit_ms, &mut files)?;
    let mut mixes: Vec<&str> = Vec::new();
    for p in summary {
        if !mixes.contains(&p.mix.as_str()) {
            mixes.push(&p.mix);
        }
    }
    for mix in mixes {
        let points: Vec<&PointSummary> = summary.iter().filter(|p| p.mix == mix).collect();
        let classes: Vec<String> = points
            .iter()
            .flat_map(|p| p.class_p99_ms.keys().cloned())
            .fold(Vec::new(), |mut v, c| {
                if !v.contains(&c) {
                    v.push(c);
                }
                v
            });
        for class in &classes {
            let series = by_runtime(&points, |p| {
                p.class_p99_ms.get(class).map_or(f64::NAN, |s| s.median)
            });
            let max = series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.1))
                .fold(p99_limit_ms, f64::max);
            let min = series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.1))
                .fold(p99_limit_ms, f64::min)
                .max(0.01);
            let name = format!("p99_{}_{}.svg", file_safe(mix), file_safe(class));
            draw(
                &dir.join(&name),
                &format!("{mix}: {class} p99 vs load (median over repeats)"),
                "load, % of the reference capacity",
                "p99 latency from intended send, ms (log)",
                x_range(&points),
                (min * 0.8..max * 1.25).log_scale(),
                &series,
                (class == "light").then_some((p99_limit_ms, "objective")),
            )?;
            files.push(name);
        }

        let series = by_runtime(&points, |p| p.shed_rate.median * 100.0);
        let max = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(1.0, f64::max);
        let name = format!("shed_{}.svg", file_safe(mix));
        draw(
            &dir.join(&name),
            &format!("{mix}: 503 (shed or cancelled) rate vs load"),
            "load, % of the reference capacity",
            "503 responses, % of scheduled",
            x_range(&points),
            0.0..max * 1.1,
            &series,
            None,
        )?;
        files.push(name);

        // Memory over time: each runtime's phase at the highest load of the first repeat.
        let top = points.iter().map(|p| p.load_pct).fold(0.0, f64::max);
        let mut series: Vec<Series> = Vec::new();
        let mut limit = None;
        for ph in phases
            .iter()
            .filter(|ph| ph.mix == mix && ph.repeat == 0 && ph.load_pct == top)
        {
            if let Some(end) = &ph.server {
                limit = limit.or(ph.memory_limit_mb);
                let label = if end.oom_killed {
                    format!("{} (OOM-killed)", ph.runtime)
                } else {
                    ph.runtime.clone()
                };
                series.push((label, end.samples.iter().map(|s| (s.t, s.rss_mb)).collect()));
            }
        }
        if series.iter().any(|(_, s)| !s.is_empty()) {
            let t_max = series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.0))
                .fold(1.0, f64::max);
            let y_max = series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.1))
                .fold(limit.unwrap_or(0) as f64, f64::max)
                .max(1.0);
            let name = format!("rss_{}.svg", file_safe(mix));
            draw(
                &dir.join(&name),
                &format!("{mix}: server RSS over time at {top:.0} % load (repeat 0)"),
                "seconds since server start",
                "VmRSS, MiB",
                0.0..t_max,
                0.0..y_max * 1.1,
                &series,
                limit.map(|l| (l as f64, "memory limit")),
            )?;
            files.push(name);
        }
    }
    Ok(files)
}
