//! What a request class is.
//!
//! A *class* is the unit pagegen profiles, predicts and allocates for: usually one route (`GET /search`),
//! sometimes a route split by a request feature. Every task runs in exactly one class; work that nobody
//! classified runs in [`ClassId::DEFAULT`].
//!
//! Contracts:
//! - [`ClassId`] is a dense small integer, stable across restarts because the
//!   [`ClassRegistry`](crate::ClassRegistry) persists the name → id map. Subsystems may index arrays by
//!   [`ClassId::index`].
//! - [`Shares`] are in `1..=1000` (Seastar/glommio convention); a class with twice the shares gets twice
//!   the CPU when both are runnable.
//! - [`PoolId`] names a worker pool. Pools have fixed OS priorities; a task moves between pools, a thread
//!   never changes priority (DESIGN.md, "Why worker pools").
//! - [`RouteSpec`] holds the values of a `#[pagegen::route(...)]` annotation. Every field is optional: an
//!   annotation is a static prior, the model may replace it with what it learns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Dense identifier of a request class; index into per-class tables.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ClassId(u32);

impl ClassId {
    /// The class of work nobody classified. Always registered, always id 0, named `default`.
    pub const DEFAULT: ClassId = ClassId(0);
    /// Largest number of classes a registry hands out (ids `0..MAX_CLASSES`). Per-class tables in the
    /// subsystems are sized by it; 4096 routes is far beyond any site we know of.
    pub const MAX_CLASSES: usize = 4096;

    /// Builds an id from its raw value. Prefer [`ClassRegistry::register`](crate::ClassRegistry::register);
    /// this exists for decoding stored records and for tests.
    pub const fn from_raw(raw: u32) -> Self {
        ClassId(raw)
    }
    /// The raw value, as stored in records.
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// The id as an index into per-class tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "class#{}", self.0)
    }
}

/// CPU weight of a class, in `1..=1000`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Shares(u16);

impl Shares {
    /// Smallest weight.
    pub const MIN: Shares = Shares(1);
    /// Largest weight.
    pub const MAX: Shares = Shares(1000);
    /// Weight of a class that did not ask for one (Seastar's default of 100 leaves room both ways).
    pub const DEFAULT: Shares = Shares(100);

    /// Validated constructor: `None` outside `1..=1000`.
    pub const fn new(value: u16) -> Option<Self> {
        if value >= 1 && value <= 1000 {
            Some(Shares(value))
        } else {
            None
        }
    }
    /// Clamping constructor for values computed by a policy.
    pub fn saturating(value: u64) -> Self {
        Shares(value.clamp(1, 1000) as u16)
    }
    /// The weight.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Default for Shares {
    fn default() -> Self {
        Shares::DEFAULT
    }
}

/// A worker pool. Pools are fixed at runtime build time; ids are their index in the builder's list.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PoolId(pub u8);

impl PoolId {
    /// The latency pool: normal OS priority, for work predicted short. The default for every task.
    pub const LATENCY: PoolId = PoolId(0);
    /// The bulk pool: lower fixed OS priority (e.g. nice +10), for work predicted long, so the kernel
    /// preempts it when a latency task needs the CPU.
    pub const BULK: PoolId = PoolId(1);
}

/// Values of a `#[pagegen::route(...)]` annotation: static budgets that serve as the prior before
/// the runtime has learned the route, and as the static baseline predictor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteSpec {
    /// Expected CPU time of one request, and its cap: a request past it is demoted to the bulk
    /// pool, never cancelled.
    pub cpu: Option<Duration>,
    /// Expected peak memory of one request, bytes, and its cap: the grant's hard limit never
    /// exceeds it, and a request past it is cancelled.
    pub mem: Option<u64>,
    /// Expected file I/O operations of one request.
    pub io_ops: Option<u32>,
    /// File operations one request may have in flight (the grant's `io_depth` cap).
    pub io_depth: Option<u32>,
    /// File I/O bandwidth of one request, bytes per second (the grant's `io_bytes_per_sec` cap).
    pub io_bytes_per_sec: Option<u64>,
    /// Wall-clock limit; past it the request is cancelled.
    pub timeout: Option<Duration>,
    /// Pool the request starts in when nothing better is known.
    pub pool: Option<PoolId>,
}

/// Everything a subsystem needs to set a class up.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSpec {
    /// Unique, stable name (`"GET /search"`). The registry keys ids by it.
    pub name: Arc<str>,
    /// CPU weight.
    pub shares: Shares,
    /// Pool new tasks of the class start in unless a grant says otherwise.
    pub pool: PoolId,
    /// Static annotation values, if any.
    pub route: RouteSpec,
}

impl ClassSpec {
    /// A class with default shares, the latency pool and no annotation.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ClassSpec {
            name: name.into(),
            shares: Shares::DEFAULT,
            pool: PoolId::LATENCY,
            route: RouteSpec::default(),
        }
    }
    /// Sets the shares.
    pub fn with_shares(mut self, shares: Shares) -> Self {
        self.shares = shares;
        self
    }
    /// Sets the starting pool.
    pub fn with_pool(mut self, pool: PoolId) -> Self {
        self.pool = pool;
        self
    }
    /// Sets the annotation values.
    pub fn with_route(mut self, route: RouteSpec) -> Self {
        self.route = route;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_validated_and_clamped() {
        assert_eq!(Shares::new(0), None);
        assert_eq!(Shares::new(1001), None);
        assert_eq!(Shares::new(1).map(Shares::get), Some(1));
        assert_eq!(Shares::new(1000).map(Shares::get), Some(1000));
        assert_eq!(Shares::saturating(0).get(), 1);
        assert_eq!(Shares::saturating(5000).get(), 1000);
        assert_eq!(Shares::saturating(250).get(), 250);
    }

    #[test]
    fn class_id_round_trips_raw() {
        let id = ClassId::from_raw(17);
        assert_eq!(id.raw(), 17);
        assert_eq!(id.index(), 17);
        assert_eq!(ClassId::DEFAULT.raw(), 0);
        assert_eq!(id.to_string(), "class#17");
    }
}
