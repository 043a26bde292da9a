//! The Azure Functions 2019 trace sample (`shared/data/azure-functions-2019`, Shahrad et al.,
//! "Serverless in the Wild", USENIX ATC'20; data CC-BY 4.0, Microsoft) replayed as `/synthetic`
//! requests.
//!
//! Each function gives (a) its invocations per minute over a day, (b) percentiles of its
//! execution time (ms) and (c) percentiles of its app's allocated memory (MB). The replay:
//! - **arrivals**: the sum over functions of the per-minute counts, from `minute_start` on, shapes
//!   the rate (one trace minute lasts `seconds_per_minute` of the run; the mean is scaled to the
//!   target rate, so the trace gives the burstiness and the harness the level); each arrival picks
//!   a function in proportion to its count in the current trace minute;
//! - **demand**: a draw from the function's duration and memory distributions, by linear
//!   interpolation of the inverse CDF between the published percentiles, then scaled down to page
//!   scale (`cpu_us_per_ms`, `mem_kb_per_mb`) and capped, because the trace's median duration is
//!   seconds and its memory hundreds of MB, which a 2-core machine serving hundreds of requests a
//!   second cannot hold.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::schedule::{Rng, Steps};

/// A distribution given by (quantile, value) points, sampled by linear interpolation.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdf {
    points: Vec<(f64, f64)>,
}

impl Cdf {
    /// From (quantile in 0..=1, value) points; sorted by quantile, values made non-decreasing
    /// (the trace's weighted percentiles are monotone, but a bad row must not make the draw
    /// wander).
    pub fn new(mut points: Vec<(f64, f64)>) -> Result<Self> {
        if points.is_empty() {
            bail!("a distribution needs at least one percentile");
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut max = f64::MIN;
        for p in &mut points {
            if !p.1.is_finite() || p.1 < 0.0 {
                bail!(
                    "percentile value {} is not a finite non-negative number",
                    p.1
                );
            }
            max = max.max(p.1);
            p.1 = max;
        }
        Ok(Self { points })
    }

    /// The value at quantile `u` (clamped to the first and last points outside them).
    pub fn quantile(&self, u: f64) -> f64 {
        let pts = &self.points;
        if u <= pts[0].0 {
            return pts[0].1;
        }
        for w in pts.windows(2) {
            let ((q0, v0), (q1, v1)) = (w[0], w[1]);
            if u <= q1 {
                if q1 <= q0 {
                    return v1;
                }
                return v0 + (v1 - v0) * (u - q0) / (q1 - q0);
            }
        }
        pts[pts.len() - 1].1
    }

    /// A random draw.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        self.quantile(rng.unit())
    }
}

/// One function of the sample.
#[derive(Debug, Clone)]
pub struct Function {
    /// Its hash (the join key of the three files).
    pub hash: String,
    /// Invocations in each minute of the day.
    pub invocations: Vec<u32>,
    /// Execution time, ms.
    pub duration_ms: Cdf,
    /// Allocated memory of its app, MB.
    pub memory_mb: Cdf,
}

/// The joined sample of one size (50, 100 or 200 functions).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Functions present in all three files.
    pub functions: Vec<Function>,
    /// Rows of the run file without a memory row (left out).
    pub missing_memory: usize,
}

fn columns<'a>(header: &'a str, path: &Path) -> Result<HashMap<&'a str, usize>> {
    let map: HashMap<&str, usize> = header
        .trim()
        .split(',')
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    if map.is_empty() {
        bail!("{}: empty header", path.display());
    }
    Ok(map)
}

fn field<'a>(row: &[&'a str], i: usize, path: &Path, line: usize) -> Result<&'a str> {
    row.get(i)
        .copied()
        .with_context(|| format!("{}:{line}: too few columns", path.display()))
}

fn number(s: &str, path: &Path, line: usize) -> Result<f64> {
    s.trim()
        .parse::<f64>()
        .with_context(|| format!("{}:{line}: {s:?} is not a number", path.display()))
}

/// Rows of a CSV file (no quoting in these files) keyed by the named hash column, with the
/// header's column map.
fn read_rows(path: &Path) -> Result<(String, Vec<(usize, String)>)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?;
    let rows = lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect();
    Ok((header.to_string(), rows))
}

fn percentile_cdf(
    row: &[&str],
    cols: &HashMap<&str, usize>,
    names: &[(&str, f64)],
    path: &Path,
    line: usize,
) -> Result<Cdf> {
    let mut points = Vec::with_capacity(names.len());
    for (name, q) in names {
        let i = *cols
            .get(name)
            .with_context(|| format!("{}: no column {name}", path.display()))?;
        points.push((*q, number(field(row, i, path, line)?, path, line)?));
    }
    Cdf::new(points)
}

const RUN_PERCENTILES: [(&str, f64); 7] = [
    ("percentile_Average_0", 0.0),
    ("percentile_Average_1", 0.01),
    ("percentile_Average_25", 0.25),
    ("percentile_Average_50", 0.50),
    ("percentile_Average_75", 0.75),
    ("percentile_Average_99", 0.99),
    ("percentile_Average_100", 1.0),
];

const MEM_PERCENTILES: [(&str, f64); 8] = [
    ("AverageAllocatedMb_pct1", 0.01),
    ("AverageAllocatedMb_pct5", 0.05),
    ("AverageAllocatedMb_pct25", 0.25),
    ("AverageAllocatedMb_pct50", 0.50),
    ("AverageAllocatedMb_pct75", 0.75),
    ("AverageAllocatedMb_pct95", 0.95),
    ("AverageAllocatedMb_pct99", 0.99),
    ("AverageAllocatedMb_pct100", 1.0),
];

impl Trace {
    /// Reads `{set}_run.csv`, `{set}_mem.csv` and `{set}_inv.csv` from `dir` and joins them on
    /// the function hash (the sampler set the app hash equal to it; see the data's SOURCE.txt).
    pub fn load(dir: &Path, set: u32) -> Result<Self> {
        let run_path = dir.join(format!("{set}_run.csv"));
        let mem_path = dir.join(format!("{set}_mem.csv"));
        let inv_path = dir.join(format!("{set}_inv.csv"));

        let (mem_header, mem_rows) = read_rows(&mem_path)?;
        let mem_cols = columns(&mem_header, &mem_path)?;
        let mem_key = *mem_cols
            .get("HashApp")
            .with_context(|| format!("{}: no HashApp column", mem_path.display()))?;
        let mut memory = HashMap::new();
        for (line, row) in &mem_rows {
            let cells: Vec<&str> = row.split(',').collect();
            let key = field(&cells, mem_key, &mem_path, *line)?.to_string();
            let cdf = percentile_cdf(&cells, &mem_cols, &MEM_PERCENTILES, &mem_path, *line)?;
            memory.insert(key, cdf);
        }

        let (inv_header, inv_rows) = read_rows(&inv_path)?;
        let inv_cols = columns(&inv_header, &inv_path)?;
        let inv_key = *inv_cols
            .get("HashFunction")
            .with_context(|| format!("{}: no HashFunction column", inv_path.display()))?;
        let first_minute = *inv_cols
            .get("minute_1")
            .with_context(|| format!("{}: no minute_1 column", inv_path.display()))?;
        let mut invocations = HashMap::new();
        for (line, row) in &inv_rows {
            let cells: Vec<&str> = row.split(',').collect();
            let key = field(&cells, inv_key, &inv_path, *line)?.to_string();
            let counts = cells[first_minute.min(cells.len())..]
                .iter()
                .map(|c| {
                    c.trim().parse::<u32>().with_context(|| {
                        format!("{}:{line}: {c:?} is not a count", inv_path.display())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if counts.is_empty() {
                bail!("{}:{line}: no per-minute counts", inv_path.display());
            }
            invocations.insert(key, counts);
        }

        let (run_header, run_rows) = read_rows(&run_path)?;
        let run_cols = columns(&run_header, &run_path)?;
        let run_key = *run_cols
            .get("HashFunction")
            .with_context(|| format!("{}: no HashFunction column", run_path.display()))?;
        let mut functions = Vec::new();
        let mut missing_memory = 0;
        for (line, row) in &run_rows {
            let cells: Vec<&str> = row.split(',').collect();
            let hash = field(&cells, run_key, &run_path, *line)?.to_string();
            let duration_ms =
                percentile_cdf(&cells, &run_cols, &RUN_PERCENTILES, &run_path, *line)?;
            let Some(memory_mb) = memory.get(&hash).cloned() else {
                missing_memory += 1;
                continue;
            };
            let Some(inv) = invocations.get(&hash).cloned() else {
                bail!(
                    "{}: function {hash} has no invocation row",
                    inv_path.display()
                );
            };
            functions.push(Function {
                hash,
                invocations: inv,
                duration_ms,
                memory_mb,
            });
        }
        if functions.is_empty() {
            bail!(
                "{}: no function has run, memory and invocation rows",
                dir.display()
            );
        }
        Ok(Self {
            functions,
            missing_memory,
        })
    }
}

/// How the trace is mapped onto the run (the `[azure]` table of a mix).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSpec {
    /// Sample size: 50, 100 or 200 functions.
    #[serde(default = "default_set")]
    pub set: u32,
    /// First trace minute replayed (0-based, 0..1440).
    #[serde(default)]
    pub minute_start: usize,
    /// Run seconds per trace minute (time compression of the arrival shape).
    #[serde(default = "default_seconds_per_minute")]
    pub seconds_per_minute: f64,
    /// µs of CPU per ms of trace execution time (1.0: ms → µs, a thousandth).
    #[serde(default = "default_cpu_scale")]
    pub cpu_us_per_ms: f64,
    /// Cap on a request's CPU, µs.
    #[serde(default = "default_cpu_max")]
    pub cpu_us_max: u64,
    /// KB held per MB of trace memory (64: a sixteenth).
    #[serde(default = "default_mem_scale")]
    pub mem_kb_per_mb: f64,
    /// Cap on a request's memory, KB.
    #[serde(default = "default_mem_max")]
    pub mem_kb_max: u64,
}

fn default_set() -> u32 {
    50
}
fn default_seconds_per_minute() -> f64 {
    1.0
}
fn default_cpu_scale() -> f64 {
    1.0
}
fn default_cpu_max() -> u64 {
    50_000
}
fn default_mem_scale() -> f64 {
    64.0
}
fn default_mem_max() -> u64 {
    128 * 1024
}

/// A trace window ready to draw arrivals shapes and request demands from.
#[derive(Debug, Clone)]
pub struct Replay {
    spec: AzureSpec,
    functions: Vec<Function>,
    /// Per replayed minute, cumulative invocation counts over functions (for the weighted pick).
    cumulative: Vec<Vec<f64>>,
    shape: Steps,
}

impl Replay {
    /// The window of `spec` long enough for `seconds` of run.
    pub fn new(trace: &Trace, spec: &AzureSpec, seconds: f64) -> Self {
        let day = trace.functions[0].invocations.len();
        let minutes = ((seconds / spec.seconds_per_minute).ceil() as usize).max(1);
        let mut totals = Vec::with_capacity(minutes);
        let mut cumulative = Vec::with_capacity(minutes);
        for m in 0..minutes {
            let minute = (spec.minute_start + m) % day;
            let mut acc = 0.0;
            let cum: Vec<f64> = trace
                .functions
                .iter()
                .map(|f| {
                    acc += f64::from(*f.invocations.get(minute).unwrap_or(&0));
                    acc
                })
                .collect();
            totals.push(acc);
            cumulative.push(cum);
        }
        Self {
            spec: spec.clone(),
            functions: trace.functions.clone(),
            cumulative,
            shape: Steps::normalised(spec.seconds_per_minute, &totals),
        }
    }

    /// What the replay does, for the report: the window, how concentrated the arrivals are, and
    /// the mean scaled demand (from 10 000 seeded draws).
    pub fn describe(&self, missing_memory: usize) -> String {
        let mut rng = Rng::new(0xa2u64);
        let n = 10_000;
        let t_max = self.shape.step_s * self.shape.steps.len() as f64;
        let mut counts = vec![0usize; self.functions.len()];
        let (mut cpu, mut mem) = (0.0, 0.0);
        for i in 0..n {
            let t = t_max * i as f64 / n as f64;
            let (f, c, m) = self.draw(&mut rng, t);
            counts[f] += 1;
            cpu += c as f64;
            mem += m as f64;
        }
        let (top, top_n) = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map_or((0, 0), |(i, c)| (i, *c));
        format!(
            "{} functions ({missing_memory} without a memory row left out), trace minutes {}..{} at {} s each, \
             rate peak/mean {:.2}; busiest function {}… takes {:.0} % of arrivals; mean scaled demand \
             {:.0} µs CPU (cap {}), {:.0} KiB held (cap {}); scale {} µs per trace ms, {} KiB per trace MB",
            self.functions.len(),
            self.spec.minute_start,
            self.spec.minute_start + self.shape.steps.len(),
            self.spec.seconds_per_minute,
            self.shape.steps.iter().cloned().fold(0.0, f64::max),
            &self.functions[top].hash[..self.functions[top].hash.len().min(8)],
            100.0 * top_n as f64 / n as f64,
            cpu / n as f64,
            self.spec.cpu_us_max,
            mem / n as f64,
            self.spec.mem_kb_max,
            self.spec.cpu_us_per_ms,
            self.spec.mem_kb_per_mb,
        )
    }

    /// The arrival-rate shape (mean 1 over the window).
    pub fn shape(&self) -> Steps {
        self.shape.clone()
    }

    /// The function index an arrival at `t` seconds invokes.
    pub fn pick(&self, rng: &mut Rng, t: f64) -> usize {
        let cum = &self.cumulative[self.shape.index(t)];
        let total = *cum.last().unwrap_or(&0.0);
        if total <= 0.0 {
            return rng.range(0, self.functions.len() as u64 - 1) as usize;
        }
        let u = rng.unit() * total;
        cum.iter().position(|&c| u <= c).unwrap_or(cum.len() - 1)
    }

    /// One request's demand at `t`: (function index, cpu_us, mem_kb), scaled and capped.
    pub fn draw(&self, rng: &mut Rng, t: f64) -> (usize, u64, u64) {
        let f = self.pick(rng, t);
        let func = &self.functions[f];
        let cpu = (func.duration_ms.sample(rng) * self.spec.cpu_us_per_ms).round() as u64;
        let mem = (func.memory_mb.sample(rng) * self.spec.mem_kb_per_mb).round() as u64;
        (
            f,
            cpu.min(self.spec.cpu_us_max),
            mem.min(self.spec.mem_kb_max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn cdf_interpolates_between_percentiles() {
        let cdf = Cdf::new(vec![(0.0, 10.0), (0.5, 20.0), (1.0, 100.0)]).unwrap();
        assert_eq!(cdf.quantile(0.0), 10.0);
        assert_eq!(cdf.quantile(0.25), 15.0);
        assert_eq!(cdf.quantile(0.75), 60.0);
        assert_eq!(cdf.quantile(1.0), 100.0);
        // Memory rows start at the 1st percentile: below it, the first value.
        let mem = Cdf::new(vec![(0.01, 5.0), (1.0, 6.0)]).unwrap();
        assert_eq!(mem.quantile(0.001), 5.0);
    }

    #[test]
    fn cdf_sample_median_is_the_median() {
        let cdf = Cdf::new(vec![(0.0, 0.0), (0.5, 50.0), (1.0, 1000.0)]).unwrap();
        let mut rng = Rng::new(1);
        let mut draws: Vec<f64> = (0..10_001).map(|_| cdf.sample(&mut rng)).collect();
        draws.sort_by(f64::total_cmp);
        assert!((draws[5000] - 50.0).abs() < 3.0, "median {}", draws[5000]);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let mut f = fs::File::create(dir.join(name)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn fixture(dir: &Path) {
        write(
            dir,
            "2_run.csv",
            "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n\
             aa,aa,aa,10,5,1,9,1,1,2,5,7,9,9\n\
             bb,bb,bb,3,100,100,100,100,100,100,100,100,100,100\n\
             cc,cc,cc,3,1,1,1,1,1,1,1,1,1,1\n",
        );
        write(
            dir,
            "2_mem.csv",
            "HashApp,HashOwner,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n\
             aa,aa,4,150,100,110,120,150,170,190,199,200\n\
             bb,bb,4,1000,1000,1000,1000,1000,1000,1000,1000,1000\n",
        );
        write(
            dir,
            "2_inv.csv",
            "HashFunction,HashApp,HashOwner,minute_1,minute_2,minute_3\n\
             aa,aa,aa,3,0,1\n\
             bb,bb,bb,1,4,1\n\
             cc,cc,cc,0,0,0\n",
        );
    }

    #[test]
    fn parses_and_joins_the_three_files() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let t = Trace::load(dir.path(), 2).unwrap();
        assert_eq!(t.functions.len(), 2);
        assert_eq!(t.missing_memory, 1, "cc has no memory row");
        let a = &t.functions[0];
        assert_eq!(a.hash, "aa");
        assert_eq!(a.invocations, vec![3, 0, 1]);
        assert_eq!(a.duration_ms.quantile(0.5), 5.0);
        assert_eq!(a.memory_mb.quantile(0.5), 150.0);
        assert_eq!(t.functions[1].duration_ms.quantile(0.9), 100.0);
    }

    #[test]
    fn a_bad_number_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write(
            dir.path(),
            "2_inv.csv",
            "HashFunction,HashApp,HashOwner,minute_1\naa,aa,aa,3\nbb,bb,bb,lots\n",
        );
        let err = format!("{:#}", Trace::load(dir.path(), 2).unwrap_err());
        assert!(err.contains("2_inv.csv:3") && err.contains("lots"), "{err}");
    }

    #[test]
    fn replay_follows_the_per_minute_counts() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let t = Trace::load(dir.path(), 2).unwrap();
        let spec: AzureSpec = toml::from_str(
            "seconds_per_minute = 2.0\ncpu_us_per_ms = 10.0\nmem_kb_per_mb = 1.0\nmem_kb_max = 500",
        )
        .unwrap();
        let r = Replay::new(&t, &spec, 6.0);
        // Totals per minute 4, 4, 2 → shape 1.2, 1.2, 0.6; two seconds each.
        let shape = r.shape();
        assert_eq!(shape.steps.len(), 3);
        assert!((shape.steps[2] - 0.6).abs() < 1e-9);
        let mut rng = Rng::new(3);
        // Minute 2 (t in [2, 4) s) only has function bb.
        for _ in 0..100 {
            let (f, cpu, mem) = r.draw(&mut rng, 3.0);
            assert_eq!(
                (f, cpu, mem),
                (1, 1000, 500),
                "bb: 100 ms x 10, 1000 MB capped to 500 KB"
            );
        }
        // Minute 1: aa three times out of four.
        let aa = (0..4000).filter(|_| r.pick(&mut rng, 0.5) == 0).count();
        assert!((aa as f64 / 4000.0 - 0.75).abs() < 0.03);
    }

    #[test]
    fn the_shipped_sample_loads() {
        // The real data, when the checkout has shared/ beside it (as CI does) or PAGEGEN_DATA names it.
        let data = std::env::var_os("PAGEGEN_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
        let dir = data.join("azure-functions-2019");
        if !dir.exists() {
            eprintln!("skipped: {} not present", dir.display());
            return;
        }
        let t = Trace::load(&dir, 50).unwrap();
        assert_eq!(t.functions.len(), 50);
        assert!(t.functions.iter().all(|f| f.invocations.len() == 1440));
    }
}
