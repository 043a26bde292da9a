//! Command-line options (hand-rolled: a dozen flags do not need a parser crate in the build).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Every option, with its default.
#[derive(Debug, Clone)]
pub struct Args {
    /// Smoke mode: short phases, one repeat, two load points, two runtimes (CI).
    pub quick: bool,
    /// Runtimes file (`[[runtime]] name, cmd, env`).
    pub config: Option<PathBuf>,
    /// Runtimes given on the command line as `NAME=CMD ARGS…` (added to the file's).
    pub runtime_cmds: Vec<String>,
    /// Only these runtimes (by name), in this order.
    pub runtimes: Option<Vec<String>>,
    /// Mix names (files `<mix-dir>/<name>.toml`).
    pub mixes: Option<Vec<String>>,
    /// Folder of mix files.
    pub mix_dir: PathBuf,
    /// Load points, % of the reference runtime's capacity.
    pub loads: Option<Vec<f64>>,
    /// Repeats of the whole interleaved sweep.
    pub repeats: Option<usize>,
    /// Measured seconds per phase.
    pub phase_s: Option<f64>,
    /// Warm-up seconds per phase (and per capacity probe).
    pub warmup_s: Option<f64>,
    /// Measured seconds per capacity probe.
    pub probe_s: Option<f64>,
    /// Bisection steps once the capacity is bracketed.
    pub bisect_steps: Option<usize>,
    /// First rate the capacity search tries.
    pub capacity_start: f64,
    /// Highest rate the capacity search tries.
    pub capacity_max: f64,
    /// Skip the search: the reference runtime's capacity is this rate.
    pub capacity: Option<f64>,
    /// Mix the capacity is measured with.
    pub capacity_mix: String,
    /// Search the capacity of every runtime, not only the reference's.
    pub capacity_all: Option<bool>,
    /// Runtime whose capacity sets the load points (default `tokio`, else the first).
    pub reference: Option<String>,
    /// `--workers` given to each server.
    pub workers: usize,
    /// Connection pool cap.
    pub pool_cap: usize,
    /// Seed of schedules and parameters.
    pub seed: u64,
    /// Folder holding `azure-functions-2019/`.
    pub data: Option<PathBuf>,
    /// Output folder.
    pub out: Option<PathBuf>,
    /// Memory limit for mixes that ask for one, overriding theirs, MiB.
    pub memory_limit_mb: Option<u64>,
    /// Capacity objective: light p99, ms.
    pub light_p99_ms: f64,
    /// Capacity objective: goodput.
    pub min_goodput: f64,
    /// Overload-then-normal loads, % of the reference capacity; `Some(None)`: asked for none.
    pub recovery: Option<Option<(f64, f64)>>,
    /// Seconds of overload and of normal load after it.
    pub recovery_s: Option<(f64, f64)>,
    /// Run the generator's own threads at real-time priority (`SCHED_FIFO` 1) when allowed.
    pub gen_realtime: bool,
    /// Seconds of training load per mix for runtimes with a `train` entry (0: no training).
    pub train_s: Option<f64>,
    /// Training load, % of the reference capacity.
    pub train_load: f64,
}

/// The usage text.
pub const USAGE: &str = "\
pagegen-bench: open-loop load harness for page-generation servers

USAGE: pagegen-bench [OPTIONS]        (run from the repository root)

Runtimes (servers under test):
  --config FILE          runtimes file, [[runtime]] name/cmd/env (default benches/harness/runtimes.toml)
  --runtime NAME=CMD     add a runtime; CMD is split on spaces (repeatable)
  --server-cmd CMD       shorthand for --runtime server=CMD
  --runtimes A,B         run only these runtimes, in this order
  --reference NAME       runtime whose capacity sets the load points (default tokio, else the first)
  --workers N            --workers passed to each server (2)

Workload:
  --mixes A,B            mixes to run (default steady,bursts,hog,azure; --quick: steady)
  --mix-dir DIR          folder of mix files (benches/harness/mixes)
  --loads P,Q            load points, % of the reference capacity (50,70,90,110,200; --quick: 50,110);
                         none: skip the sweep
  --repeats N            interleaved repeats (3; --quick: 1)
  --phase-s S            measured seconds per phase (20; --quick: 3)
  --warmup-s S           warm-up seconds per phase and probe (3; --quick: 1)
  --seed N               seed of schedules and parameters (1)
  --pool-cap N           most connections to a server (4096)
  --data DIR             folder holding azure-functions-2019/ ($PAGEGEN_DATA, else ../shared/data)
  --memory-limit-mb N    memory limit for mixes that ask for one (overrides the mix)
  --gen-priority P       the generator's own threads: realtime (SCHED_FIFO 1 where allowed, so its
                         lag does not add to what it measures) or normal (realtime)

Recovery (after the sweep: warm up at AFTER, OVER for a while, then AFTER again; the time until
the light p99 over the last second stays within the objective):
  --recovery OVER,AFTER  loads, % of the reference capacity (200,70; --quick: 200,50); off: none
  --recovery-s S,T       seconds of overload and of measured normal load after it (10,20; --quick: 1,3)

Training (before the sweep, for runtimes whose entry has `train`: each mix's load, then the
`train` command, e.g. `pagegen train`, so the measured phases start from a trained model):
  --train-s S            seconds of training load per mix (30; --quick: 3); 0: no training
  --train-load P         its load, % of the reference capacity (70)

Capacity (highest rate with light p99 <= 10 ms and goodput >= 99 %):
  --capacity RATE        skip the search: the reference capacity is RATE requests/s
  --capacity-mix NAME    mix the capacity is searched with (steady)
  --capacity-all BOOL    search every runtime, not only the reference (true; --quick: false)
  --capacity-start R     first rate tried (200)      --capacity-max R   highest rate tried (50000)
  --probe-s S            measured seconds per probe (8; --quick: 2)
  --bisect-steps N       bisection steps once bracketed (5; --quick: 3)
  --light-p99-ms MS      objective's light p99 (10)  --min-goodput F    objective's goodput (0.99)

Output:
  --out DIR              report folder (default target/pagegen-bench/<UTC timestamp>)
  --quick                smoke mode for CI: the whole run in under 2 minutes
  -h, --help             this text
";

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{flag}: {s:?} is not valid"))
        })
        .collect()
}

/// Two comma-separated numbers.
fn pair(flag: &str, v: &str) -> Result<(f64, f64)> {
    match list::<f64>(flag, v)?[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("{flag}: give two numbers, e.g. 200,70"),
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not a valid number"))
}

impl Args {
    /// Parses `argv` (without the program name). `Ok(None)` means help was asked for.
    pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut a = Args {
            quick: false,
            config: None,
            runtime_cmds: Vec::new(),
            runtimes: None,
            mixes: None,
            mix_dir: PathBuf::from("benches/harness/mixes"),
            loads: None,
            repeats: None,
            phase_s: None,
            warmup_s: None,
            probe_s: None,
            bisect_steps: None,
            capacity_start: 200.0,
            capacity_max: 50_000.0,
            capacity: None,
            capacity_mix: "steady".into(),
            capacity_all: None,
            reference: None,
            workers: 2,
            pool_cap: 4096,
            seed: 1,
            data: None,
            out: None,
            memory_limit_mb: None,
            light_p99_ms: 10.0,
            min_goodput: 0.99,
            recovery: None,
            recovery_s: None,
            gen_realtime: true,
            train_s: None,
            train_load: 70.0,
        };
        let mut it = argv.into_iter();
        while let Some(flag) = it.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") && f != "--runtime" => {
                    (f.to_string(), Some(v.to_string()))
                }
                _ => (flag, None),
            };
            let mut value = || -> Result<String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it.next().with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--quick" => a.quick = true,
                "--config" => a.config = Some(value()?.into()),
                "--runtime" => a.runtime_cmds.push(value()?),
                "--server-cmd" => a.runtime_cmds.push(format!("server={}", value()?)),
                "--runtimes" => a.runtimes = Some(list("--runtimes", &value()?)?),
                "--mixes" => a.mixes = Some(list("--mixes", &value()?)?),
                "--mix-dir" => a.mix_dir = value()?.into(),
                "--loads" => {
                    let v = value()?;
                    a.loads = Some(if v == "none" {
                        Vec::new()
                    } else {
                        let l: Vec<f64> = list("--loads", &v)?;
                        if l.is_empty() {
                            bail!("--loads: give positive percentages, e.g. 50,110, or none");
                        }
                        l
                    });
                }
                "--recovery" => {
                    let v = value()?;
                    a.recovery = Some(if v == "off" {
                        None
                    } else {
                        Some(pair("--recovery", &v)?)
                    });
                }
                "--recovery-s" => a.recovery_s = Some(pair("--recovery-s", &value()?)?),
                "--repeats" => a.repeats = Some(num("--repeats", &value()?)?),
                "--phase-s" => a.phase_s = Some(num("--phase-s", &value()?)?),
                "--warmup-s" => a.warmup_s = Some(num("--warmup-s", &value()?)?),
                "--probe-s" => a.probe_s = Some(num("--probe-s", &value()?)?),
                "--bisect-steps" => a.bisect_steps = Some(num("--bisect-steps", &value()?)?),
                "--capacity-start" => a.capacity_start = num("--capacity-start", &value()?)?,
                "--capacity-max" => a.capacity_max = num("--capacity-max", &value()?)?,
                "--capacity" => a.capacity = Some(num("--capacity", &value()?)?),
                "--capacity-mix" => a.capacity_mix = value()?,
                "--capacity-all" => a.capacity_all = Some(num("--capacity-all", &value()?)?),
                "--reference" => a.reference = Some(value()?),
                "--workers" => a.workers = num("--workers", &value()?)?,
                "--pool-cap" => a.pool_cap = num("--pool-cap", &value()?)?,
                "--seed" => a.seed = num("--seed", &value()?)?,
                "--data" => a.data = Some(value()?.into()),
                "--out" => a.out = Some(value()?.into()),
                "--memory-limit-mb" => {
                    a.memory_limit_mb = Some(num("--memory-limit-mb", &value()?)?)
                }
                "--light-p99-ms" => a.light_p99_ms = num("--light-p99-ms", &value()?)?,
                "--min-goodput" => a.min_goodput = num("--min-goodput", &value()?)?,
                "--train-s" => a.train_s = Some(num("--train-s", &value()?)?),
                "--train-load" => a.train_load = num("--train-load", &value()?)?,
                "--gen-priority" => {
                    a.gen_realtime = match value()?.as_str() {
                        "realtime" => true,
                        "normal" => false,
                        other => bail!("--gen-priority: {other:?} is not realtime or normal"),
                    }
                }
                other => bail!("unknown option {other:?} (see --help)"),
            }
        }
        if a.loads
            .as_ref()
            .is_some_and(|l| l.iter().any(|p| *p <= 0.0))
        {
            bail!("--loads: give positive percentages, e.g. 50,110");
        }
        if a.train_s.is_some_and(|s| !(s >= 0.0 && s.is_finite())) {
            bail!("--train-s: give seconds ≥ 0 (0: no training)");
        }
        if !(a.train_load > 0.0 && a.train_load.is_finite()) {
            bail!("--train-load: give a positive percentage, e.g. 70");
        }
        if let Some(Some((over, after))) = a.recovery {
            if after <= 0.0 || over <= after {
                bail!("--recovery: give OVER,AFTER with OVER > AFTER > 0, e.g. 200,70");
            }
        }
        if let Some((over_s, after_s)) = a.recovery_s {
            if over_s <= 0.0 || after_s < 1.0 {
                bail!("--recovery-s: give positive seconds, the second at least 1 (the rolling window), e.g. 10,20");
            }
        }
        if a.repeats == Some(0) {
            bail!("--repeats must be at least 1");
        }
        Ok(Some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Args>> {
        Args::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_and_values() {
        let a = parse("--quick --loads 50,110 --repeats=2 --runtimes tokio,pagegen --seed 7")
            .unwrap()
            .unwrap();
        assert!(a.quick);
        assert_eq!(a.loads, Some(vec![50.0, 110.0]));
        assert_eq!(a.repeats, Some(2));
        assert_eq!(
            a.runtimes,
            Some(vec!["tokio".to_string(), "pagegen".to_string()])
        );
        assert_eq!(a.seed, 7);
    }

    #[test]
    fn runtime_keeps_its_equals_sign() {
        let a = Args::parse(["--runtime".to_string(), "x=srv --a=b".to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(a.runtime_cmds, vec!["x=srv --a=b".to_string()]);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = parse("--repeats lots").unwrap_err().to_string();
        assert!(e.contains("--repeats"), "{e}");
        assert!(parse("--bogus")
            .unwrap_err()
            .to_string()
            .contains("--bogus"));
        assert!(parse("--out")
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse("--help").unwrap().is_none());
        for bad in [
            "--recovery 200",
            "--recovery 50,70",
            "--recovery 200,0",
            "--recovery-s 0,20",
            "--loads 50,-1",
            "--gen-priority high",
            "--train-s -1",
            "--train-load 0",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn recovery_and_empty_sweeps() {
        let a = parse("--recovery 200,70 --recovery-s 5,15 --loads none")
            .unwrap()
            .unwrap();
        assert_eq!(a.recovery, Some(Some((200.0, 70.0))));
        assert_eq!(a.recovery_s, Some((5.0, 15.0)));
        assert_eq!(a.loads, Some(vec![]));
        let a = parse("--recovery off").unwrap().unwrap();
        assert_eq!(a.recovery, Some(None));
        assert_eq!(parse("").unwrap().unwrap().recovery, None);
    }

    #[test]
    fn generator_priority() {
        assert!(parse("").unwrap().unwrap().gen_realtime);
        assert!(
            !parse("--gen-priority normal")
                .unwrap()
                .unwrap()
                .gen_realtime
        );
        assert!(
            parse("--gen-priority=realtime")
                .unwrap()
                .unwrap()
                .gen_realtime
        );
    }

    #[test]
    fn training() {
        let a = parse("").unwrap().unwrap();
        assert_eq!((a.train_s, a.train_load), (None, 70.0));
        let a = parse("--train-s 0 --train-load=50").unwrap().unwrap();
        assert_eq!((a.train_s, a.train_load), (Some(0.0), 50.0));
    }
}
