//! One finished request, as the profiler stores it and the model learns from it.
//!
//! Contracts:
//! - A [`ProfileRecord`] encodes to a self-describing byte string: magic `PGPR`, the schema version
//!   ([`PROFILE_SCHEMA_VERSION`], little-endian u16), then fixed little-endian fields in declaration
//!   order. Framing and checksums belong to the store that keeps records (pagegen-model); this encoding
//!   only has to be exact and versioned.
//! - [`ProfileRecord::decode`] rejects bytes from a newer schema with
//!   [`DecodeError::UnsupportedVersion`] and anything malformed with another [`DecodeError`]; it never
//!   panics on any input. When the schema changes, bump the version and keep decoding the old one.
//! - A record is **censored** ([`ProfileRecord::censored`]) when its usage is only a lower bound of what
//!   the request would have used: it was cancelled, shed, panicked, or demoted to the bulk pool (its
//!   wall time then reflects the demotion, not the request). Learners must treat such a record as
//!   "at least this much", never as an observation of the demand.
//! - [`Features`] are a fixed-width vector; their layout is defined by pagegen-model's feature
//!   extractor. Width never depends on cardinality (hashed buckets), so records stay fixed-size.

use crate::class::{ClassId, PoolId};
use crate::ctx::CheckpointLog;
use crate::demand::{Demand, Estimate, Serving};
use crate::error::DecodeError;
use crate::grant::Grant;
use crate::hook::CancelReason;
use crate::usage::{
    CpuUsage, IoOpKind, IoUsage, MemUsage, NetUsage, PerfCounters, SocketUsage, SpanUsage, Usage,
    LOG2_BUCKETS,
};

/// Version of the record encoding written by this build.
pub const PROFILE_SCHEMA_VERSION: u16 = 4;
/// Number of request features.
pub const FEATURE_WIDTH: usize = 32;
const MAGIC: &[u8; 4] = b"PGPR";

/// A request's features, fixed width.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Features(pub [f32; FEATURE_WIDTH]);

impl Default for Features {
    fn default() -> Self {
        Features([0.0; FEATURE_WIDTH])
    }
}

/// How a request ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Answered normally.
    Completed,
    /// The handler returned an error response (5xx) — usage is complete, the answer was not.
    Failed,
    /// A task of the request panicked.
    Panicked,
    /// Refused at admission (never ran, or ran only until shed).
    Shed,
    /// Stopped while running.
    Cancelled(CancelReason),
}

impl Outcome {
    fn encode(self) -> (u8, u8) {
        match self {
            Outcome::Completed => (0, 0),
            Outcome::Failed => (1, 0),
            Outcome::Panicked => (2, 0),
            Outcome::Shed => (3, 0),
            Outcome::Cancelled(r) => (4, r.to_tag()),
        }
    }
    fn decode(tag: u8, reason: u8) -> Result<Self, DecodeError> {
        Ok(match tag {
            0 => Outcome::Completed,
            1 => Outcome::Failed,
            2 => Outcome::Panicked,
            3 => Outcome::Shed,
            4 => Outcome::Cancelled(CancelReason::from_tag(reason).ok_or(
                DecodeError::InvalidField {
                    field: "outcome.reason",
                    value: u64::from(reason),
                },
            )?),
            t => {
                return Err(DecodeError::InvalidField {
                    field: "outcome",
                    value: u64::from(t),
                })
            }
        })
    }
}

/// One finished request.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ProfileRecord {
    /// Request id (unique within one process run).
    pub request_id: u64,
    /// Class.
    pub class: ClassId,
    /// Admission time, ms since the Unix epoch (orders records across restarts).
    pub started_unix_ms: u64,
    /// Features the prediction was made from.
    pub features: Features,
    /// The prediction, if one was made.
    pub predicted: Option<Demand>,
    /// The grant it ran under, if any.
    pub grant: Option<Grant>,
    /// What it used.
    pub usage: Usage,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether a checkpoint moved it to another pool while it ran.
    pub demoted: bool,
    /// What its checkpoints saw and did (schema 2; zero in records of schema 1). Schema 3 appends
    /// the socket usage ([`Usage::socket`]).
    pub checkpoints: CheckpointLog,
    /// The predictor whose prediction ([`predicted`](Self::predicted)) the request was granted
    /// from (schema 4; `None` in older records and where the runtime did not say).
    pub served_by: Option<Serving>,
    /// Whether its upper estimates were widened to explore (one request in every
    /// `explore_every`, so that the model also sees what requests do with more room; schema 4).
    pub explored: bool,
}

impl ProfileRecord {
    /// A completed record with no prediction or grant (the shape tests and replays start from).
    pub fn new(request_id: u64, class: ClassId, usage: Usage) -> Self {
        ProfileRecord {
            request_id,
            class,
            started_unix_ms: 0,
            features: Features::default(),
            predicted: None,
            grant: None,
            usage,
            outcome: Outcome::Completed,
            demoted: false,
            checkpoints: CheckpointLog::default(),
            served_by: None,
            explored: false,
        }
    }

    /// Whether the usage is only a lower bound (see the module docs).
    pub fn censored(&self) -> bool {
        self.demoted || !matches!(self.outcome, Outcome::Completed | Outcome::Failed)
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.bytes(MAGIC);
        w.u16(PROFILE_SCHEMA_VERSION);
        w.u64(self.request_id);
        w.u32(self.class.raw());
        w.u64(self.started_unix_ms);
        for f in self.features.0 {
            w.f32(f);
        }
        match &self.predicted {
            None => w.u8(0),
            Some(d) => {
                w.u8(1);
                for e in [d.cpu_ns, d.wall_ns, d.peak_bytes, d.io_ops, d.io_bytes] {
                    w.u64(e.central);
                    w.u64(e.upper);
                }
                w.f32(d.upper_quantile);
            }
        }
        match &self.grant {
            None => w.u8(0),
            Some(g) => {
                w.u8(1);
                w.u32(g.class.raw());
                w.u8(g.pool.0);
                w.u64(g.cpu_ns);
                w.u64(g.mem_soft);
                w.u64(g.mem_hard);
                w.u32(g.io_depth);
                w.u64(g.io_bytes_per_sec);
                w.u64(g.wall_ns);
                w.u8(g.net_priority);
            }
        }
        let u = &self.usage;
        let c = &u.cpu;
        for v in [
            c.cpu_ns,
            c.wall_ns,
            c.busy_ns,
            c.polls,
            c.sched_delay_ns,
            c.max_sched_delay_ns,
            c.first_poll_delay_ns,
            c.blocking_ns,
            c.blocking_calls,
        ] {
            w.u64(v);
        }
        let m = &u.mem;
        for v in [m.alloc_bytes, m.freed_bytes, m.allocs, m.frees] {
            w.u64(v);
        }
        w.i64(m.net_bytes);
        w.i64(m.peak_net_bytes);
        w.u64(m.same_poll_freed_bytes);
        m.size_classes.iter().for_each(|&v| w.u64(v));
        let io = &u.io;
        io.ops.iter().for_each(|&v| w.u64(v));
        for v in [io.read_bytes, io.write_bytes, io.latency_ns] {
            w.u64(v);
        }
        io.latency_log2.iter().for_each(|&v| w.u64(v));
        w.u64(io.sequential_reads);
        w.u64(io.distinct_files);
        let n = &u.net;
        for v in [n.requests, n.bytes_out, n.bytes_in, n.latency_ns] {
            w.u64(v);
        }
        w.u64(u.spans.spans);
        w.u64(u.spans.span_ns);
        match &u.counters {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                for v in [p.instructions, p.cycles, p.cache_misses, p.branch_misses] {
                    w.u64(v);
                }
            }
        }
        let (tag, reason) = self.outcome.encode();
        w.u8(tag);
        w.u8(reason);
        w.u8(u8::from(self.demoted));
        w.u32(self.checkpoints.reached);
        w.u8(self.checkpoints.extended);
        w.u8(self.checkpoints.refused);
        let s = &u.socket;
        for v in [
            s.recv_ops,
            s.send_ops,
            s.bytes_in,
            s.bytes_out,
            s.recv_ns,
            s.send_ns,
        ] {
            w.u64(v);
        }
        // 0: not known; otherwise the predictor's code + 1.
        w.u8(self.served_by.map_or(0, |p| p as u8 + 1));
        w.u8(u8::from(self.explored));
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1024);
        self.encode(&mut v);
        v
    }

    /// Decodes one record occupying all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version > PROFILE_SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: PROFILE_SCHEMA_VERSION,
            });
        }
        if version == 0 {
            return Err(DecodeError::InvalidField {
                field: "version",
                value: 0,
            });
        }
        let request_id = r.u64()?;
        let class = ClassId::from_raw(r.u32()?);
        let started_unix_ms = r.u64()?;
        let mut features = Features::default();
        for f in features.0.iter_mut() {
            *f = r.f32()?;
        }
        let predicted = match r.flag("predicted")? {
            false => None,
            true => {
                let mut e = [Estimate::default(); 5];
                for x in e.iter_mut() {
                    let central = r.u64()?;
                    let upper = r.u64()?;
                    *x = Estimate { central, upper };
                }
                Some(Demand {
                    cpu_ns: e[0],
                    wall_ns: e[1],
                    peak_bytes: e[2],
                    io_ops: e[3],
                    io_bytes: e[4],
                    upper_quantile: r.f32()?,
                })
            }
        };
        let grant = match r.flag("grant")? {
            false => None,
            true => Some(Grant {
                class: ClassId::from_raw(r.u32()?),
                pool: PoolId(r.u8()?),
                cpu_ns: r.u64()?,
                mem_soft: r.u64()?,
                mem_hard: r.u64()?,
                io_depth: r.u32()?,
                io_bytes_per_sec: r.u64()?,
                wall_ns: r.u64()?,
                net_priority: r.u8()?,
            }),
        };
        let cpu = CpuUsage {
            cpu_ns: r.u64()?,
            wall_ns: r.u64()?,
            busy_ns: r.u64()?,
            polls: r.u64()?,
            sched_delay_ns: r.u64()?,
            max_sched_delay_ns: r.u64()?,
            first_poll_delay_ns: r.u64()?,
            blocking_ns: r.u64()?,
            blocking_calls: r.u64()?,
        };
        let mut mem = MemUsage {
            alloc_bytes: r.u64()?,
            freed_bytes: r.u64()?,
            allocs: r.u64()?,
            frees: r.u64()?,
            net_bytes: r.i64()?,
            peak_net_bytes: r.i64()?,
            same_poll_freed_bytes: r.u64()?,
            size_classes: [0; LOG2_BUCKETS],
        };
        for v in mem.size_classes.iter_mut() {
            *v = r.u64()?;
        }
        let mut io = IoUsage::default();
        for v in io.ops.iter_mut().take(IoOpKind::COUNT) {
            *v = r.u64()?;
        }
        io.read_bytes = r.u64()?;
        io.write_bytes = r.u64()?;
        io.latency_ns = r.u64()?;
        for v in io.latency_log2.iter_mut() {
            *v = r.u64()?;
        }
        io.sequential_reads = r.u64()?;
        io.distinct_files = r.u64()?;
        let net = NetUsage {
            requests: r.u64()?,
            bytes_out: r.u64()?,
            bytes_in: r.u64()?,
            latency_ns: r.u64()?,
        };
        let spans = SpanUsage {
            spans: r.u64()?,
            span_ns: r.u64()?,
        };
        let counters = match r.flag("counters")? {
            false => None,
            true => Some(PerfCounters {
                instructions: r.u64()?,
                cycles: r.u64()?,
                cache_misses: r.u64()?,
                branch_misses: r.u64()?,
            }),
        };
        let tag = r.u8()?;
        let reason = r.u8()?;
        let outcome = Outcome::decode(tag, reason)?;
        let demoted = r.flag("demoted")?;
        let checkpoints = if version >= 2 {
            CheckpointLog {
                reached: r.u32()?,
                extended: r.u8()?,
                refused: r.u8()?,
            }
        } else {
            CheckpointLog::default()
        };
        let socket = if version >= 3 {
            SocketUsage {
                recv_ops: r.u64()?,
                send_ops: r.u64()?,
                bytes_in: r.u64()?,
                bytes_out: r.u64()?,
                recv_ns: r.u64()?,
                send_ns: r.u64()?,
            }
        } else {
            SocketUsage::default()
        };
        let (served_by, explored) = if version >= 4 {
            let served_by = match r.u8()? {
                0 => None,
                v => Some(
                    Serving::try_from_u8(v - 1).ok_or(DecodeError::InvalidField {
                        field: "served_by",
                        value: u64::from(v),
                    })?,
                ),
            };
            (served_by, r.flag("explored")?)
        } else {
            (None, false)
        };
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(ProfileRecord {
            request_id,
            class,
            started_unix_ms,
            features,
            predicted,
            grant,
            usage: Usage {
                cpu,
                mem,
                io,
                net,
                socket,
                spans,
                counters,
            },
            outcome,
            demoted,
            checkpoints,
            served_by,
            explored,
        })
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.bytes(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                offset: self.pos,
                needed: self.pos + n - self.buf.len(),
            }),
        }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidField {
                field,
                value: u64::from(v),
            }),
        }
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::Resource;
    use proptest::prelude::*;

    fn sample() -> ProfileRecord {
        let mut usage = Usage::default();
        usage.cpu.cpu_ns = 1_234_567;
        usage.cpu.polls = 3;
        usage.mem.alloc_bytes = 4096;
        usage.mem.net_bytes = -12;
        usage.mem.peak_net_bytes = 4000;
        usage.mem.size_classes[12] = 1;
        usage.io.ops[IoOpKind::Read as usize] = 40;
        usage.io.latency_log2[10] = 40;
        usage.counters = Some(PerfCounters {
            instructions: 10,
            cycles: 20,
            cache_misses: 1,
            branch_misses: 2,
        });
        let mut r = ProfileRecord::new(77, ClassId::from_raw(5), usage);
        r.features.0[3] = 1.5;
        r.predicted = Some(Demand {
            cpu_ns: Estimate::new(1_000_000, 2_000_000),
            upper_quantile: 0.99,
            ..Demand::default()
        });
        r.served_by = Some(Serving::Recurrent);
        r.explored = true;
        r.grant = Some(Grant::unlimited(ClassId::from_raw(5)));
        r.outcome = Outcome::Cancelled(CancelReason::BudgetExceeded(Resource::Memory));
        r
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let bytes = r.to_bytes();
        assert_eq!(ProfileRecord::decode(&bytes), Ok(r));
        let plain = ProfileRecord::new(1, ClassId::DEFAULT, Usage::default());
        assert_eq!(ProfileRecord::decode(&plain.to_bytes()), Ok(plain));
    }

    #[test]
    fn every_predictor_round_trips_and_an_unknown_one_is_an_error() {
        let mut r = sample();
        for p in Serving::ALL.map(Some).into_iter().chain([None]) {
            r.served_by = p;
            assert_eq!(ProfileRecord::decode(&r.to_bytes()), Ok(r));
        }
        let mut bytes = r.to_bytes();
        let at = bytes.len() - 2;
        bytes[at] = Serving::ALL.len() as u8 + 1;
        assert_eq!(
            ProfileRecord::decode(&bytes),
            Err(DecodeError::InvalidField {
                field: "served_by",
                value: Serving::ALL.len() as u64 + 1
            })
        );
    }

    #[test]
    fn schema_1_to_3_records_still_decode_with_what_they_lack_zeroed() {
        let mut r = sample();
        r.checkpoints = CheckpointLog {
            reached: 0b101,
            extended: 1 << 2,
            refused: 1,
        };
        r.usage.socket = SocketUsage {
            recv_ops: 3,
            send_ops: 2,
            bytes_in: 517,
            bytes_out: 9_000,
            recv_ns: 40_000,
            send_ns: 7_000,
        };
        let v4 = r.to_bytes();
        assert_eq!(ProfileRecord::decode(&v4), Ok(r));
        // Schema 3 is schema 4 without the trailing predictor and exploration bytes.
        let mut v3 = v4[..v4.len() - 2].to_vec();
        v3[4..6].copy_from_slice(&3u16.to_le_bytes());
        let old = ProfileRecord::decode(&v3).unwrap();
        assert_eq!((old.served_by, old.explored), (None, false));
        assert_eq!(old.usage.socket, r.usage.socket);
        // Schema 2 is schema 3 without the trailing socket usage (6 × 8 bytes).
        let mut v2 = v3[..v3.len() - 48].to_vec();
        v2[4..6].copy_from_slice(&2u16.to_le_bytes());
        let old = ProfileRecord::decode(&v2).unwrap();
        assert_eq!(old.usage.socket, SocketUsage::default());
        assert_eq!(old.checkpoints, r.checkpoints);
        assert_eq!(old.usage.io, r.usage.io);
        // Schema 1 is schema 2 without the trailing log (4 + 1 + 1 bytes).
        let mut v1 = v2[..v2.len() - 6].to_vec();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        let old = ProfileRecord::decode(&v1).unwrap();
        assert_eq!(old.checkpoints, CheckpointLog::default());
        assert_eq!(old.usage.socket, SocketUsage::default());
        assert_eq!(old.usage.mem, r.usage.mem);
        assert_eq!(old.outcome, r.outcome);
    }

    #[test]
    fn newer_versions_are_refused() {
        let mut bytes = sample().to_bytes();
        bytes[4..6].copy_from_slice(&(PROFILE_SCHEMA_VERSION + 1).to_le_bytes());
        assert_eq!(
            ProfileRecord::decode(&bytes),
            Err(DecodeError::UnsupportedVersion {
                found: PROFILE_SCHEMA_VERSION + 1,
                supported: PROFILE_SCHEMA_VERSION
            })
        );
        bytes[0] = b'X';
        assert_eq!(ProfileRecord::decode(&bytes), Err(DecodeError::BadMagic));
    }

    #[test]
    fn truncation_and_trailing_bytes_are_errors() {
        let bytes = sample().to_bytes();
        for cut in [0, 3, 6, 50, bytes.len() - 1] {
            assert!(matches!(
                ProfileRecord::decode(&bytes[..cut]),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ProfileRecord::decode(&longer),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn censoring_follows_outcome_and_demotion() {
        let mut r = ProfileRecord::new(1, ClassId::DEFAULT, Usage::default());
        assert!(!r.censored());
        r.outcome = Outcome::Failed;
        assert!(!r.censored());
        r.demoted = true;
        assert!(r.censored());
        r.demoted = false;
        for o in [
            Outcome::Panicked,
            Outcome::Shed,
            Outcome::Cancelled(CancelReason::Deadline),
        ] {
            r.outcome = o;
            assert!(r.censored(), "{o:?} is censored");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = ProfileRecord::decode(&bytes);
        }

        #[test]
        fn single_byte_corruption_never_panics(pos in 0usize..800, val in any::<u8>()) {
            let mut bytes = sample().to_bytes();
            let p = pos % bytes.len();
            bytes[p] = val;
            let _ = ProfileRecord::decode(&bytes);
        }
    }
}
