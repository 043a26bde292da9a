//! The profile store: an append-only log of [`ProfileRecord`]s in segment files.
//!
//! Why a log and not an embedded database (`redb`, `sled`): the access pattern is exactly "append one
//! record per request, read the recent window back for training, drop the oldest", which a segmented
//! log serves with one sequential write per record and no compaction; retention is deleting a file.
//! The format is small enough to verify by eye, and its frames are self-delimiting and checksummed,
//! so recovery loses only the records that were damaged.
//!
//! Format. `profiles/seg-<20-digit id>.log`, ids increasing. Each segment starts with the 8-byte
//! header `PGSG`, format version (u16 LE, [`SEGMENT_VERSION`]), two zero bytes; then frames:
//! `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is
//! [`ProfileRecord::encode`]. Records are never modified; recovery may rewrite the active segment
//! without its damaged ranges (below).
//!
//! Retention. A segment is closed when it would pass `segment_bytes`; when more than `max_segments`
//! exist the oldest is deleted, so the store is bounded by `segment_bytes × max_segments` plus one
//! record.
//!
//! Recovery. A scan that meets bytes that are not a valid frame (short, an implausible length, a
//! checksum mismatch, or a payload that does not decode) **resynchronises**: it looks at each
//! following byte offset for the next valid frame (a length in `1..=MAX_PAYLOAD` that fits, a
//! matching checksum, and a record that decodes) and skips only the bytes in between, which hold
//! the damaged records; a range that reaches the end is a torn or damaged tail. Each skipped range
//! is reported ([`Recovery::skipped`], a note, and a `tracing` warning).
//! - On open, the active (newest) segment is scanned. If a range was skipped, its bytes are first
//!   written to a new `<segment>.corrupt-<unix s>` file (the ranges of one recovery concatenated in
//!   file order, each located by its [`Skipped`]; `.<n>` is appended when the name is taken) and
//!   synced; only then are they removed from the segment, so appends continue from good data: a
//!   damaged tail is cut off in place; other damage by writing the good frames to `<segment>.tmp`
//!   and renaming it over the segment (a crash leaves the old or the new segment, and the kept
//!   bytes either way). If the kept bytes cannot be written, open fails rather than drop them.
//! - A newest segment with neither a valid header nor a single valid frame, or of another format
//!   version, is moved aside whole as `<segment>.corrupt-<unix s>` and a new segment started.
//! - Closed segments are never rewritten: a read skips damage inside one the same way, reports it,
//!   and leaves the bytes where they are.
//!
//! Bytes recovery removes are never deleted. `.corrupt-` files are not segments: retention and the
//! size bound above ignore them, and an operator removes them. Nothing here panics on any file
//! content.
//!
//! Reading without the lock. [`snapshot`](ProfileStore::snapshot) flushes the buffered records and
//! notes each segment's id and length; the [`StoreSnapshot`] reads those bytes afterwards, newest
//! segment first and only as many as it needs, while appends go on. The trainer holds the store only
//! for the snapshot (microseconds), never for the read, so a completion that wants the store is not
//! held up by a trainer reading megabytes of history. The snapshot's lengths end on whole frames (the
//! flush wrote whole frames), so bytes appended after it are ignored; a segment deleted by retention
//! after the snapshot is skipped.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pagegen_core::ProfileRecord;

use crate::error::ModelError;

/// Segment format version.
pub const SEGMENT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"PGSG";
const HEADER: usize = 8;
const FRAME: usize = 8;
/// Largest payload accepted when reading (a record is ~1 KiB; anything far larger is corruption).
const MAX_PAYLOAD: u32 = 64 * 1024;

/// Store settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Size at which a segment is closed, bytes.
    pub segment_bytes: u64,
    /// Segments kept (oldest deleted first).
    pub max_segments: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        // 16 × 4 MiB = 64 MiB ≈ 60 k records of ~1.1 KiB: several training windows of history, and a
        // size no operator will mind in a state directory.
        StoreConfig {
            segment_bytes: 4 << 20,
            max_segments: 16,
        }
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// One line per problem found.
    pub notes: Vec<String>,
    /// Bytes removed from segments on open (damaged ranges, torn tails, segments moved aside
    /// whole); every one is kept in a `.corrupt-` file (see [`skipped`](Self::skipped)).
    pub bytes_cut: u64,
    /// Every damaged byte range skipped, in the order found (the module docs say how).
    pub skipped: Vec<Skipped>,
}

/// One damaged byte range of a segment, skipped up to the next valid frame (or the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The segment.
    pub segment: PathBuf,
    /// Where the range started in the segment, as it was found.
    pub offset: u64,
    /// Its length, bytes.
    pub len: u64,
    /// The `.corrupt-` file that keeps these bytes, when recovery removed them from the segment;
    /// `None` when a read skipped them in a closed segment, which keeps them in place.
    pub kept_in: Option<PathBuf>,
}

impl Recovery {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.notes.is_empty()
    }
    fn note(&mut self, msg: String) {
        tracing::warn!("profile store: {msg}");
        self.notes.push(msg);
    }
}

/// Bytes of appended frames buffered before a write to the segment file. 64 KiB (~55 records):
/// `BufWriter`'s default 8 KiB made a `write` call every ~7 records; 64 KiB took an append from
/// ~1.25 µs to ~0.75–1.0 µs in `examples/record_cost.rs` (2-core machine under other load). At web
/// rates 64 KiB is a few milliseconds of traffic, and buffered records were never durable before a
/// flush anyway (a crash loses the buffer; recovery cuts a torn frame).
const WRITE_BUFFER: usize = 64 << 10;

/// The append-only profile log.
#[derive(Debug)]
pub struct ProfileStore {
    dir: PathBuf,
    config: StoreConfig,
    /// Closed and active segment ids, oldest first; the last is active.
    segments: VecDeque<u64>,
    active: BufWriter<File>,
    active_len: u64,
    scratch: Vec<u8>,
    appended: u64,
}

/// The store's segments as they were at one [`snapshot`](ProfileStore::snapshot): read without
/// holding the store.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    dir: PathBuf,
    /// (segment id, bytes to read; `None` = the whole file), oldest first.
    segments: Vec<(u64, Option<u64>)>,
    /// Records appended since the store was opened, at the snapshot.
    pub appended: u64,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:020}.log"))
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `<file>.<what>-<unix s>`, with `.<n>` appended for `n > 0`.
fn aside_name(path: &Path, what: &str, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{what}-{}", unix_s()));
    if n > 0 {
        name.push(format!(".{n}"));
    }
    PathBuf::from(name)
}

/// Attempts at a free `.<what>-` name before giving up (plucked from thin air: a name is taken only
/// by recoveries within the same second).
const ASIDE_TRIES: u32 = 1000;

/// Moves a bad file aside as `<file>.<what>-<unix s>` (or `.<n>` after it, if that is taken);
/// never deletes it.
pub(crate) fn move_aside(path: &Path, what: &str) -> PathBuf {
    let to = (0..ASIDE_TRIES)
        .map(|n| aside_name(path, what, n))
        .find(|p| !p.exists())
        .unwrap_or_else(|| aside_name(path, what, ASIDE_TRIES));
    if let Err(e) = fs::rename(path, &to) {
        tracing::warn!(from = %path.display(), error = %e, "could not move a bad file aside");
    }
    to
}

/// Writes `bytes` to a new `<file>.<what>-<unix s>` (never replacing a file) and syncs it.
fn write_aside(path: &Path, what: &str, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    for n in 0..ASIDE_TRIES {
        let to = aside_name(path, what, n);
        match OpenOptions::new().write(true).create_new(true).open(&to) {
            Ok(mut f) => {
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| ModelError::io(&to, e))?;
                return Ok(to);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ModelError::io(&to, e)),
        }
    }
    let to = aside_name(path, what, ASIDE_TRIES);
    Err(ModelError::io(
        &to,
        std::io::Error::other("no free name to keep damaged bytes under"),
    ))
}

/// Why the bytes at an offset are not a frame.
#[derive(Debug)]
enum Bad {
    TornHeader,
    Length(u32),
    TornRecord,
    Checksum,
    Undecodable(String),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::TornHeader => f.write_str("torn frame header"),
            Bad::Length(len) => write!(f, "implausible frame length {len}"),
            Bad::TornRecord => f.write_str("torn record"),
            Bad::Checksum => f.write_str("checksum mismatch"),
            Bad::Undecodable(e) => write!(f, "undecodable record ({e})"),
        }
    }
}

/// The frame at the start of `rest`: its whole length (header included) and its record.
fn frame(rest: &[u8]) -> Result<(usize, ProfileRecord), Bad> {
    let [l0, l1, l2, l3, c0, c1, c2, c3, ..] = *rest else {
        return Err(Bad::TornHeader);
    };
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(Bad::Length(len));
    }
    let end = FRAME + len as usize;
    let payload = rest.get(FRAME..end).ok_or(Bad::TornRecord)?;
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Checksum);
    }
    ProfileRecord::decode(payload)
        .map(|r| (end, r))
        .map_err(|e| Bad::Undecodable(e.to_string()))
}

/// A damaged range of a segment, `start..end`, and what was wrong at `start`.
#[derive(Debug)]
struct Damage {
    start: usize,
    end: usize,
    why: String,
}

/// Result of scanning one segment's bytes.
struct Scan {
    records: Vec<ProfileRecord>,
    /// Why nothing in the segment can be read (another format version; neither a valid header nor
    /// any valid frame); `records` and `damage` are then empty.
    unreadable: Option<String>,
    /// Damaged ranges in file order, each ending where the next valid frame starts, or at the end.
    damage: Vec<Damage>,
}

/// Scans a segment, resynchronising on the next valid frame after damage (module docs,
/// "Recovery"). Keeps the records only when `keep`.
fn scan(bytes: &[u8], keep: bool) -> Scan {
    let mut s = Scan {
        records: Vec::new(),
        unreadable: None,
        damage: Vec::new(),
    };
    let header_ok = bytes.len() >= HEADER && &bytes[..4] == MAGIC;
    if header_ok {
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != SEGMENT_VERSION {
            s.unreadable = Some(format!("unsupported segment version {version}"));
            return s;
        }
    }
    // The damaged range being walked through: where it started, and why.
    let mut open = (!header_ok).then(|| (0, "bad segment header".to_string()));
    let mut frames = 0usize;
    let mut pos = HEADER.min(bytes.len());
    while pos < bytes.len() {
        match frame(&bytes[pos..]) {
            Ok((len, record)) => {
                if let Some((start, why)) = open.take() {
                    s.damage.push(Damage {
                        start,
                        end: pos,
                        why,
                    });
                }
                if keep {
                    s.records.push(record);
                }
                frames += 1;
                pos += len;
            }
            Err(bad) => {
                if open.is_none() {
                    open = Some((pos, format!("{bad} at byte {pos}")));
                }
                pos += 1;
            }
        }
    }
    if let Some((start, why)) = open {
        s.damage.push(Damage {
            start,
            end: bytes.len(),
            why,
        });
    }
    if !header_ok && frames == 0 {
        s.damage.clear();
        s.unreadable = Some("bad segment header".into());
    }
    s
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(|e| ModelError::io(path, e))?;
    Ok(v)
}

/// The ids of the segment files in `dir`, oldest first.
fn segment_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn header() -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

fn new_segment(dir: &Path, id: u64) -> Result<File, ModelError> {
    let path = seg_path(dir, id);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    f.write_all(&header())
        .map_err(|e| ModelError::io(&path, e))?;
    Ok(f)
}

/// Removes `damage` from the active segment at `path`, whose content is `bytes`: keeps the
/// damaged bytes in a `.corrupt-` file first, then cuts or rewrites the segment (module docs,
/// "Recovery"). Returns the segment's new length.
fn repair(
    path: &Path,
    bytes: &[u8],
    damage: &[Damage],
    recovery: &mut Recovery,
) -> Result<u64, ModelError> {
    let kept: Vec<u8> = damage
        .iter()
        .flat_map(|d| &bytes[d.start..d.end])
        .copied()
        .collect();
    let aside = write_aside(path, "corrupt", &kept)?;
    let len = match damage {
        [tail] if tail.end == bytes.len() && tail.start >= HEADER => {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| ModelError::io(path, e))?;
            f.set_len(tail.start as u64)
                .map_err(|e| ModelError::io(path, e))?;
            tail.start as u64
        }
        _ => {
            let mut good = Vec::with_capacity(bytes.len() - kept.len() + HEADER);
            if damage.first().is_some_and(|d| d.start == 0) {
                good.extend_from_slice(&header()); // The header was part of the damage.
            }
            let mut from = 0;
            for d in damage {
                good.extend_from_slice(&bytes[from..d.start]);
                from = d.end;
            }
            good.extend_from_slice(&bytes[from..]);
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            File::create(&tmp)
                .and_then(|mut f| f.write_all(&good).and_then(|()| f.sync_all()))
                .map_err(|e| ModelError::io(&tmp, e))?;
            fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))?;
            good.len() as u64
        }
    };
    for d in damage {
        recovery.note(format!(
            "{}: {}; skipped bytes {}..{} ({} bytes), kept in {}",
            path.display(),
            d.why,
            d.start,
            d.end,
            d.end - d.start,
            aside.display()
        ));
        recovery.skipped.push(Skipped {
            segment: path.to_owned(),
            offset: d.start as u64,
            len: (d.end - d.start) as u64,
            kept_in: Some(aside.clone()),
        });
    }
    recovery.bytes_cut += kept.len() as u64;
    Ok(len)
}

/// Opens the newest segment for appending, recovering its tail (or starts the first one).
fn open_active(
    dir: &Path,
    segments: &mut VecDeque<u64>,
    recovery: &mut Recovery,
) -> Result<(File, u64), ModelError> {
    let Some(&id) = segments.back() else {
        segments.push_back(1);
        return Ok((new_segment(dir, 1)?, HEADER as u64));
    };
    let path = seg_path(dir, id);
    let bytes = read_file(&path)?;
    let s = scan(&bytes, false);
    if let Some(p) = s.unreadable {
        let to = move_aside(&path, "corrupt");
        recovery.note(format!(
            "{}: {p}; moved aside to {}",
            path.display(),
            to.display()
        ));
        recovery.bytes_cut += bytes.len() as u64;
        recovery.skipped.push(Skipped {
            segment: path,
            offset: 0,
            len: bytes.len() as u64,
            kept_in: Some(to),
        });
        segments.pop_back();
        segments.push_back(id + 1);
        return Ok((new_segment(dir, id + 1)?, HEADER as u64));
    }
    let len = if s.damage.is_empty() {
        bytes.len() as u64
    } else {
        repair(&path, &bytes, &s.damage, recovery)?
    };
    let f = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    Ok((f, len))
}

impl ProfileStore {
    /// Opens (creating if needed) the store in `dir`, recovering a torn or corrupt tail.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: StoreConfig,
    ) -> Result<(Self, Recovery), ModelError> {
        if config.segment_bytes < 4096 || config.max_segments == 0 {
            return Err(ModelError::Config(format!(
                "store needs segment_bytes >= 4096 and max_segments >= 1, got {config:?}"
            )));
        }
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        let ids = segment_ids(&dir).map_err(|e| ModelError::io(&dir, e))?;
        let mut recovery = Recovery::default();
        let mut segments: VecDeque<u64> = ids.into_iter().collect();
        let (active, active_len) = open_active(&dir, &mut segments, &mut recovery)?;
        let mut store = ProfileStore {
            dir,
            config,
            segments,
            active: BufWriter::with_capacity(WRITE_BUFFER, active),
            active_len,
            scratch: Vec::with_capacity(2048),
            appended: 0,
        };
        store.retain()?;
        Ok((store, recovery))
    }

    /// Appends one record (buffered; [`flush`](Self::flush) or a read makes it durable in the file).
    pub fn append(&mut self, record: &ProfileRecord) -> Result<(), ModelError> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        let frame = (FRAME + self.scratch.len()) as u64;
        if self.active_len + frame > self.config.segment_bytes && self.active_len > HEADER as u64 {
            self.rotate()?;
        }
        let crc = crc32fast::hash(&self.scratch);
        let len = self.scratch.len() as u32;
        // The path is formatted only for an error: it allocates, and this runs on every completion.
        self.active
            .write_all(&len.to_le_bytes())
            .and_then(|_| self.active.write_all(&crc.to_le_bytes()))
            .and_then(|_| self.active.write_all(&self.scratch))
            .map_err(|e| ModelError::io(self.active_path(), e))?;
        self.active_len += frame;
        self.appended += 1;
        Ok(())
    }

    /// Records appended since the store was opened.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Flushes and notes what is there now, for reading without the store (see the module docs).
    pub fn snapshot(&mut self) -> Result<StoreSnapshot, ModelError> {
        self.flush()?;
        let last = self.segments.len().saturating_sub(1);
        Ok(StoreSnapshot {
            dir: self.dir.clone(),
            segments: self
                .segments
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, (i == last).then_some(self.active_len)))
                .collect(),
            appended: self.appended,
        })
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), ModelError> {
        let path = self.active_path();
        self.active.flush().map_err(|e| ModelError::io(&path, e))
    }

    /// Every stored record, oldest first, with notes on any corruption met (corrupt parts skipped).
    pub fn read_all(&mut self) -> Result<(Vec<ProfileRecord>, Recovery), ModelError> {
        Ok(self.snapshot()?.read_recent(usize::MAX))
    }

    /// The newest `n` records, oldest first.
    pub fn read_recent(&mut self, n: usize) -> Result<(Vec<ProfileRecord>, Recovery), ModelError> {
        Ok(self.snapshot()?.read_recent(n))
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Path of the segment being appended to.
    pub fn active_path(&self) -> PathBuf {
        seg_path(&self.dir, self.segments.back().copied().unwrap_or(1))
    }

    fn rotate(&mut self) -> Result<(), ModelError> {
        self.flush()?;
        let id = self.segments.back().copied().unwrap_or(0) + 1;
        self.active = BufWriter::with_capacity(WRITE_BUFFER, new_segment(&self.dir, id)?);
        self.active_len = HEADER as u64;
        self.segments.push_back(id);
        self.retain()
    }

    fn retain(&mut self) -> Result<(), ModelError> {
        while self.segments.len() > self.config.max_segments {
            if let Some(old) = self.segments.pop_front() {
                let path = seg_path(&self.dir, old);
                fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
            }
        }
        Ok(())
    }
}

impl StoreSnapshot {
    /// The segments in `dir` as they are now, read without opening the store: nothing is created,
    /// recovered, rotated or moved aside, and damage is reported and left in place (as for a closed
    /// segment). For tools beside a process that may hold the state directory (`pagegen profile`);
    /// a record that process is appending at that moment may read as a torn tail. A missing `dir`
    /// is an empty store.
    pub fn read_only(dir: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let dir = dir.into();
        let ids = match segment_ids(&dir) {
            Ok(ids) => ids,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ModelError::io(&dir, e)),
        };
        Ok(StoreSnapshot {
            dir,
            segments: ids.into_iter().map(|id| (id, None)).collect(),
            appended: 0,
        })
    }

    /// The newest `n` records of the snapshot, oldest first, with notes on any corruption met
    /// (corrupt parts skipped). Reads segments newest first and stops once it has `n`.
    pub fn read_recent(&self, n: usize) -> (Vec<ProfileRecord>, Recovery) {
        self.read_recent_with(n, &mut || true)
            .expect("reading goes on while `between` says so")
    }

    /// [`read_recent`](Self::read_recent), calling `between` after each segment read (the trainer
    /// paces itself there); `None` as soon as it returns `false`.
    pub fn read_recent_with(
        &self,
        n: usize,
        between: &mut dyn FnMut() -> bool,
    ) -> Option<(Vec<ProfileRecord>, Recovery)> {
        let mut recovery = Recovery::default();
        // Newest segment first; each segment's records stay oldest first inside.
        let mut parts: Vec<Vec<ProfileRecord>> = Vec::new();
        let mut have = 0usize;
        for &(id, len) in self.segments.iter().rev() {
            if have >= n {
                break;
            }
            let path = seg_path(&self.dir, id);
            let mut bytes = match read_file(&path) {
                Ok(b) => b,
                Err(ModelError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // Retired by retention after the snapshot: older than anything still kept.
                    break;
                }
                Err(e) => {
                    recovery.note(format!("{e}; segment skipped"));
                    continue;
                }
            };
            if let Some(len) = len {
                bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            }
            let s = scan(&bytes, true);
            if let Some(p) = s.unreadable {
                recovery.note(format!("{}: {p}; segment skipped", path.display()));
            }
            for d in s.damage {
                recovery.note(format!(
                    "{}: {}; skipped bytes {}..{} ({} bytes, left in place)",
                    path.display(),
                    d.why,
                    d.start,
                    d.end,
                    d.end - d.start
                ));
                recovery.skipped.push(Skipped {
                    segment: path.clone(),
                    offset: d.start as u64,
                    len: (d.end - d.start) as u64,
                    kept_in: None,
                });
            }
            have += s.records.len();
            parts.push(s.records);
            if !between() {
                return None;
            }
        }
        let mut out = Vec::with_capacity(have.min(n));
        for part in parts.into_iter().rev() {
            out.extend(part);
        }
        let cut = out.len().saturating_sub(n);
        out.drain(..cut);
        Some((out, recovery))
    }
}

impl Drop for ProfileStore {
    fn drop(&mut self) {
        let _ = self.active.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassId, Usage};

    fn rec(i: u64) -> ProfileRecord {
        let mut u = Usage::default();
        u.cpu.cpu_ns = 1000 + i;
        ProfileRecord::new(i, ClassId::from_raw(1 + (i % 3) as u32), u)
    }

    #[test]
    fn records_round_trip_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
            assert!(r.is_clean());
            for i in 0..100 {
                s.append(&rec(i)).unwrap();
            }
        }
        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(r.is_clean());
        let (all, r) = s.read_all().unwrap();
        assert!(r.is_clean());
        assert_eq!(all.len(), 100);
        assert_eq!(all[42], rec(42));
        let (recent, _) = s.read_recent(10).unwrap();
        assert_eq!(recent.first(), Some(&rec(90)));
    }

    #[test]
    fn a_read_only_snapshot_reports_damage_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = StoreSnapshot::read_only(tmp.path().join("none")).unwrap();
        assert!(missing.read_recent(usize::MAX).0.is_empty());
        assert!(!tmp.path().join("none").exists(), "nothing is created");
        let path = {
            let (mut s, _) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
            for i in 0..10 {
                s.append(&rec(i)).unwrap();
            }
            s.active_path()
        };
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"torn");
        fs::write(&path, &bytes).unwrap();
        let (all, r) = StoreSnapshot::read_only(tmp.path())
            .unwrap()
            .read_recent(usize::MAX);
        assert_eq!(all.len(), 10);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].kept_in, None);
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "the segment is left as it was"
        );
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no file added"
        );
    }

    #[test]
    fn retention_drops_oldest_segments_and_bounds_size() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            segment_bytes: 8192,
            max_segments: 3,
        };
        let (mut s, _) = ProfileStore::open(tmp.path(), cfg).unwrap();
        for i in 0..200 {
            s.append(&rec(i)).unwrap();
        }
        assert_eq!(s.segment_count(), 3);
        let (all, _) = s.read_all().unwrap();
        assert!(all.len() < 200 && !all.is_empty());
        assert_eq!(all.last(), Some(&rec(199)));
        let total: u64 = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 3 * 8192 + 2048, "{total}");
    }

    #[test]
    fn a_snapshot_reads_what_was_there_while_appends_and_retention_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            segment_bytes: 8192,
            max_segments: 3,
        };
        let (mut s, _) = ProfileStore::open(tmp.path(), cfg).unwrap();
        for i in 0..60 {
            s.append(&rec(i)).unwrap();
        }
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.appended, 60);
        assert!(
            snap.segments.len() >= 2,
            "spans segments: {:?}",
            snap.segments
        );
        // The newest 10 across the segment boundary (a record is ~1 KiB: 8 per segment), oldest
        // first.
        let (recent, r) = snap.read_recent(10);
        assert!(r.is_clean(), "{r:?}");
        let ids: Vec<u64> = recent.iter().map(|r| r.request_id).collect();
        assert_eq!(ids, (50..60).collect::<Vec<_>>(), "{:?}", snap.segments);
        assert_eq!(recent[0], rec(50));
        // Appends after the snapshot (flushed, even) are not part of it.
        s.append(&rec(60)).unwrap();
        s.flush().unwrap();
        assert_eq!(snap.read_recent(1).0, vec![rec(59)]);
        // Retention deletes the snapshot's oldest segments: the read skips them, quietly.
        let oldest = seg_path(tmp.path(), snap.segments[0].0);
        let mut i = 61;
        while oldest.exists() {
            s.append(&rec(i)).unwrap();
            i += 1;
        }
        let (left, r) = snap.read_recent(usize::MAX);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(left.last(), Some(&rec(59)));
        assert!(!left.is_empty() && left.len() < 60);
        assert_eq!(s.appended(), i);
    }

    #[test]
    fn torn_tail_is_reported_and_cut_then_appends_continue() {
        let tmp = tempfile::tempdir().unwrap();
        let path = {
            let (mut s, _) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
            for i in 0..10 {
                s.append(&rec(i)).unwrap();
            }
            s.flush().unwrap();
            s.active_path()
        };
        let len = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap();
        drop(f);
        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(!r.is_clean() && r.bytes_cut > 0, "{r:?}");
        let kept = r.skipped[0].kept_in.as_ref().unwrap();
        assert_eq!(
            fs::metadata(kept).unwrap().len(),
            r.bytes_cut,
            "the cut bytes are kept"
        );
        s.append(&rec(10)).unwrap();
        let (all, r) = s.read_all().unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(all.len(), 10);
        assert_eq!(all[9], rec(10));
    }

    #[test]
    fn corrupt_bytes_and_garbage_files_never_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let path = {
            let (mut s, _) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
            for i in 0..20 {
                s.append(&rec(i)).unwrap();
            }
            s.flush().unwrap();
            s.active_path()
        };
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(!r.is_clean());
        let (all, _) = s.read_all().unwrap();
        assert_eq!(all.len(), 19, "only the damaged record is lost");
        assert!(all.windows(2).all(|w| w[0].request_id < w[1].request_id));
        drop(s);
        // A newest segment that is pure garbage is moved aside, not deleted.
        fs::write(&path, b"garbage").unwrap();
        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(!r.is_clean());
        s.append(&rec(0)).unwrap();
        let aside = fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".corrupt-")
            })
            .count();
        assert_eq!(
            aside, 2,
            "the damaged record's bytes, and the garbage segment"
        );
        assert_eq!(s.read_all().unwrap().0.len(), 1);
    }

    /// Where in a segment to damage it.
    #[derive(Clone, Copy, Debug)]
    enum At {
        Start,
        Middle,
        End,
    }

    /// Each of `n` records' frame as a byte range of a segment holding them all.
    fn frames(n: u64) -> Vec<std::ops::Range<usize>> {
        let mut pos = HEADER;
        (0..n)
            .map(|i| {
                let mut v = Vec::new();
                rec(i).encode(&mut v);
                let r = pos..pos + FRAME + v.len();
                pos = r.end;
                r
            })
            .collect()
    }

    fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect()
    }

    /// The reported scenario: 64 bytes flipped in a 2,000-record (~1.9 MB) segment.
    fn damage_loses_only_the_damaged_records(at: At) {
        const N: u64 = 2_000;
        const DAMAGE: usize = 64;
        let tmp = tempfile::tempdir().unwrap();
        let path = {
            let (mut s, _) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
            for i in 0..N {
                s.append(&rec(i)).unwrap();
            }
            s.flush().unwrap();
            assert_eq!(s.segment_count(), 1);
            s.active_path()
        };
        let frames = frames(N);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), frames.last().unwrap().end);
        let from = match at {
            At::Start => 0,
            At::Middle => bytes.len() / 2,
            At::End => bytes.len() - DAMAGE,
        };
        let hit = from..from + DAMAGE;
        bytes[hit.clone()].iter_mut().for_each(|b| *b ^= 0xff);
        fs::write(&path, &bytes).unwrap();
        // Exactly the records whose frames overlap the damage are lost.
        let lost: Vec<u64> = (0..N)
            .filter(|&i| {
                let f = &frames[i as usize];
                f.start < hit.end && hit.start < f.end
            })
            .collect();
        let survivors: Vec<ProfileRecord> = (0..N).filter(|i| !lost.contains(i)).map(rec).collect();
        assert!(!lost.is_empty() && lost.len() <= 2, "{lost:?}");
        // The skipped range: from the first lost frame (the file's start when the header was hit)
        // to the next good frame (or the end).
        let first = &frames[lost[0] as usize];
        let last = &frames[*lost.last().unwrap() as usize];
        let range = if hit.start < HEADER { 0 } else { first.start }..last.end;

        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert_eq!(r.skipped.len(), 1, "{at:?}: {r:?}");
        let skipped = &r.skipped[0];
        assert_eq!(
            (skipped.segment.as_path(), skipped.offset, skipped.len),
            (path.as_path(), range.start as u64, range.len() as u64),
            "{at:?}"
        );
        assert_eq!(r.bytes_cut, range.len() as u64);
        let kept = skipped.kept_in.as_ref().unwrap();
        assert_eq!(corrupt_files(tmp.path()), vec![kept.clone()]);
        assert!(kept
            .to_string_lossy()
            .starts_with(&format!("{}.corrupt-", path.display())));
        assert_eq!(
            fs::read(kept).unwrap(),
            &bytes[range],
            "{at:?}: the damaged bytes are kept"
        );
        let (all, read) = s.read_all().unwrap();
        assert!(read.is_clean(), "the segment was repaired: {read:?}");
        assert_eq!(all.len(), survivors.len(), "{at:?}");
        assert!(
            all == survivors,
            "{at:?}: every undamaged record survives, in order"
        );
        // Appends continue from good data, and a reopen finds nothing more to do.
        s.append(&rec(N)).unwrap();
        drop(s);
        let (mut s, r) = ProfileStore::open(tmp.path(), StoreConfig::default()).unwrap();
        assert!(r.is_clean(), "{at:?}: {r:?}");
        let (all, _) = s.read_all().unwrap();
        assert_eq!(all.len(), survivors.len() + 1);
        assert_eq!(all.last(), Some(&rec(N)));
        assert_eq!(corrupt_files(tmp.path()).len(), 1);
    }

    #[test]
    fn damage_at_the_start_of_a_segment_loses_only_the_damaged_records() {
        damage_loses_only_the_damaged_records(At::Start);
    }

    #[test]
    fn damage_in_the_middle_of_a_segment_loses_only_the_damaged_records() {
        damage_loses_only_the_damaged_records(At::Middle);
    }

    #[test]
    fn damage_at_the_end_of_a_segment_loses_only_the_damaged_records() {
        damage_loses_only_the_damaged_records(At::End);
    }

    #[test]
    fn damage_in_a_closed_segment_is_skipped_on_read_and_left_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            segment_bytes: 8192,
            max_segments: 16,
        };
        let (mut s, _) = ProfileStore::open(tmp.path(), cfg).unwrap();
        for i in 0..40 {
            s.append(&rec(i)).unwrap();
        }
        s.flush().unwrap();
        assert!(s.segment_count() >= 3);
        // The first segment holds records 0.. in the frames `frames` gives; damage its third.
        let first = seg_path(tmp.path(), 1);
        let mut bytes = fs::read(&first).unwrap();
        let third = frames(3)[2].clone();
        bytes[third.start + 20] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let (all, r) = s.read_all().unwrap();
        let ids: Vec<u64> = all.iter().map(|r| r.request_id).collect();
        let expected: Vec<u64> = (0..40).filter(|&i| i != 2).collect();
        assert_eq!(ids, expected);
        assert_eq!(
            r.skipped,
            vec![Skipped {
                segment: first.clone(),
                offset: third.start as u64,
                len: third.len() as u64,
                kept_in: None,
            }]
        );
        assert_eq!(fs::read(&first).unwrap(), bytes, "a read never rewrites");
        assert!(corrupt_files(tmp.path()).is_empty());
    }
}
