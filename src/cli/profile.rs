//! `pagegen profile`: what a state directory learned, per class, read without the lock.
//!
//! Sources, both only read: the class registry `DIR/classes` (parsed with
//! [`parse_entries`](pagegen_core::registry::parse_entries), never through
//! [`ClassRegistry::open`](pagegen_core::ClassRegistry::open), which moves a corrupt file aside)
//! and the profile store `DIR/profiles` (through
//! [`StoreSnapshot::read_only`](pagegen_model::StoreSnapshot::read_only), which recovers nothing).
//!
//! Grants: the grant a request gets now comes from the live predictor, the class's annotation
//! (known only to the server's code) and the memory pool, none of which a state directory holds.
//! The profile shows the grant of each class's newest stored record instead, and says so.
//!
//! Accuracy: that of the predictions the requests actually ran under: the median of
//! `|central − actual| / actual` for CPU and peak memory, and the share of uncensored records whose
//! usage passed the upper estimate. Records of schema 4 say which predictor made their prediction
//! and whether it was widened to explore; the same figures per predictor leave explored requests
//! out (their upper estimates are not the predictor's), so a class's table shows what each
//! predictor that served it got right on this site's own traffic.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use pagegen_core::{Grant, Outcome, PoolId, ProfileRecord, Serving};
use pagegen_model::StoreSnapshot;

use super::json::Value;

/// What was learned, per class.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// The state directory read.
    pub dir: PathBuf,
    /// Records read from the store.
    pub records: usize,
    /// Classes with a name in the registry or records in the store, by id.
    pub classes: Vec<ClassProfile>,
    /// Problems met (file named in each); printed on stderr.
    pub warnings: Vec<String>,
    /// The registry file could not be parsed (exit status 2).
    pub registry_corrupt: bool,
}

/// Median and 99th percentile (nearest rank) of one measure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// 50th percentile.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
}

/// How well the served predictions matched one resource.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// Median `|central − actual| / actual` over uncensored records with a prediction (`None`:
    /// none). Shed, cancelled and demoted requests are left out: their usage is a lower bound.
    pub median_rel_error: Option<f64>,
    /// Share of uncensored predicted records whose usage passed the upper estimate.
    pub over_upper: Option<f64>,
}

/// How well one predictor's predictions matched, over the requests of a class it served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictorAccuracy {
    /// The predictor.
    pub predictor: Serving,
    /// Records whose prediction it made.
    pub requests: u64,
    /// Of those, the ones whose upper estimates were widened to explore (left out of the figures).
    pub explored: u64,
    /// CPU prediction accuracy.
    pub cpu: Accuracy,
    /// Memory prediction accuracy.
    pub mem: Accuracy,
}

/// One class's profile.
#[derive(Clone, Debug, Default)]
pub struct ClassProfile {
    /// Registry name (`#<id>` when the registry does not know it).
    pub name: String,
    /// Class id.
    pub id: u32,
    /// Records stored.
    pub requests: u64,
    /// Completed normally.
    pub completed: u64,
    /// Answered with a 5xx.
    pub failed: u64,
    /// A task panicked.
    pub panicked: u64,
    /// Refused at admission.
    pub shed: u64,
    /// Cancelled while running, by reason (the reason's display text).
    pub cancelled: BTreeMap<String, u64>,
    /// Moved to another pool while running.
    pub demoted: u64,
    /// CPU time, ns.
    pub cpu_ns: Spread,
    /// Wall time, ns.
    pub wall_ns: Spread,
    /// Peak net memory, bytes.
    pub peak_bytes: Spread,
    /// File I/O operations.
    pub io_ops: Spread,
    /// File I/O bytes read and written.
    pub io_bytes: Spread,
    /// Records that carried a prediction.
    pub predicted: u64,
    /// CPU prediction accuracy.
    pub cpu_accuracy: Accuracy,
    /// Memory prediction accuracy.
    pub mem_accuracy: Accuracy,
    /// Accuracy per predictor that served the class, in [`Serving::ALL`] order (records that say
    /// who predicted them: schema 4).
    pub by_predictor: Vec<PredictorAccuracy>,
    /// Records that carried a grant.
    pub granted: u64,
    /// Of those, the ones whose grant started them outside the latency pool (in bulk): with the
    /// CPU spread beside it, where placement and cost disagree (short requests started in bulk
    /// wait behind long ones).
    pub started_bulk: u64,
    /// The grant of the newest record that had one.
    pub last_grant: Option<Grant>,
    /// How it behaves beyond how much: calls, backends, blocking, scheduling, instruction mix.
    pub behaviour: Behaviour,
}

/// The behavioural profile of one class: how its requests use what they use.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// `tracing` spans closed per request.
    pub spans: Spread,
    /// Time inside spans per request, ns.
    pub span_ns: Spread,
    /// Outgoing backend calls per request.
    pub net_calls: Spread,
    /// Bytes received from backends per request.
    pub net_bytes_in: Spread,
    /// Backend latency per request (sum over its calls), ns.
    pub net_latency_ns: Spread,
    /// Bytes the request's own connection received for it (head and body; schema 3 records).
    pub socket_in: Spread,
    /// Bytes the request's own connection sent for it (its response; schema 3 records).
    pub socket_out: Spread,
    /// `spawn_blocking` time per request, ns.
    pub blocking_ns: Spread,
    /// Wake-to-first-poll delay of the request's root task, ns.
    pub first_poll_delay_ns: Spread,
    /// Share of file reads that were sequential (over all the class's reads; `None`: no reads).
    pub sequential_reads: Option<f64>,
    /// Instructions per request, where the records carry hardware counters (`None`: none did).
    pub instructions: Option<Spread>,
    /// Median instructions per cycle of the records with counters.
    pub ipc: Option<f64>,
    /// Requests that crossed 90 % of a grant (or memory's soft limit).
    pub checkpointed: u64,
    /// Requests whose grant a checkpoint extended.
    pub extended: u64,
    /// Requests for which a wanted extension was refused.
    pub refused: u64,
}

/// Reads `dir` (see the module docs). Never fails: what cannot be read becomes a warning.
pub fn read(dir: &Path) -> Profile {
    let (mut p, names, records) = load(dir);
    let mut by_class: BTreeMap<u32, Vec<&ProfileRecord>> = BTreeMap::new();
    for r in &records {
        by_class.entry(r.class.raw()).or_default().push(r);
    }
    // `default` (id 0) always exists; it is shown only when something ran in it.
    for &id in names.keys().filter(|&&id| id != 0) {
        by_class.entry(id).or_default();
    }
    p.classes = by_class
        .into_iter()
        .map(|(id, recs)| class_profile(class_name(&names, id), id, &recs))
        .collect();
    p
}

/// Every stored record of `dir` in the order it was stored (completion order), one JSON object
/// each (`pagegen profile --records`): what each request was predicted, by whom, what it was granted, what it used and
/// how it ended. The per-request view behind the per-class tables, for finding which requests a
/// grant rule sent where. The [`Profile`] carries the warnings and whether the registry is corrupt
/// (its classes are then named by id); its classes are left empty.
pub fn records(dir: &Path) -> (Profile, Vec<Value>) {
    let (p, names, records) = load(dir);
    let lines = records.iter().map(|r| record_json(r, &names)).collect();
    (p, lines)
}

/// The registry's names and the store's records; the profile holds the warnings and the count.
fn load(dir: &Path) -> (Profile, BTreeMap<u32, String>, Vec<ProfileRecord>) {
    let mut p = Profile {
        dir: dir.to_owned(),
        ..Profile::default()
    };
    let names = read_registry(&dir.join("classes"), &mut p);
    let records = match StoreSnapshot::read_only(dir.join("profiles")) {
        Ok(snap) => {
            let (records, recovery) = snap.read_recent(usize::MAX);
            p.warnings.extend(
                recovery
                    .notes
                    .into_iter()
                    .map(|n| format!("{n} (store left untouched)")),
            );
            records
        }
        Err(e) => {
            p.warnings
                .push(format!("cannot read the profile store: {e}"));
            Vec::new()
        }
    };
    p.records = records.len();
    (p, names, records)
}

fn class_name(names: &BTreeMap<u32, String>, id: u32) -> String {
    names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
}

fn record_json(r: &ProfileRecord, names: &BTreeMap<u32, String>) -> Value {
    let estimate = |e: pagegen_core::Estimate| {
        Value::Obj(vec![
            ("central", Value::UInt(e.central)),
            ("upper", Value::UInt(e.upper)),
        ])
    };
    let predicted = r.predicted.map_or(Value::Null, |d| {
        Value::Obj(vec![
            ("cpu_ns", estimate(d.cpu_ns)),
            ("wall_ns", estimate(d.wall_ns)),
            ("peak_bytes", estimate(d.peak_bytes)),
            ("io_ops", estimate(d.io_ops)),
            ("io_bytes", estimate(d.io_bytes)),
        ])
    });
    let (outcome, reason) = match r.outcome {
        Outcome::Completed => ("completed", Value::Null),
        Outcome::Failed => ("failed", Value::Null),
        Outcome::Panicked => ("panicked", Value::Null),
        Outcome::Shed => ("shed", Value::Null),
        Outcome::Cancelled(why) => ("cancelled", Value::Str(why.to_string())),
    };
    let u = &r.usage;
    Value::Obj(vec![
        ("started_unix_ms", Value::UInt(r.started_unix_ms)),
        ("request_id", Value::UInt(r.request_id)),
        ("class", Value::Str(class_name(names, r.class.raw()))),
        ("class_id", Value::UInt(u64::from(r.class.raw()))),
        ("outcome", Value::Str(outcome.into())),
        ("cancel_reason", reason),
        ("demoted", Value::Bool(r.demoted)),
        (
            "predictor",
            r.served_by
                .map_or(Value::Null, |s| Value::Str(s.name().into())),
        ),
        ("explored", Value::Bool(r.explored)),
        ("predicted", predicted),
        ("grant", r.grant.map_or(Value::Null, grant_json)),
        (
            "used",
            Value::Obj(vec![
                ("cpu_ns", Value::UInt(u.cpu.cpu_ns)),
                ("wall_ns", Value::UInt(u.cpu.wall_ns)),
                (
                    "first_poll_delay_ns",
                    Value::UInt(u.cpu.first_poll_delay_ns),
                ),
                ("peak_bytes", Value::UInt(peak(r))),
                ("io_ops", Value::UInt(u.io.total_ops())),
                ("io_bytes", Value::UInt(u.io.read_bytes + u.io.write_bytes)),
                ("socket_bytes_in", Value::UInt(u.socket.bytes_in)),
                ("socket_bytes_out", Value::UInt(u.socket.bytes_out)),
            ]),
        ),
    ])
}

fn grant_json(g: Grant) -> Value {
    Value::Obj(vec![
        ("pool", Value::Str(pool_name(g.pool))),
        ("cpu_ns", limit(g.cpu_ns)),
        ("wall_ns", limit(g.wall_ns)),
        ("mem_soft_bytes", limit(g.mem_soft)),
        ("mem_hard_bytes", limit(g.mem_hard)),
        ("io_depth", depth(g.io_depth)),
        ("io_bytes_per_sec", limit(g.io_bytes_per_sec)),
        ("net_priority", Value::UInt(u64::from(g.net_priority))),
    ])
}

/// The registry's names by id; a missing file is an empty registry, a corrupt one a warning.
fn read_registry(path: &Path, p: &mut Profile) -> BTreeMap<u32, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            p.warnings.push(format!("{}: {e}", path.display()));
            return BTreeMap::new();
        }
    };
    let parsed = String::from_utf8(bytes)
        .map_err(|_| "not UTF-8".to_string())
        .and_then(|t| pagegen_core::registry::parse_entries(&t));
    match parsed {
        Ok(entries) => entries
            .into_iter()
            // Placeholders the runtime writes for id gaps (a NUL no route name can hold).
            .filter(|(_, n)| !n.starts_with('\0'))
            .map(|(id, n)| (id.raw(), n.to_string()))
            .collect(),
        Err(why) => {
            p.registry_corrupt = true;
            p.warnings.push(format!(
                "{}: corrupt class registry ({why}); left untouched, classes shown by id",
                path.display()
            ));
            BTreeMap::new()
        }
    }
}

fn class_profile(name: String, id: u32, recs: &[&ProfileRecord]) -> ClassProfile {
    let mut c = ClassProfile {
        name,
        id,
        requests: recs.len() as u64,
        ..ClassProfile::default()
    };
    for r in recs {
        match r.outcome {
            Outcome::Completed => c.completed += 1,
            Outcome::Failed => c.failed += 1,
            Outcome::Panicked => c.panicked += 1,
            Outcome::Shed => c.shed += 1,
            Outcome::Cancelled(why) => *c.cancelled.entry(why.to_string()).or_default() += 1,
        }
        c.demoted += u64::from(r.demoted);
        if let Some(g) = r.grant {
            c.granted += 1;
            c.started_bulk += u64::from(g.pool != pagegen_core::PoolId::LATENCY);
        }
    }
    let spread = |f: &dyn Fn(&ProfileRecord) -> u64| spread(recs.iter().map(|r| f(r)).collect());
    c.cpu_ns = spread(&|r| r.usage.cpu.cpu_ns);
    c.wall_ns = spread(&|r| r.usage.cpu.wall_ns);
    c.peak_bytes = spread(&peak);
    c.io_ops = spread(&|r| r.usage.io.total_ops());
    c.io_bytes = spread(&|r| r.usage.io.read_bytes + r.usage.io.write_bytes);
    c.predicted = recs.iter().filter(|r| r.predicted.is_some()).count() as u64;
    c.cpu_accuracy = accuracy(recs, |d| d.cpu_ns, |r| r.usage.cpu.cpu_ns);
    c.mem_accuracy = accuracy(recs, |d| d.peak_bytes, peak);
    c.by_predictor = Serving::ALL
        .into_iter()
        .filter_map(|p| {
            let mine: Vec<&ProfileRecord> = recs
                .iter()
                .copied()
                .filter(|r| r.served_by == Some(p))
                .collect();
            let plain: Vec<&ProfileRecord> = mine.iter().copied().filter(|r| !r.explored).collect();
            (!mine.is_empty()).then(|| PredictorAccuracy {
                predictor: p,
                requests: mine.len() as u64,
                explored: (mine.len() - plain.len()) as u64,
                cpu: accuracy(&plain, |d| d.cpu_ns, |r| r.usage.cpu.cpu_ns),
                mem: accuracy(&plain, |d| d.peak_bytes, peak),
            })
        })
        .collect();
    // Store order is append order: the newest record is last.
    c.last_grant = recs.iter().rev().find_map(|r| r.grant);
    c.behaviour = behaviour(recs);
    c
}

fn behaviour(recs: &[&ProfileRecord]) -> Behaviour {
    use pagegen_core::{CheckpointLevel, IoOpKind, Resource};
    let ran: Vec<&ProfileRecord> = recs
        .iter()
        .copied()
        .filter(|r| r.outcome != Outcome::Shed)
        .collect();
    let spread = |f: &dyn Fn(&ProfileRecord) -> u64| spread(ran.iter().map(|r| f(r)).collect());
    let counted: Vec<_> = ran.iter().filter_map(|r| r.usage.counters).collect();
    let reads: u64 = ran
        .iter()
        .map(|r| r.usage.io.ops[IoOpKind::Read as usize])
        .sum();
    let sequential: u64 = ran.iter().map(|r| r.usage.io.sequential_reads).sum();
    let mut ipc: Vec<f64> = counted
        .iter()
        .filter(|c| c.cycles > 0)
        .map(|c| c.instructions as f64 / c.cycles as f64)
        .collect();
    ipc.sort_by(f64::total_cmp);
    let any = |f: &dyn Fn(Resource) -> bool| Resource::ALL.iter().any(|&x| f(x));
    Behaviour {
        spans: spread(&|r| r.usage.spans.spans),
        span_ns: spread(&|r| r.usage.spans.span_ns),
        net_calls: spread(&|r| r.usage.net.requests),
        net_bytes_in: spread(&|r| r.usage.net.bytes_in),
        net_latency_ns: spread(&|r| r.usage.net.latency_ns),
        socket_in: spread(&|r| r.usage.socket.bytes_in),
        socket_out: spread(&|r| r.usage.socket.bytes_out),
        blocking_ns: spread(&|r| r.usage.cpu.blocking_ns),
        first_poll_delay_ns: spread(&|r| r.usage.cpu.first_poll_delay_ns),
        sequential_reads: (reads > 0).then(|| sequential as f64 / reads as f64),
        instructions: (!counted.is_empty())
            .then(|| spread_of(counted.iter().map(|c| c.instructions).collect())),
        ipc: (!ipc.is_empty()).then(|| ipc[ipc.len() / 2]),
        checkpointed: ran
            .iter()
            .filter(|r| {
                let log = r.checkpoints;
                any(&|x| {
                    log.reached(x, CheckpointLevel::Ninety) || log.reached(x, CheckpointLevel::Soft)
                })
            })
            .count() as u64,
        extended: ran.iter().filter(|r| r.checkpoints.extended != 0).count() as u64,
        refused: ran.iter().filter(|r| r.checkpoints.refused != 0).count() as u64,
    }
}

fn peak(r: &ProfileRecord) -> u64 {
    r.usage.mem.peak_net_bytes.max(0) as u64
}

/// Nearest-rank percentile of sorted values.
fn rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

fn spread_of(v: Vec<u64>) -> Spread {
    spread(v)
}

fn spread(mut v: Vec<u64>) -> Spread {
    v.sort_unstable();
    Spread {
        p50: rank(&v, 0.5),
        p99: rank(&v, 0.99),
    }
}

fn accuracy(
    recs: &[&ProfileRecord],
    estimate: impl Fn(&pagegen_core::Demand) -> pagegen_core::Estimate,
    actual: impl Fn(&ProfileRecord) -> u64,
) -> Accuracy {
    let mut errors = Vec::new();
    let (mut uncensored, mut over) = (0u64, 0u64);
    for r in recs {
        let Some(d) = &r.predicted else { continue };
        // A censored record's usage is only a lower bound (a shed request's is zero), so an
        // error against it says nothing about the prediction: both figures use uncensored ones.
        if r.censored() {
            continue;
        }
        let e = estimate(d);
        let a = actual(r);
        // An actual of zero has no relative error; 1 (ns or byte) keeps it finite and large.
        errors.push(e.central.abs_diff(a) as f64 / a.max(1) as f64);
        uncensored += 1;
        over += u64::from(a > e.upper);
    }
    errors.sort_by(f64::total_cmp);
    Accuracy {
        median_rel_error: (!errors.is_empty()).then(|| {
            let i = ((0.5 * errors.len() as f64).ceil() as usize).clamp(1, errors.len());
            errors[i - 1]
        }),
        over_upper: (uncensored > 0).then(|| over as f64 / uncensored as f64),
    }
}

/// `u64::MAX` (unlimited) as `null`.
fn limit(v: u64) -> Value {
    if v == u64::MAX {
        Value::Null
    } else {
        Value::UInt(v)
    }
}

/// A pool's name as the default runtime names its pools.
pub(super) fn pool_name(p: PoolId) -> String {
    match p {
        PoolId::LATENCY => "latency".into(),
        PoolId::BULK => "bulk".into(),
        p => format!("pool {}", p.0),
    }
}

/// `u32::MAX` (an unlimited I/O depth) as `null`.
fn depth(v: u32) -> Value {
    if v == u32::MAX {
        Value::Null
    } else {
        Value::UInt(u64::from(v))
    }
}

fn spread_json(s: Spread) -> Value {
    Value::Obj(vec![
        ("p50", Value::UInt(s.p50)),
        ("p99", Value::UInt(s.p99)),
    ])
}

fn accuracy_json(a: Accuracy) -> Value {
    let opt = |v: Option<f64>| v.map_or(Value::Null, Value::Num);
    Value::Obj(vec![
        ("median_rel_error", opt(a.median_rel_error)),
        ("over_upper_share", opt(a.over_upper)),
    ])
}

fn behaviour_json(b: &Behaviour) -> Value {
    let opt = |v: Option<f64>| v.map_or(Value::Null, Value::Num);
    Value::Obj(vec![
        ("spans", spread_json(b.spans)),
        ("span_ns", spread_json(b.span_ns)),
        ("net_calls", spread_json(b.net_calls)),
        ("net_bytes_in", spread_json(b.net_bytes_in)),
        ("net_latency_ns", spread_json(b.net_latency_ns)),
        ("socket_bytes_in", spread_json(b.socket_in)),
        ("socket_bytes_out", spread_json(b.socket_out)),
        ("blocking_ns", spread_json(b.blocking_ns)),
        ("first_poll_delay_ns", spread_json(b.first_poll_delay_ns)),
        ("sequential_read_share", opt(b.sequential_reads)),
        (
            "instructions",
            b.instructions.map_or(Value::Null, spread_json),
        ),
        ("ipc", opt(b.ipc)),
        ("checkpointed", Value::UInt(b.checkpointed)),
        ("extended", Value::UInt(b.extended)),
        ("extension_refused", Value::UInt(b.refused)),
    ])
}

impl Profile {
    /// Whether nothing was learned yet (no records, no class besides `default`).
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.classes.is_empty()
    }

    /// The profile as one JSON object with a `classes` array.
    pub fn to_json(&self) -> Value {
        let classes = self.classes.iter().map(|c| {
            let grant = c.last_grant.map_or(Value::Null, grant_json);
            Value::Obj(vec![
                ("name", Value::Str(c.name.clone())),
                ("id", Value::UInt(u64::from(c.id))),
                ("requests", Value::UInt(c.requests)),
                (
                    "outcomes",
                    Value::Obj(vec![
                        ("completed", Value::UInt(c.completed)),
                        ("failed", Value::UInt(c.failed)),
                        ("panicked", Value::UInt(c.panicked)),
                        ("shed", Value::UInt(c.shed)),
                        (
                            "cancelled",
                            Value::Arr(
                                c.cancelled
                                    .iter()
                                    .map(|(why, n)| {
                                        Value::Obj(vec![
                                            ("reason", Value::Str(why.clone())),
                                            ("count", Value::UInt(*n)),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                    ]),
                ),
                ("demoted", Value::UInt(c.demoted)),
                ("cpu_ns", spread_json(c.cpu_ns)),
                ("wall_ns", spread_json(c.wall_ns)),
                ("peak_bytes", spread_json(c.peak_bytes)),
                ("io_ops", spread_json(c.io_ops)),
                ("io_bytes", spread_json(c.io_bytes)),
                ("predicted", Value::UInt(c.predicted)),
                ("cpu_accuracy", accuracy_json(c.cpu_accuracy)),
                ("mem_accuracy", accuracy_json(c.mem_accuracy)),
                (
                    "by_predictor",
                    Value::Arr(
                        c.by_predictor
                            .iter()
                            .map(|p| {
                                Value::Obj(vec![
                                    ("predictor", Value::Str(p.predictor.name().into())),
                                    ("requests", Value::UInt(p.requests)),
                                    ("explored", Value::UInt(p.explored)),
                                    ("cpu_accuracy", accuracy_json(p.cpu)),
                                    ("mem_accuracy", accuracy_json(p.mem)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("granted", Value::UInt(c.granted)),
                ("started_bulk", Value::UInt(c.started_bulk)),
                ("last_grant", grant),
                ("behaviour", behaviour_json(&c.behaviour)),
            ])
        });
        Value::Obj(vec![
            ("state_dir", Value::Str(self.dir.display().to_string())),
            ("records", Value::UInt(self.records as u64)),
            ("grants", Value::Str("last recorded per class".into())),
            ("registry_corrupt", Value::Bool(self.registry_corrupt)),
            ("classes", Value::Arr(classes.collect())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(spread(vec![]), Spread { p50: 0, p99: 0 });
        assert_eq!(spread(vec![5]), Spread { p50: 5, p99: 5 });
        let s = spread((1..=100).rev().collect());
        assert_eq!((s.p50, s.p99), (50, 99));
    }

    #[test]
    fn placement_counts_the_requests_started_in_bulk() {
        use pagegen_core::{ClassId, Grant, PoolId, ProfileRecord, Usage};
        let class = ClassId::from_raw(1);
        let granted = |pool: PoolId| {
            let mut r = ProfileRecord::new(0, class, Usage::default());
            r.grant = Some(Grant {
                pool,
                ..Grant::unlimited(class)
            });
            r
        };
        let recs = [
            granted(PoolId::LATENCY),
            granted(PoolId::BULK),
            granted(PoolId::BULK),
            ProfileRecord::new(0, class, Usage::default()),
        ];
        let refs: Vec<&ProfileRecord> = recs.iter().collect();
        let c = class_profile("/search".into(), 1, &refs);
        assert_eq!((c.requests, c.granted, c.started_bulk), (4, 3, 2));
        assert_eq!(c.last_grant.map(|g| g.pool), Some(PoolId::BULK));
    }

    /// A record of class 1 that used `cpu_ns` of CPU, predicted at 1 ms (upper 2 ms).
    fn predicted_1ms(cpu_ns: u64) -> ProfileRecord {
        use pagegen_core::{ClassId, Demand, Estimate, Usage};
        let mut usage = Usage::default();
        usage.cpu.cpu_ns = cpu_ns;
        let mut r = ProfileRecord::new(0, ClassId::from_raw(1), usage);
        r.predicted = Some(Demand {
            cpu_ns: Estimate::new(1_000_000, 2_000_000),
            ..Demand::default()
        });
        r
    }

    #[test]
    fn accuracy_leaves_out_shed_cancelled_and_demoted_requests() {
        let record = predicted_1ms;
        // Three completed requests predicted exactly.
        let mut recs: Vec<ProfileRecord> = (0..3).map(|_| record(1_000_000)).collect();
        // Two shed (usage zero), one demoted and one cancelled early (usage a lower bound).
        for _ in 0..2 {
            let mut r = record(0);
            r.outcome = Outcome::Shed;
            recs.push(r);
        }
        let mut r = record(10);
        r.demoted = true;
        recs.push(r);
        let mut r = record(10);
        r.outcome = Outcome::Cancelled(pagegen_core::CancelReason::Deadline);
        recs.push(r);
        let refs: Vec<&ProfileRecord> = recs.iter().collect();
        let a = accuracy(&refs, |d| d.cpu_ns, |r| r.usage.cpu.cpu_ns);
        assert_eq!(a.median_rel_error, Some(0.0));
        assert_eq!(a.over_upper, Some(0.0));
        // Only censored records: no figure rather than a misleading one.
        let a = accuracy(&refs[3..], |d| d.cpu_ns, |r| r.usage.cpu.cpu_ns);
        assert_eq!((a.median_rel_error, a.over_upper), (None, None));
    }

    #[test]
    fn accuracy_per_predictor_counts_who_predicted_and_leaves_exploration_out() {
        let record = |cpu_ns: u64, by: Option<Serving>, explored: bool| {
            let mut r = predicted_1ms(cpu_ns);
            (r.served_by, r.explored) = (by, explored);
            r
        };
        let recs = [
            // The EWMA: right twice, and once past its upper estimate.
            record(1_000_000, Some(Serving::Ewma), false),
            record(1_000_000, Some(Serving::Ewma), false),
            record(3_000_000, Some(Serving::Ewma), false),
            // The model: right, plus an explored request past its (widened) upper, left out.
            record(1_000_000, Some(Serving::Recurrent), false),
            record(9_000_000, Some(Serving::Recurrent), true),
            // An older record that does not say.
            record(5_000_000, None, false),
        ];
        let refs: Vec<&ProfileRecord> = recs.iter().collect();
        let c = class_profile("c".into(), 1, &refs);
        assert_eq!(c.predicted, 6);
        let by: Vec<(Serving, u64, u64)> = c
            .by_predictor
            .iter()
            .map(|p| (p.predictor, p.requests, p.explored))
            .collect();
        assert_eq!(
            by,
            vec![(Serving::Ewma, 3, 0), (Serving::Recurrent, 2, 1)],
            "in Serving::ALL order, only those that served"
        );
        let ewma = c.by_predictor[0].cpu;
        assert_eq!(ewma.median_rel_error, Some(0.0));
        assert_eq!(ewma.over_upper, Some(1.0 / 3.0));
        let model = c.by_predictor[1].cpu;
        assert_eq!(
            (model.median_rel_error, model.over_upper),
            (Some(0.0), Some(0.0))
        );
        // The class's own figure keeps every request's prediction as it ran.
        assert_eq!(c.cpu_accuracy.over_upper, Some(3.0 / 6.0));
        let json = Profile {
            classes: vec![c],
            ..Profile::default()
        }
        .to_json()
        .to_string();
        assert!(
            json.contains(r#""by_predictor":[{"predictor":"ewma","requests":3,"explored":0,"#),
            "{json}"
        );
    }
}
