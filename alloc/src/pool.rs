//! The process-wide memory pool: bounds the sum of live requests' memory grants.
//!
//! Admission reserves a request's hard limit (plus whatever per-poll headroom the policy adds, see
//! [`crate::budget`]) before the request runs and releases it when the request ends; a request that
//! cannot reserve waits or is shed. The pool's size is configured, or found from the cgroup the
//! process runs in — v2 `memory.max`, v1 `memory.limit_in_bytes` — minus a headroom for everything
//! that is not a request (the runtime, caches, the allocator's own fragmentation).
//!
//! Only the reservation arithmetic is atomic (one CAS loop per admission, a cold path).
//!
//! **Reserve for small grants** ([`MemoryPool::with_small_reserve`]): a grant larger than `small`
//! bytes may not take the pool's last `reserve` bytes; grants of at most `small` may. A storm of
//! 64-256 MiB requests then fills the pool only down to the reserve, and a light page's floor budget
//! is admitted at once instead of waiting for a hog to finish (the idea of keeping capacity back for
//! short requests is DARC's, for cores; here it is bytes). A reservation grown past `small` is a large
//! grant from then on: its growth must leave the reserve too.

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
    /// Bytes only grants of at most `small` bytes may take.
    reserve: u64,
    small: u64,
}

impl MemoryPool {
    /// A pool of `bytes`.
    pub fn with_capacity(bytes: u64) -> Arc<Self> {
        Self::with_small_reserve(bytes, 0, 0)
    }

    /// A pool of `bytes` whose last `reserve` bytes (at most the capacity) only grants of at most
    /// `small` bytes may take (module docs).
    pub fn with_small_reserve(bytes: u64, reserve: u64, small: u64) -> Arc<Self> {
        Arc::new(MemoryPool {
            capacity: bytes,
            reserved: AtomicU64::new(0),
            reserve: reserve.min(bytes),
            small,
        })
    }

    /// Bytes kept for small grants.
    pub fn small_reserve(&self) -> u64 {
        self.reserve
    }

    /// The most a grant holding `bytes` may ever hold: the capacity for a small grant, the capacity
    /// less the reserve for a larger one.
    pub fn max_grant(&self, bytes: u64) -> u64 {
        self.capacity - self.keep_for(bytes)
    }

    /// Bytes a grant that would hold `total` must leave free.
    fn keep_for(&self, total: u64) -> u64 {
        if total <= self.small {
            0
        } else {
            self.reserve
        }
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

    /// Takes `bytes` for a grant that then holds `total`.
    fn take(&self, bytes: u64, total: u64) -> Result<(), AllocError> {
        let limit = self.max_grant(total);
        let mut cur = self.reserved.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(bytes).filter(|&n| n <= limit).ok_or(
                AllocError::PoolExhausted {
                    requested: bytes,
                    available: limit.saturating_sub(cur),
                },
            )?;
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

    /// Reserves `bytes` for one grant; released when the [`Reservation`] drops. A grant larger than
    /// the pool's `small` must leave the small-grant reserve free.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, AllocError> {
        self.try_reserve_as(bytes, bytes)
    }

    /// Reserves `bytes` for a grant that then holds `total` in all, `bytes` of it in this
    /// reservation: a checkpoint's extension, kept apart from the admission's reservation, is
    /// large or small by the whole grant's size.
    pub fn try_reserve_as(
        self: &Arc<Self>,
        bytes: u64,
        total: u64,
    ) -> Result<Reservation, AllocError> {
        self.take(bytes, total.max(bytes))?;
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
    /// Past the pool's `small`, the growth must leave the small-grant reserve free.
    pub fn grow(&mut self, extra: u64) -> Result<(), AllocError> {
        self.grow_as(extra, self.bytes.saturating_add(extra))
    }

    /// Holds `extra` more bytes for a grant that then holds `total` in all (see
    /// [`MemoryPool::try_reserve_as`]), or fails leaving it unchanged.
    pub fn grow_as(&mut self, extra: u64, total: u64) -> Result<(), AllocError> {
        let total = total.max(self.bytes.saturating_add(extra));
        self.pool.take(extra, total)?;
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
    fn large_grants_leave_the_small_reserve() {
        // 1000 bytes, the last 200 only for grants of at most 50.
        let pool = MemoryPool::with_small_reserve(1000, 200, 50);
        assert_eq!((pool.max_grant(50), pool.max_grant(51)), (1000, 800));
        let big = pool.try_reserve(700).expect("leaves the reserve");
        let err = pool.try_reserve(150).expect_err("would take the reserve");
        assert!(matches!(
            err,
            AllocError::PoolExhausted {
                requested: 150,
                available: 100
            }
        ));
        let mut smalls: Vec<Reservation> = (0..6)
            .map(|_| pool.try_reserve(50).expect("small grants use the reserve"))
            .collect();
        assert_eq!(pool.available(), 0);
        assert!(pool.try_reserve(1).is_err(), "the pool is full");
        // A small grant grown past `small` is large: it may not keep the reserve's bytes.
        drop(smalls.pop());
        let mut grown = smalls.pop().expect("five left");
        assert!(
            grown.grow(40).is_err(),
            "90 bytes is a large grant in a full reserve"
        );
        assert_eq!(grown.bytes(), 50, "a refused growth changes nothing");
        drop(big);
        grown
            .grow(40)
            .expect("room again after the big grant ended");
        assert_eq!(pool.reserved(), 4 * 50 + 90);
        drop((smalls, grown));
        assert_eq!(pool.reserved(), 0);
        // An extension is as large as the grant it extends (790 held: 10 left above the reserve).
        let big = pool.try_reserve(790).unwrap();
        let mut ext = pool
            .try_reserve_as(10, 40)
            .expect("10 more for a 40-byte grant is small");
        assert!(
            pool.try_reserve_as(10, 800).is_err(),
            "10 more for an 800-byte grant may not dip into the reserve"
        );
        ext.grow_as(40, 90)
            .expect_err("grown to a 90-byte grant, it is large");
        ext.grow_as(40, 50).expect("still small");
        drop((big, ext));
        assert_eq!(pool.reserved(), 0);
        // A reserve larger than the pool is the whole pool.
        assert_eq!(
            MemoryPool::with_small_reserve(10, 99, 1).small_reserve(),
            10
        );
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
