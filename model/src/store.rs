//! The profile store: an append-only log of [`ProfileRecord`]s in segment files.
//!
//! Why a log and not an embedded database (`redb`, `sled`): the access pattern is exactly "append one
//! record per request, read the recent window back for training, drop the oldest", which a segmented
//! log serves with one sequential write per record and no compaction; retention is deleting a file.
//! The format is small enough to verify by eye and to recover by truncation.
//!
//! Format. `profiles/seg-<20-digit id>.log`, ids increasing. Each segment starts with the 8-byte
//! header `PGSG`, format version (u16 LE, [`SEGMENT_VERSION`]), two zero bytes; then frames:
//! `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is
//! [`ProfileRecord::encode`]. Records are never rewritten.
//!
//! Retention. A segment is closed when it would pass `segment_bytes`; when more than `max_segments`
//! exist the oldest is deleted, so the store is bounded by `segment_bytes × max_segments` plus one
//! record.
//!
//! Recovery. On open, the active (newest) segment is scanned: the first frame that is short, fails its
//! checksum or does not decode marks a torn or corrupt tail, which is reported ([`Recovery`], and a
//! `tracing` warning) and cut off (the file is truncated there), so appends continue from good data. A
//! newest segment with a bad header is moved aside as `<name>.corrupt-<unix s>` (never deleted). When
//! reading, corruption inside an older segment ends that segment's read and is reported. Nothing here
//! panics on any file content.
//!
//! Reading without the lock. [`snapshot`](ProfileStore::snapshot) flushes the buffered records and
//! notes each segment's id and length; the [`StoreSnapshot`] reads those bytes afterwards, newest
//! segment first and only as many as it needs, while appends go on. The trainer holds the store only
//! for the snapshot (microseconds), never for the read, so a completion that wants the store is not
//! held up by a trainer reading megabytes of history. The snapshot's lengths end on whole frames (the
//! flush wrote whole frames), so bytes appended after it are ignored; a segment deleted by retention
//! after the snapshot is skipped.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
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
    /// Bytes cut from torn or corrupt tails.
    pub bytes_cut: u64,
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

/// Moves a bad file aside as `<file>.<what>-<unix s>`; never deletes it.
pub(crate) fn move_aside(path: &Path, what: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{what}-{}", unix_s()));
    let to = PathBuf::from(name);
    if let Err(e) = fs::rename(path, &to) {
        tracing::warn!(from = %path.display(), error = %e, "could not move a bad file aside");
    }
    to
}

/// Result of scanning one segment's bytes.
struct Scan {
    records: Vec<ProfileRecord>,
    good_len: u64,
    problem: Option<String>,
}

fn scan(bytes: &[u8], keep: bool) -> Scan {
    let mut records = Vec::new();
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Scan {
            records,
            good_len: 0,
            problem: Some("bad segment header".into()),
        };
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SEGMENT_VERSION {
        return Scan {
            records,
            good_len: 0,
            problem: Some(format!("unsupported segment version {version}")),
        };
    }
    let mut pos = HEADER;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME {
            return Scan {
                records,
                good_len: pos as u64,
                problem: Some(format!("torn frame header at byte {pos}")),
            };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_PAYLOAD {
            return Scan {
                records,
                good_len: pos as u64,
                problem: Some(format!("implausible frame length {len} at byte {pos}")),
            };
        }
        let end = FRAME + len as usize;
        if rest.len() < end {
            return Scan {
                records,
                good_len: pos as u64,
                problem: Some(format!("torn record at byte {pos}")),
            };
        }
        let payload = &rest[FRAME..end];
        if crc32fast::hash(payload) != crc {
            return Scan {
                records,
                good_len: pos as u64,
                problem: Some(format!("checksum mismatch at byte {pos}")),
            };
        }
        match ProfileRecord::decode(payload) {
            Ok(r) => {
                if keep {
                    records.push(r);
                }
            }
            Err(e) => {
                return Scan {
                    records,
                    good_len: pos as u64,
                    problem: Some(format!("undecodable record at byte {pos}: {e}")),
                }
            }
        }
        pos += end;
    }
    Scan {
        records,
        good_len: pos as u64,
        problem: None,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(|e| ModelError::io(path, e))?;
    Ok(v)
}

fn new_segment(dir: &Path, id: u64) -> Result<File, ModelError> {
    let path = seg_path(dir, id);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    f.write_all(&h).map_err(|e| ModelError::io(&path, e))?;
    Ok(f)
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
    match s.problem {
        None => {}
        Some(p) if s.good_len == 0 => {
            let to = move_aside(&path, "corrupt");
            recovery.note(format!(
                "{}: {p}; moved aside to {}",
                path.display(),
                to.display()
            ));
            segments.pop_back();
            segments.push_back(id + 1);
            return Ok((new_segment(dir, id + 1)?, HEADER as u64));
        }
        Some(p) => {
            let cut = bytes.len() as u64 - s.good_len;
            recovery.note(format!("{}: {p}; cut {cut} bytes", path.display()));
            recovery.bytes_cut += cut;
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| ModelError::io(&path, e))?;
            f.set_len(s.good_len)
                .map_err(|e| ModelError::io(&path, e))?;
        }
    }
    let f = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    Ok((f, s.good_len))
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
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(|e| ModelError::io(&dir, e))?
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
        let mut recovery = Recovery::default();
        let mut segments: VecDeque<u64> = ids.into_iter().collect();
        let (active, active_len) = open_active(&dir, &mut segments, &mut recovery)?;
        let mut store = ProfileStore {
            dir,
            config,
            segments,
            active: BufWriter::new(active),
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
        let path = self.active_path();
        let len = self.scratch.len() as u32;
        self.active
            .write_all(&len.to_le_bytes())
            .and_then(|_| self.active.write_all(&crc.to_le_bytes()))
            .and_then(|_| self.active.write_all(&self.scratch))
            .map_err(|e| ModelError::io(&path, e))?;
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
        self.active = BufWriter::new(new_segment(&self.dir, id)?);
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
            if let Some(p) = s.problem {
                recovery.note(format!("{}: {p}; rest of segment skipped", path.display()));
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
        assert!(!all.is_empty() && all.len() < 20);
        assert!(all.iter().enumerate().all(|(i, r)| *r == rec(i as u64)));
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
        assert_eq!(aside, 1);
        assert_eq!(s.read_all().unwrap().0.len(), 1);
    }
}
