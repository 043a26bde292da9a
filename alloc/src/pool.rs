//! The process-wide memory pool: bounds the sum of live requests' memory grants.
//!
//! Admission reserves a request's hard limit (plus whatever per-poll headroom the policy adds, see
//! [`crate::budget`]) before the request runs and releases it when the request ends; a request that
//! cannot reserve waits or is shed. The pool's size is configured, or found from the cgroup the
//! process runs in — v2 `memory.max`, v1 `memory.limit_in_bytes` — minus a headroom for everything
//! that is not a request (the runtime, caches, the allocator's own fragmentation).
//!
//! Only the reservation arithmetic is atomic (one CAS loop per admission, a cold path).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::AllocError;

/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is no limit.
const UNLIMITED_FLOOR: u64 = 1 << 62;

/// Bytes the process may grant to live requests.
#[derive(Debug)]
pub struct MemoryPool {
    capacity: u64,
    reserved: AtomicU64,
}

impl MemoryPool {
    /// A pool of `bytes`.
    pub fn with_capacity(bytes: u64) -> Arc<Self> {
        Arc::new(MemoryPool {
            capacity: bytes,
            reserved: AtomicU64::new(0),
        })
    }

    /// A pool sized from this process's cgroup memory limit minus `headroom`.
    pub fn from_cgroup(headroom: u64) -> Result<Arc<Self>, AllocError> {
        let path = Path::new("/proc/self/cgroup");
        let membership = fs::read_to_string(path).map_err(|source| AllocError::Io {
            path: path.into(),
            source,
        })?;
        let limit = cgroup_limit(Path::new("/sys/fs/cgroup"), &membership)?;
        Self::from_limit(limit, headroom)
    }

    /// A pool of `limit − headroom`.
    pub fn from_limit(limit: u64, headroom: u64) -> Result<Arc<Self>, AllocError> {
        if limit <= headroom {
            return Err(AllocError::Headroom { limit, headroom });
        }
        Ok(MemoryPool::with_capacity(limit - headroom))
    }

    /// Total bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    /// Bytes reserved by live grants.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }
    /// Bytes still free.
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.reserved())
    }

    fn take(&self, bytes: u64) -> Result<(), AllocError> {
        let mut cur = self.reserved.load(Ordering::Relaxed);
        loop {
            let next = cur
                .checked_add(bytes)
                .filter(|&n| n <= self.capacity)
                .ok_or(AllocError::PoolExhausted {
                    requested: bytes,
                    available: self.capacity.saturating_sub(cur),
                })?;
            match self.reserved.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Reserves `bytes` for one grant; released when the [`Reservation`] drops.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, AllocError> {
        self.take(bytes)?;
        Ok(Reservation {
            pool: Arc::clone(self),
            bytes,
        })
    }
}

/// Bytes of a [`MemoryPool`] held by one grant.
#[derive(Debug)]
#[must_use = "the bytes are released when the reservation drops"]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Holds `extra` more bytes (a checkpoint extending the grant), or fails leaving it unchanged.
    pub fn grow(&mut self, extra: u64) -> Result<(), AllocError> {
        self.pool.take(extra)?;
        self.bytes += extra;
        Ok(())
    }
    /// Holds only `bytes` (never more than now).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.pool.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.give_back(self.bytes);
    }
}

fn read_limit(path: &Path) -> Option<Result<u64, AllocError>> {
    let text = fs::read_to_string(path).ok()?;
    let t = text.trim();
    Some(if t == "max" {
        Err(AllocError::NoLimit)
    } else {
        match t.parse::<u64>() {
            Ok(v) if v >= UNLIMITED_FLOOR => Err(AllocError::NoLimit),
            Ok(v) => Ok(v),
            Err(e) => Err(AllocError::Parse {
                path: path.to_path_buf(),
                detail: format!("{t:?} is not a byte count ({e})"),
            }),
        }
    })
}

/// The memory limit for a process whose `/proc/self/cgroup` reads `membership`, under the cgroup
/// mount `root`. Probes v2 (`0::<path>` → `<root>/<path>/memory.max`) and then v1 (a line whose
/// controllers include `memory` → `<root>/memory/<path>/memory.limit_in_bytes`); in a container the
/// process's own cgroup is usually mounted as the root, so each probe falls back to the root's file.
pub fn cgroup_limit(root: &Path, membership: &str) -> Result<u64, AllocError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            candidates.push(root.join(rel).join("memory.max"));
            candidates.push(root.join("memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(root.join("memory").join(rel).join("memory.limit_in_bytes"));
            candidates.push(root.join("memory").join("memory.limit_in_bytes"));
        }
    }
    for c in &candidates {
        match read_limit(c) {
            Some(Ok(v)) => return Ok(v),
            // An unlimited level: a more specific or more general file may still hold a limit.
            Some(Err(AllocError::NoLimit)) | None => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Err(AllocError::NoLimit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_capacity_and_release_on_drop() {
        let pool = MemoryPool::with_capacity(1000);
        let a = pool.try_reserve(600).expect("fits");
        let err = pool.try_reserve(500).expect_err("does not fit");
        assert!(matches!(
            err,
            AllocError::PoolExhausted {
                requested: 500,
                available: 400
            }
        ));
        let mut b = pool.try_reserve(400).expect("fits exactly");
        assert_eq!(pool.available(), 0);
        assert!(b.grow(1).is_err());
        b.shrink_to(100);
        assert_eq!(pool.reserved(), 700);
        drop(a);
        assert_eq!(pool.reserved(), 100);
        drop(b);
        assert_eq!(pool.reserved(), 0);
        assert!(
            pool.try_reserve(u64::MAX).is_err(),
            "an unlimited grant cannot be reserved"
        );
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn headroom_must_leave_something() {
        assert!(matches!(
            MemoryPool::from_limit(100, 100),
            Err(AllocError::Headroom { .. })
        ));
        assert_eq!(
            MemoryPool::from_limit(100, 30).map(|p| p.capacity()).ok(),
            Some(70)
        );
    }

    #[test]
    fn this_process_gets_a_pool_or_a_clear_reason() {
        // Probe, don't assume: containers differ.
        match MemoryPool::from_cgroup(64 << 20) {
            Ok(pool) => assert!(pool.capacity() > 0),
            Err(AllocError::NoLimit | AllocError::Io { .. } | AllocError::Headroom { .. }) => {}
            Err(other) => panic!("unexpected cgroup error: {other}"),
        }
    }

    #[test]
    fn finds_v2_and_v1_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // v2, own subtree.
        fs::create_dir_all(root.join("app/web")).expect("mkdir");
        fs::write(root.join("app/web/memory.max"), "1073741824\n").expect("write");
        assert_eq!(cgroup_limit(root, "0::/app/web\n").ok(), Some(1 << 30));
        // v2 unlimited.
        fs::write(root.join("app/web/memory.max"), "max\n").expect("write");
        assert!(matches!(
            cgroup_limit(root, "0::/app/web\n"),
            Err(AllocError::NoLimit)
        ));
        // v1 (hybrid: a v2 line without a memory.max file), namespaced root fallback.
        fs::create_dir_all(root.join("memory")).expect("mkdir");
        fs::write(root.join("memory/memory.limit_in_bytes"), "536870912\n").expect("write");
        let v1 = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(cgroup_limit(root, v1).ok(), Some(1 << 29));
        // v1 unlimited.
        fs::write(
            root.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        assert!(matches!(cgroup_limit(root, v1), Err(AllocError::NoLimit)));
        // Garbage is an error that names the file.
        fs::write(root.join("memory/memory.limit_in_bytes"), "lots\n").expect("write");
        let err = cgroup_limit(root, v1).expect_err("garbage");
        assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
        // No cgroup at all.
        assert!(matches!(cgroup_limit(root, ""), Err(AllocError::NoLimit)));
    }
}
