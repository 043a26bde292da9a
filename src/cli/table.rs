//! The readable form of a [`Profile`]: a header, then aligned columns per class.

use std::fmt::Write;

use super::profile::{pool_name, Accuracy, Profile, Spread};

/// Renders `p` as text (one trailing newline).
pub(super) fn render(p: &Profile) -> String {
    let mut out = String::new();
    let dir = p.dir.display();
    if p.is_empty() {
        let _ = writeln!(
            out,
            "nothing learned yet in {dir} (no classes, no profiles)"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "state directory {dir}: {} profile records, {} classes",
        p.records,
        p.classes.len()
    );
    let _ = writeln!(
        out,
        "usage: p50/p99 over the stored records; accuracy: median |predicted - actual| / actual and \
         share of uncensored requests over the upper estimate; in bulk: share of granted requests \
         started in the bulk pool; grant: the LAST RECORDED grant of \
         each class (the live grant needs the running server's model and annotations)\n"
    );

    let mut usage = vec![row(&[
        "class", "id", "requests", "ok", "5xx", "panic", "shed", "cancel", "demoted", "cpu",
        "wall", "peak mem", "io ops", "io bytes",
    ])];
    let mut model = vec![row(&[
        "class",
        "predicted",
        "cpu err",
        "cpu > upper",
        "mem err",
        "mem > upper",
        "in bulk",
        "grant pool",
        "cpu",
        "wall",
        "mem soft/hard",
        "io depth",
    ])];
    let mut how = vec![row(&[
        "class",
        "spans/req",
        "span time",
        "backend calls",
        "backend bytes in",
        "backend time",
        "socket in",
        "socket out",
        "blocking",
        "first poll",
        "seq reads",
        "instructions",
        "ipc",
        "checkpointed",
        "extended",
        "refused",
    ])];
    for c in &p.classes {
        let b = &c.behaviour;
        how.push(vec![
            c.name.clone(),
            spread(b.spans, |v| v.to_string()),
            spread(b.span_ns, ns),
            spread(b.net_calls, |v| v.to_string()),
            spread(b.net_bytes_in, bytes),
            spread(b.net_latency_ns, ns),
            spread(b.socket_in, bytes),
            spread(b.socket_out, bytes),
            spread(b.blocking_ns, ns),
            spread(b.first_poll_delay_ns, ns),
            b.sequential_reads
                .map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
            b.instructions
                .map_or("n/a".into(), |s| spread(s, |v| v.to_string())),
            b.ipc.map_or("n/a".into(), |v| format!("{v:.2}")),
            b.checkpointed.to_string(),
            b.extended.to_string(),
            b.refused.to_string(),
        ]);
    }
    for c in &p.classes {
        let cancelled: u64 = c.cancelled.values().sum();
        usage.push(vec![
            c.name.clone(),
            c.id.to_string(),
            c.requests.to_string(),
            c.completed.to_string(),
            c.failed.to_string(),
            c.panicked.to_string(),
            c.shed.to_string(),
            cancelled.to_string(),
            c.demoted.to_string(),
            spread(c.cpu_ns, ns),
            spread(c.wall_ns, ns),
            spread(c.peak_bytes, bytes),
            spread(c.io_ops, |v| v.to_string()),
            spread(c.io_bytes, bytes),
        ]);
        let in_bulk = if c.granted == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}%", 100.0 * c.started_bulk as f64 / c.granted as f64)
        };
        let mut r = vec![c.name.clone(), c.predicted.to_string()];
        r.extend(accuracy_cells(c.cpu_accuracy, c.mem_accuracy));
        r.push(in_bulk);
        match c.last_grant {
            Some(g) => r.extend([
                pool_name(g.pool),
                limit(g.cpu_ns, ns),
                limit(g.wall_ns, ns),
                format!("{}/{}", limit(g.mem_soft, bytes), limit(g.mem_hard, bytes)),
                if g.io_depth == u32::MAX {
                    "-".into()
                } else {
                    g.io_depth.to_string()
                },
            ]),
            None => r.extend([
                "none recorded".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]),
        }
        model.push(r);
    }
    aligned(&usage, &mut out);
    out.push('\n');
    aligned(&model, &mut out);
    out.push('\n');
    let mut by = vec![row(&[
        "class",
        "predictor",
        "predicted",
        "explored",
        "cpu err",
        "cpu > upper",
        "mem err",
        "mem > upper",
    ])];
    for c in &p.classes {
        for a in &c.by_predictor {
            let mut r = vec![
                c.name.clone(),
                a.predictor.name().into(),
                a.requests.to_string(),
                a.explored.to_string(),
            ];
            r.extend(accuracy_cells(a.cpu, a.mem));
            by.push(r);
        }
    }
    if by.len() > 1 {
        let _ = writeln!(
            out,
            "by predictor (the one that made each request's prediction; explored requests, whose \
             upper estimates were widened, left out of the figures):"
        );
        aligned(&by, &mut out);
        out.push('\n');
    }
    aligned(&how, &mut out);
    if p.classes.iter().all(|c| c.behaviour.instructions.is_none()) {
        let _ = writeln!(
            out,
            "(instructions n/a: no record carries hardware counters — none on this machine, or \
             perf_event_open refused)"
        );
    }
    for c in p.classes.iter().filter(|c| !c.cancelled.is_empty()) {
        let why: Vec<String> = c
            .cancelled
            .iter()
            .map(|(w, n)| format!("{n} {w}"))
            .collect();
        let _ = writeln!(out, "\n{} cancelled: {}", c.name, why.join(", "));
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// Columns padded to their widest cell (by characters); the first left-aligned, the rest right.
fn aligned(rows: &[Vec<String>], out: &mut String) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<w$}", w = width[i]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = width[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn spread(s: Spread, unit: impl Fn(u64) -> String) -> String {
    format!("{}/{}", unit(s.p50), unit(s.p99))
}

fn limit(v: u64, unit: impl Fn(u64) -> String) -> String {
    if v == u64::MAX {
        "-".into()
    } else {
        unit(v)
    }
}

/// The four accuracy columns: CPU error, CPU over the upper estimate, then the same for memory.
fn accuracy_cells(cpu: Accuracy, mem: Accuracy) -> [String; 4] {
    let pct = |v: Option<f64>| v.map_or("-".into(), ratio);
    [
        pct(cpu.median_rel_error),
        pct(cpu.over_upper),
        pct(mem.median_rel_error),
        pct(mem.over_upper),
    ]
}

fn ns(v: u64) -> String {
    match v {
        0..=999 => format!("{v}ns"),
        1_000..=999_999 => format!("{:.1}us", v as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", v as f64 / 1e6),
        _ => format!("{:.1}s", v as f64 / 1e9),
    }
}

fn bytes(v: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match v {
        0..KIB => format!("{v}B"),
        KIB..MIB => format!("{:.1}KiB", v as f64 / KIB as f64),
        MIB..GIB => format!("{:.1}MiB", v as f64 / MIB as f64),
        _ => format!("{:.1}GiB", v as f64 / GIB as f64),
    }
}

/// A share or a relative error: a percentage up to 999 %, then a factor (`×524287`).
fn ratio(x: f64) -> String {
    if x < 9.995 {
        format!("{:.0}%", x * 100.0)
    } else {
        format!("x{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(ns(999), "999ns");
        assert_eq!(ns(9_683_914), "9.7ms");
        assert_eq!(bytes(1_040_109), "1015.7KiB");
        assert_eq!(bytes(4 << 20), "4.0MiB");
        assert_eq!(ratio(0.25), "25%");
        assert_eq!(ratio(84.4), "x84");
    }

    #[test]
    fn columns_align() {
        let mut out = String::new();
        aligned(&[row(&["a", "10"]), row(&["long name", "2"])], &mut out);
        assert_eq!(out, "a          10\nlong name   2\n");
    }
}
