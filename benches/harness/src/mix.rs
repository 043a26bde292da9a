//! Workload mixes: which routes, in what proportions, with what parameters and deadlines
//! (`benches/harness/mixes/*.toml`; the format is documented in the harness README).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    azure::{AzureSpec, Replay, Trace},
    schedule::{Bursts, Episode, Flat, RateShape, Rng, Schedule, WithEpisode},
};

/// One mix file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Short name used in reports (defaults to nothing: must be given).
    pub name: String,
    /// What the mix is meant to show.
    #[serde(default)]
    pub description: String,
    /// Run each server inside a memory limit of this many MiB (the hog storm).
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    /// The Azure Functions replay, for classes with `azure = true`.
    #[serde(default)]
    pub azure: Option<AzureSpec>,
    /// Request classes.
    #[serde(rename = "class", default)]
    pub classes: Vec<Class>,
}

/// One request class: a route with parameters, a share of the rate and a deadline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// Name in reports (per-class histograms are keyed by it).
    pub name: String,
    /// Share of the mix's mean rate, relative to the other classes' weights.
    pub weight: f64,
    /// Path and query with `{param}` placeholders.
    pub path: String,
    /// How each placeholder is drawn.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// A 2xx within this many ms counts as goodput.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// The class whose p99 the capacity objective limits (exactly one per mix).
    #[serde(default)]
    pub light: bool,
    /// Arrive in bursts instead of at a steady rate.
    #[serde(default)]
    pub burst: Option<BurstSpec>,
    /// Arrivals and `{cpu_us}` / `{mem_kb}` from the Azure replay.
    #[serde(default)]
    pub azure: bool,
}

fn default_deadline_ms() -> u64 {
    1000
}

/// How a placeholder is filled.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Param {
    /// A uniform integer in `[lo, hi]`, both included.
    Uniform([u64; 2]),
    /// One of the strings, uniformly.
    Choice(Vec<String>),
}

/// On/off bursts of a class (see [`Bursts`]).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// Cycle length, s.
    pub period_s: f64,
    /// Burst length at the start of each cycle, s.
    pub on_s: f64,
    /// Rate in a burst ÷ rate between bursts.
    pub factor: f64,
    /// Offset of the first burst, s.
    #[serde(default)]
    pub phase_s: f64,
}

/// The `{name}` placeholders of a path template, in order.
pub fn placeholders(path: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .with_context(|| format!("path {path:?}: '{{' without '}}'"))?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("path {path:?}: bad placeholder {{{name}}}");
        }
        out.push(name.to_string());
        rest = &after[close + 1..];
    }
    Ok(out)
}

impl Mix {
    /// Parses and checks a mix file; errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading mix {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("mix file {}", path.display()))
    }

    /// Parses and checks a mix from TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let mix: Mix = toml::from_str(text)?;
        mix.validate()?;
        Ok(mix)
    }

    fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            bail!("`name` is empty");
        }
        if self.classes.is_empty() {
            bail!("no [[class]] tables: a mix needs at least one class");
        }
        let mut names = BTreeSet::new();
        for c in &self.classes {
            let at = format!("class {:?}", c.name);
            if !names.insert(c.name.as_str()) {
                bail!("{at}: the name is used twice");
            }
            if !(c.weight.is_finite() && c.weight > 0.0) {
                bail!("{at}: weight must be a positive number, not {}", c.weight);
            }
            if !c.path.starts_with('/') {
                bail!("{at}: path {:?} must start with '/'", c.path);
            }
            if c.deadline_ms == 0 {
                bail!("{at}: deadline_ms must be positive");
            }
            for p in placeholders(&c.path).with_context(|| at.clone())? {
                let from_azure = c.azure && (p == "cpu_us" || p == "mem_kb");
                if !from_azure && !c.params.contains_key(&p) {
                    bail!("{at}: path uses {{{p}}} but [class.params] has no `{p}`");
                }
            }
            for (name, p) in &c.params {
                match p {
                    Param::Uniform([lo, hi]) if lo > hi => {
                        bail!("{at}: param {name}: uniform [{lo}, {hi}] has lo > hi")
                    }
                    Param::Choice(v) if v.is_empty() => {
                        bail!("{at}: param {name}: choice is empty")
                    }
                    _ => {}
                }
            }
            if let Some(b) = &c.burst {
                if !(b.period_s > 0.0 && b.on_s > 0.0 && b.on_s < b.period_s && b.factor >= 1.0) {
                    bail!("{at}: burst needs period_s > on_s > 0 and factor >= 1");
                }
                if c.azure {
                    bail!(
                        "{at}: an azure class takes its arrival shape from the trace, not `burst`"
                    );
                }
            }
            if c.azure && self.azure.is_none() {
                bail!("{at}: azure = true needs an [azure] table");
            }
        }
        if self.azure.is_some() && !self.classes.iter().any(|c| c.azure) {
            bail!("[azure] is set but no class has azure = true");
        }
        match self.classes.iter().filter(|c| c.light).count() {
            1 => {}
            n => bail!(
                "{n} classes have light = true: mark exactly one (its p99 is the capacity objective's)"
            ),
        }
        if self.memory_limit_mb == Some(0) {
            bail!("memory_limit_mb must be positive");
        }
        Ok(())
    }

    /// The index of the light class.
    pub fn light(&self) -> usize {
        self.classes
            .iter()
            .position(|c| c.light)
            .expect("validated: one light class")
    }
}

/// Loads the mixes named in `names` from `dir/<name>.toml`.
pub fn load_named(dir: &Path, names: &[String]) -> Result<Vec<Mix>> {
    names
        .iter()
        .map(|n| Mix::load(&dir.join(format!("{n}.toml"))))
        .collect()
}

/// A mix ready to run: the schedule builder and the path renderer.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The mix.
    pub mix: Mix,
    replay: Option<Replay>,
    /// How the mix was prepared (the Azure replay's window and scaling), for the report.
    pub note: Option<String>,
}

impl Workload {
    /// Prepares `mix` for runs of up to `seconds`; `data` is the folder holding
    /// `azure-functions-2019/` (needed only by azure mixes).
    pub fn new(mix: Mix, data: &Path, seconds: f64) -> Result<Self> {
        let mut note = None;
        let replay = match &mix.azure {
            Some(spec) => {
                let dir: PathBuf = data.join("azure-functions-2019");
                let trace = Trace::load(&dir, spec.set).with_context(|| {
                    format!(
                        "mix {}: loading the Azure trace (set --data or PAGEGEN_DATA to the folder holding azure-functions-2019/)",
                        mix.name
                    )
                })?;
                let replay = Replay::new(&trace, spec, seconds);
                note = Some(replay.describe(trace.missing_memory));
                Some(replay)
            }
            None => None,
        };
        Ok(Self { mix, replay, note })
    }

    /// The arrival schedule at a mean total `rate` per second, with an optional `episode` of
    /// the whole load on top (an overload to recover from).
    pub fn schedule(&self, rate: f64, seed: u64, episode: Option<Episode>) -> Schedule {
        let total: f64 = self.mix.classes.iter().map(|c| c.weight).sum();
        let rates = self
            .mix
            .classes
            .iter()
            .map(|c| rate * c.weight / total)
            .collect();
        let shapes = self
            .mix
            .classes
            .iter()
            .map(|c| -> Box<dyn RateShape> {
                if let (true, Some(r)) = (c.azure, &self.replay) {
                    Box::new(r.shape())
                } else if let Some(b) = c.burst {
                    Box::new(Bursts {
                        period_s: b.period_s,
                        on_s: b.on_s,
                        factor: b.factor,
                        phase_s: b.phase_s,
                    })
                } else {
                    Box::new(Flat)
                }
            })
            .map(|inner| -> Box<dyn RateShape> {
                match episode {
                    Some(episode) => Box::new(WithEpisode { inner, episode }),
                    None => inner,
                }
            })
            .collect();
        Schedule::new(rates, shapes, seed)
    }

    /// The request path for an arrival of `class` at `t` seconds.
    pub fn path(&self, class: usize, rng: &mut Rng, t: f64) -> String {
        let c = &self.mix.classes[class];
        let demand = match (&self.replay, c.azure) {
            (Some(r), true) => Some(r.draw(rng, t)),
            _ => None,
        };
        let mut out = String::with_capacity(c.path.len() + 16);
        let mut rest = c.path.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}').expect("validated placeholders");
            let name = &after[..close];
            match (c.params.get(name), demand) {
                (Some(Param::Uniform([lo, hi])), _) => {
                    let _ = write!(out, "{}", rng.range(*lo, *hi));
                }
                (Some(Param::Choice(v)), _) => {
                    out.push_str(&v[rng.range(0, v.len() as u64 - 1) as usize]);
                }
                (None, Some((_, cpu, _))) if name == "cpu_us" => {
                    let _ = write!(out, "{cpu}");
                }
                (None, Some((_, _, mem))) if name == "mem_kb" => {
                    let _ = write!(out, "{mem}");
                }
                (None, _) => unreachable!("validated: {name} has a source"),
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[[class]]
name = "light"
weight = 3
path = "/"
light = true
deadline_ms = 100
[[class]]
name = "product"
weight = 1
path = "/product/{id}?sort={s}"
params = { id = { uniform = [1, 5] }, s = { choice = ["asc", "desc"] } }
"#;

    #[test]
    fn parses_a_mix_and_renders_paths() {
        let mix = Mix::parse(GOOD).unwrap();
        assert_eq!(mix.classes.len(), 2);
        assert_eq!(mix.light(), 0);
        assert_eq!(mix.classes[0].deadline_ms, 100);
        assert_eq!(mix.classes[1].deadline_ms, 1000, "default deadline");
        let w = Workload::new(mix, Path::new("/nonexistent"), 10.0).unwrap();
        let mut rng = Rng::new(1);
        assert_eq!(w.path(0, &mut rng, 0.0), "/");
        for _ in 0..50 {
            let p = w.path(1, &mut rng, 0.0);
            let (id, sort) = p
                .strip_prefix("/product/")
                .unwrap()
                .split_once("?sort=")
                .unwrap();
            assert!((1..=5).contains(&id.parse::<u64>().unwrap()), "{p}");
            assert!(sort == "asc" || sort == "desc", "{p}");
        }
    }

    #[test]
    fn schedule_splits_the_rate_by_weight() {
        let w = Workload::new(Mix::parse(GOOD).unwrap(), Path::new("/x"), 10.0).unwrap();
        let n = 40_000;
        let light = w
            .schedule(1000.0, 1, None)
            .take(n)
            .filter(|a| a.class == 0)
            .count();
        assert!((light as f64 / n as f64 - 0.75).abs() < 0.01);
    }

    fn err(text: &str) -> String {
        format!("{:#}", Mix::parse(text).unwrap_err())
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(err("name = \"x\"").contains("at least one class"));
        // A TOML syntax error carries its line.
        let e = err("name = \"x\"\n[[class]\n");
        assert!(e.contains("line 2"), "{e}");
        // Unknown keys are rejected, not ignored (a typo must not silently change a run).
        let e = err(&GOOD.replace("deadline_ms = 100", "dedline_ms = 100"));
        assert!(e.contains("dedline_ms"), "{e}");
        let e = err(&GOOD.replace("s = { choice", "t = { choice"));
        assert!(e.contains("{s}") && e.contains("no `s`"), "{e}");
        let e = err(&GOOD.replace("light = true", ""));
        assert!(e.contains("light = true"), "{e}");
        let e = err(&GOOD.replace("weight = 3", "weight = -1"));
        assert!(e.contains("weight"), "{e}");
        let e = err(&GOOD.replace("[1, 5]", "[5, 1]"));
        assert!(e.contains("lo > hi"), "{e}");
        let e = err(&format!("{GOOD}\n[[class]]\nname = \"a\"\nweight = 1\npath = \"/synthetic?cpu_us={{cpu_us}}\"\nazure = true\n"));
        assert!(e.contains("[azure]"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        fs::write(&path, "name = 3\n").unwrap();
        let e = format!("{:#}", Mix::load(&path).unwrap_err());
        assert!(e.contains("bad.toml"), "{e}");
    }

    #[test]
    fn the_shipped_mixes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mixes");
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Mix::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4, "steady, bursts, hog and azure");
    }
}
