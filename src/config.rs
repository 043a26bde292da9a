//! Configuration of the composition root: every knob, its default, and where it is read from.
//!
//! Sources, later wins: the defaults below → `pagegen.toml` (in the working directory, or the file
//! `PAGEGEN_CONFIG` names; absent is fine) → `PAGEGEN_<KNOB>` environment variables (the knob's
//! name in upper case) → what the program sets on [`Builder`](crate::runtime::Builder). A value
//! that does not parse, or an unknown key in the file, is a startup error that names the knob.
//!
//! | knob | default | meaning |
//! |---|---|---|
//! | `workers` | cores | latency-pool workers (normal priority) |
//! | `bulk_workers` | cores | bulk-pool workers (nice `bulk_nice`); 0 = no bulk pool |
//! | `bulk_nice` | 10 | nice offset of the bulk pool |
//! | `bulk_sched_idle` | false | run the bulk pool under `SCHED_IDLE` (CPU only when no normal thread wants it) |
//! | `slice_us` | 100 | EEVDF scheduler slice of both pools, µs, where the kernel has it; 0 = kernel default |
//! | `state_dir` | `./.pagegen` (`PAGEGEN_STATE_DIR`) | class ids, profiles, model checkpoints |
//! | `memory_pool` | 70 % of the cgroup limit, else 50 % of RAM | bytes all live requests may hold |
//! | `bulk_threshold_us` | 2000 | predicted CPU above which a request starts in the bulk pool |
//! | `tail_threshold_us` | 20000 | upper CPU estimate above which a request starts in the bulk pool whatever its central one (`off`: none) |
//! | `mem_margin` | 1.5 | memory budget = predicted upper peak × margin |
//! | `mem_floor` | `4MiB` | smallest memory budget (room for what one poll allocates) |
//! | `mem_reserve` | 0.1 | share of the memory pool only small budgets (at most `mem_floor`, or an eighth of the reserve if larger) may take, so a storm of large requests cannot keep light pages waiting for memory; 0 = none |
//! | `admission_wait_ms` | 100 | longest wait for memory or a pool before a 503 |
//! | `timeout_ms` | 30000 | wall-clock limit of a request without `timeout`; 0 = none |
//! | `trainer` | true | retrain the model in the background |
//! | `trainer_interval_s` | 30 | seconds between training rounds |
//! | `max_connections` | 10000 | open connections at most; the accept loop waits past it |
//! | `header_read_timeout_ms` | 10000 | a connection that has not sent its headers by then is closed |
//! | `body_limit` | `2MiB` | largest request body; past it 413 |
//! | `drain_timeout_ms` | 10000 | graceful shutdown: how long open requests may finish |
//! | `tokio_workers` | 2 | threads of the tokio compatibility runtime (timers, sockets, and what libraries `tokio::spawn`); 2 keeps timers on time beside a busy spawned task, 1 = one current-thread runtime |
//! | `profile` | true | the behavioural profile beyond what budgets and the model need: checkpoints, hardware counters, span profiling (the default subscriber `serve` installs), per-class histograms; false = the loop predicts, grants, enforces and records usage only (for measuring what the profile costs) |
//! | `perf_sample_every` | 64 | one poll in N reads the hardware counters (instruction mix), where the kernel has them; 1 = every poll |
//! | `predictor` | `model` | who predicts: `model` (the gate picks among the recurrent model and the baselines), or one pinned: `recurrent`, `ewma`, `histogram`, `static` (annotations and prior only) |
//! | `shares` | `outstanding` | CPU shares between classes: `outstanding` (weight ∝ a class's admitted requests, [`OutstandingShares`](crate::policy::OutstandingShares)) or `equal` (every class its registered shares, glommio-style static shares) |
//! | `metrics_addr` | off | where to serve Prometheus metrics (`GET /metrics`, [`crate::metrics`]); see below |
//!
//! Sizes take `B`, `KiB`, `MiB`, `GiB` (or a plain byte count).
//!
//! `metrics_addr` takes `off` (or an empty value), a port (`9464`: `127.0.0.1:9464`),
//! `localhost:PORT`, or an IP address and port (`127.0.0.1:9464`, `[::1]:9464`); port 0 picks a free
//! port (the bound address is logged and read back with
//! [`Runtime::metrics_addr`](crate::runtime::Runtime::metrics_addr)). The endpoint has no
//! authentication, so it listens on loopback unless the value *names* another address: an IP
//! literal such as `0.0.0.0:9464` is taken as the operator's explicit choice (and warned about at
//! startup); host names other than `localhost` are refused rather than resolved, so a name that
//! resolves to a public interface never exposes it by accident.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use pagegen_model::Serving;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PAGEGEN_CONFIG";
/// The configuration file looked for in the working directory.
pub const CONFIG_FILE: &str = "pagegen.toml";

/// Every knob of the runtime; see the module docs for defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Latency-pool workers.
    pub workers: usize,
    /// Bulk-pool workers (0: one pool only).
    pub bulk_workers: usize,
    /// Nice offset of the bulk pool.
    pub bulk_nice: i32,
    /// Whether the bulk pool runs under `SCHED_IDLE`.
    pub bulk_sched_idle: bool,
    /// Scheduler slice of both pools (`None`: kernel default).
    pub slice: Option<Duration>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Memory pool bytes (`None`: from the cgroup or RAM).
    pub memory_pool: Option<u64>,
    /// Predicted CPU above which a request starts in the bulk pool.
    pub bulk_threshold: Duration,
    /// Upper CPU estimate above which a request starts in the bulk pool whatever its central
    /// estimate (`None`: placement by the central estimate alone).
    pub tail_threshold: Option<Duration>,
    /// Memory budget margin over the predicted upper peak.
    pub mem_margin: f64,
    /// Smallest memory budget, bytes.
    pub mem_floor: u64,
    /// Share of the memory pool kept for small budgets.
    pub mem_reserve: f64,
    /// Longest admission wait.
    pub admission_wait: Duration,
    /// Default wall-clock limit (`None`: none).
    pub timeout: Option<Duration>,
    /// Background training on.
    pub trainer: bool,
    /// Training interval.
    pub trainer_interval: Duration,
    /// Connection limit.
    pub max_connections: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Request body limit, bytes.
    pub body_limit: u64,
    /// Graceful shutdown deadline.
    pub drain_timeout: Duration,
    /// Where to serve Prometheus metrics (`None`: no endpoint).
    pub metrics_addr: Option<SocketAddr>,
    /// Threads of the tokio compatibility runtime.
    pub tokio_workers: usize,
    /// The behavioural profile (checkpoints, counters, spans, histograms).
    pub profile: bool,
    /// One poll in this many reads the hardware counters.
    pub perf_sample_every: u32,
    /// Who predicts (`None`: the gate picks; `Some`: pinned).
    pub predictor: Option<Serving>,
    /// How CPU shares between classes are set.
    pub shares: SharesMode,
}

/// The `shares` knob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharesMode {
    /// A class's weight follows its outstanding requests.
    #[default]
    Outstanding,
    /// Every class keeps its registered shares (no policy adjusts them).
    Equal,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            workers: cores,
            bulk_workers: cores,
            // The bulk pool's nice +10 and both pools' 100 µs slice: the lowest light-class tail in
            // benches/isolation.rs (benches/RESULTS.md, 2026-11-30).
            bulk_nice: 10,
            bulk_sched_idle: false,
            slice: Some(Duration::from_micros(100)),
            state_dir: std::env::var_os(pagegen_model::state_dir::STATE_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(pagegen_model::state_dir::DEFAULT_STATE_DIR)),
            memory_pool: None,
            // A fifth of a 10 ms light-page objective: work predicted longer leaves the latency
            // workers to light pages. At 5 ms the site's searches (2–8 ms, predicted ~3 ms) ran on
            // the latency workers, and in the harness's bursts mix at twice the capacity the light
            // pages' server-side p99 was 124 ms; at 1 ms, 4–17 ms (benches/RESULTS.md, 2026-12-05).
            // 1 ms then sent the ~1.2 ms searches the trained model predicts at 1.1 ms to bulk,
            // behind 10–80 ms ones (their p99 62 ms at twice the capacity); at 2 ms they stay on
            // the latency workers (p99 4.1 ms) and light pages keep a p99 of 1.2–2.7 ms on every
            // mix (benches/RESULTS.md, 2026-12-06 night, "the bulk threshold at 2 ms").
            bulk_threshold: Duration::from_millis(2),
            // Twice the light pages' 10 ms objective: a request that may hold a latency worker for
            // longer in one poll starts in bulk even when it usually takes 1 ms (once its class
            // was learned from; the prior's upper estimate says nothing about a tail).
            tail_threshold: Some(Duration::from_millis(20)),
            // Room over the upper estimate; the model's upper is already a ~99 % cover.
            mem_margin: 1.5,
            mem_floor: 4 << 20,
            mem_reserve: 0.1,
            admission_wait: Duration::from_millis(100),
            timeout: Some(Duration::from_secs(30)),
            trainer: true,
            trainer_interval: Duration::from_secs(30),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            // axum's own default body limit.
            body_limit: 2 << 20,
            drain_timeout: Duration::from_secs(10),
            metrics_addr: None,
            tokio_workers: 2,
            profile: true,
            perf_sample_every: crate::profile::perf::DEFAULT_EVERY,
            predictor: None,
            shares: SharesMode::Outstanding,
        }
    }
}

/// A knob that could not be read: names it, says what was given and what is expected.
fn bad(knob: &str, value: &str, expected: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("pagegen config: `{knob}` = {value:?} is not valid: expected {expected}"),
    )
}

/// Parses a size: a byte count or a number with `B`, `KiB`, `MiB`, `GiB`, `TiB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

impl Config {
    /// The defaults, then `pagegen.toml`, then `PAGEGEN_*` variables.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an unknown key, or a value that does not parse; the
    /// message names the knob.
    pub fn from_env() -> io::Result<Config> {
        let mut cfg = Config::default();
        let explicit = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
        match std::fs::read_to_string(&path) {
            Ok(text) => cfg
                .apply_toml(&text)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && explicit.is_none() => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("pagegen config file {}: {e}", path.display()),
                ))
            }
        }
        let vars: BTreeMap<String, String> = std::env::vars()
            .filter_map(|(k, v)| {
                let knob = k.strip_prefix("PAGEGEN_")?.to_ascii_lowercase();
                KNOBS.contains(&knob.as_str()).then_some((knob, v))
            })
            .collect();
        for (knob, value) in vars {
            cfg.set(&knob, &value)?;
        }
        Ok(cfg)
    }

    /// Applies a `pagegen.toml` text.
    ///
    /// # Errors
    /// A parse error, an unknown key, or a bad value.
    pub fn apply_toml(&mut self, text: &str) -> io::Result<()> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))?;
        for (key, value) in &table {
            let v = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(bad(
                        key,
                        &format!("{other:?}"),
                        "a string, number or boolean",
                    ))
                }
            };
            self.set(key, &v)?;
        }
        Ok(())
    }

    /// Sets one knob from text.
    ///
    /// # Errors
    /// An unknown knob or a value that does not parse.
    pub fn set(&mut self, knob: &str, value: &str) -> io::Result<()> {
        let v = value.trim();
        let int = |expected: &str| v.parse::<u64>().map_err(|_| bad(knob, value, expected));
        let boolean = || match v {
            "true" | "1" | "on" | "yes" => Ok(true),
            "false" | "0" | "off" | "no" => Ok(false),
            _ => Err(bad(knob, value, "true or false")),
        };
        let ms = |expected: &str| int(expected).map(Duration::from_millis);
        match knob {
            "workers" => {
                let n = int("an integer ≥ 1")?;
                if n == 0 {
                    return Err(bad(knob, value, "an integer ≥ 1"));
                }
                self.workers = n as usize;
            }
            "bulk_workers" => self.bulk_workers = int("an integer (0: no bulk pool)")? as usize,
            "bulk_nice" => {
                self.bulk_nice = v
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (0..=19).contains(n))
                    .ok_or_else(|| bad(knob, value, "an integer in 0..=19"))?
            }
            "bulk_sched_idle" => self.bulk_sched_idle = boolean()?,
            "slice_us" => {
                let us = int("microseconds (0: kernel default)")?;
                self.slice = (us > 0).then(|| Duration::from_micros(us));
            }
            "state_dir" => {
                if v.is_empty() {
                    return Err(bad(knob, value, "a directory path"));
                }
                self.state_dir = PathBuf::from(v);
            }
            "memory_pool" => {
                self.memory_pool = Some(
                    parse_size(v)
                        .filter(|&b| b > 0)
                        .ok_or_else(|| bad(knob, value, "a size such as 2GiB"))?,
                )
            }
            "bulk_threshold_us" => {
                self.bulk_threshold = Duration::from_micros(int("microseconds")?)
            }
            "tail_threshold_us" => {
                self.tail_threshold = if v == "off" {
                    None
                } else {
                    Some(Duration::from_micros(int("microseconds or off")?))
                }
            }
            "mem_margin" => {
                self.mem_margin = v
                    .parse::<f64>()
                    .ok()
                    .filter(|m| m.is_finite() && *m >= 1.0)
                    .ok_or_else(|| bad(knob, value, "a number ≥ 1.0"))?
            }
            "mem_floor" => {
                self.mem_floor =
                    parse_size(v).ok_or_else(|| bad(knob, value, "a size such as 4MiB"))?
            }
            "mem_reserve" => {
                self.mem_reserve = v
                    .parse::<f64>()
                    .ok()
                    .filter(|m| (0.0..=0.5).contains(m))
                    .ok_or_else(|| bad(knob, value, "a share of the pool in 0..=0.5"))?
            }
            "admission_wait_ms" => self.admission_wait = ms("milliseconds")?,
            "timeout_ms" => {
                let d = ms("milliseconds (0: no limit)")?;
                self.timeout = (!d.is_zero()).then_some(d);
            }
            "trainer" => self.trainer = boolean()?,
            "trainer_interval_s" => {
                let s = int("seconds ≥ 1")?;
                if s == 0 {
                    return Err(bad(knob, value, "seconds ≥ 1"));
                }
                self.trainer_interval = Duration::from_secs(s);
            }
            "max_connections" => {
                let n = int("an integer ≥ 1")?;
                if n == 0 {
                    return Err(bad(knob, value, "an integer ≥ 1"));
                }
                self.max_connections = n as usize;
            }
            "header_read_timeout_ms" => self.header_read_timeout = ms("milliseconds")?,
            "body_limit" => {
                self.body_limit =
                    parse_size(v).ok_or_else(|| bad(knob, value, "a size such as 2MiB"))?
            }
            "drain_timeout_ms" => self.drain_timeout = ms("milliseconds")?,
            "metrics_addr" => {
                self.metrics_addr = parse_metrics_addr(v).ok_or_else(|| {
                    bad(
                        knob,
                        value,
                        "off, a port, localhost:PORT or IP:PORT (such as 127.0.0.1:9464)",
                    )
                })?
            }
            "tokio_workers" => {
                let n = int("an integer ≥ 1")?;
                if n == 0 {
                    return Err(bad(knob, value, "an integer ≥ 1"));
                }
                self.tokio_workers = n as usize;
            }
            "profile" => self.profile = boolean()?,
            "perf_sample_every" => {
                let n = int("an integer ≥ 1")?;
                if n == 0 || n > u64::from(u32::MAX) {
                    return Err(bad(knob, value, "an integer ≥ 1"));
                }
                self.perf_sample_every = n as u32;
            }
            "predictor" => {
                self.predictor = match v {
                    "model" => None,
                    "recurrent" => Some(Serving::Recurrent),
                    "ewma" => Some(Serving::Ewma),
                    "histogram" => Some(Serving::Histogram),
                    "static" => Some(Serving::Static),
                    _ => {
                        return Err(bad(
                            knob,
                            value,
                            "model, recurrent, ewma, histogram or static",
                        ))
                    }
                }
            }
            "shares" => {
                self.shares = match v {
                    "outstanding" => SharesMode::Outstanding,
                    "equal" => SharesMode::Equal,
                    _ => return Err(bad(knob, value, "outstanding or equal")),
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "pagegen config: unknown knob `{knob}`; known knobs: {}",
                        KNOBS.join(", ")
                    ),
                ))
            }
        }
        Ok(())
    }
}

/// Every knob's name (the `PAGEGEN_` variables are these in upper case).
pub const KNOBS: &[&str] = &[
    "workers",
    "bulk_workers",
    "bulk_nice",
    "bulk_sched_idle",
    "slice_us",
    "state_dir",
    "memory_pool",
    "bulk_threshold_us",
    "tail_threshold_us",
    "mem_margin",
    "mem_floor",
    "mem_reserve",
    "admission_wait_ms",
    "timeout_ms",
    "trainer",
    "trainer_interval_s",
    "max_connections",
    "header_read_timeout_ms",
    "body_limit",
    "drain_timeout_ms",
    "metrics_addr",
    "tokio_workers",
    "profile",
    "perf_sample_every",
    "predictor",
    "shares",
];

/// Parses a `metrics_addr` value (module docs): `Some(None)` for off, `None` when it does not parse.
fn parse_metrics_addr(v: &str) -> Option<Option<SocketAddr>> {
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if v.is_empty() || matches!(v, "off" | "none" | "false") {
        return Some(None);
    }
    if let Ok(port) = v.parse::<u16>() {
        return Some(Some(SocketAddr::new(LOOPBACK, port)));
    }
    if let Some(port) = v.strip_prefix("localhost:") {
        return Some(Some(SocketAddr::new(LOOPBACK, port.parse().ok()?)));
    }
    v.parse::<SocketAddr>().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("2 furlongs"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn toml_sets_knobs_and_names_a_bad_one() {
        let mut c = Config::default();
        c.apply_toml("workers = 3\nmemory_pool = \"1GiB\"\ntrainer = false\ntimeout_ms = 0\n")
            .unwrap();
        assert_eq!(
            (c.workers, c.memory_pool, c.trainer, c.timeout),
            (3, Some(1 << 30), false, None)
        );
        let e = c.apply_toml("mem_margin = 0.5").unwrap_err();
        assert!(e.to_string().contains("`mem_margin`"), "{e}");
        let e = c.apply_toml("wrokers = 2").unwrap_err();
        assert!(e.to_string().contains("unknown knob `wrokers`"), "{e}");
        let e = c.set("workers", "0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("`workers`"), "{e}");
    }

    #[test]
    fn every_knob_is_settable() {
        let sample = |k: &str| match k {
            "state_dir" => "/tmp/x",
            "memory_pool" | "mem_floor" | "body_limit" => "8MiB",
            "trainer" | "profile" | "bulk_sched_idle" => "false",
            "mem_margin" => "2.0",
            "mem_reserve" => "0.25",
            "metrics_addr" => "127.0.0.1:0",
            "predictor" => "ewma",
            "shares" => "equal",
            _ => "3",
        };
        let mut c = Config::default();
        for k in KNOBS {
            c.set(k, sample(k)).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        assert_eq!(c.body_limit, 8 << 20);
        assert_eq!((c.mem_reserve, c.bulk_sched_idle), (0.25, false));
        let e = c.set("mem_reserve", "0.9").unwrap_err();
        assert!(e.to_string().contains("`mem_reserve`"), "{e}");
        assert_eq!(c.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.predictor, Some(Serving::Ewma));
        assert_eq!(c.shares, SharesMode::Equal);
        assert_eq!(c.tail_threshold, Some(Duration::from_micros(3)));
        c.set("tail_threshold_us", "off").unwrap();
        assert_eq!(c.tail_threshold, None);
        let e = c.set("tail_threshold_us", "soon").unwrap_err();
        assert!(e.to_string().contains("`tail_threshold_us`"), "{e}");
        c.set("predictor", "model").unwrap();
        assert_eq!(c.predictor, None);
        let e = c.set("predictor", "oracle").unwrap_err();
        assert!(e.to_string().contains("`predictor`"), "{e}");
    }

    #[test]
    fn metrics_addr_is_off_by_default_loopback_for_a_port_and_names_itself_when_bad() {
        let mut c = Config::default();
        assert_eq!(c.metrics_addr, None);
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        for (v, want) in [
            ("9464", addr("127.0.0.1:9464")),
            ("localhost:0", addr("127.0.0.1:0")),
            ("[::1]:9464", addr("[::1]:9464")),
            ("0.0.0.0:9464", addr("0.0.0.0:9464")),
            ("off", None),
            ("", None),
        ] {
            c.set("metrics_addr", v).unwrap();
            assert_eq!(c.metrics_addr, want, "{v:?}");
        }
        for v in [
            "example.com:9464",
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost:x",
        ] {
            let e = c.set("metrics_addr", v).unwrap_err();
            assert!(e.to_string().contains("`metrics_addr`"), "{v:?}: {e}");
        }
        c.apply_toml("metrics_addr = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(c.metrics_addr, addr("127.0.0.1:9464"));
        c.apply_toml("metrics_addr = 9465").unwrap();
        assert_eq!(c.metrics_addr, addr("127.0.0.1:9465"));
    }
}
