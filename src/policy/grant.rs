//! Demand → Grant: what a request may use, decided before it runs.
//!
//! Rules (each a line of [`GrantPolicy::grant`]):
//! - **pool**: the annotation's `pool` if it names one; else the bulk pool when the *central* CPU
//!   estimate exceeds [`GrantPolicy::bulk_threshold_ns`] or the *upper* one exceeds
//!   [`GrantPolicy::tail_threshold_ns`] for a class the predictor has learned from (and a bulk pool
//!   exists), else latency. Placement follows
//!   the central estimate (what the request will probably do) unless the upper one says it may hold
//!   a latency worker far longer: demotion at the CPU budget takes effect at the next poll, so a
//!   long poll that started on a latency worker keeps it to the end. A route that answers mostly
//!   in 1 ms and sometimes in 80 ms in one poll (the site's `/search` with short and long queries)
//!   had a central estimate under the bulk threshold, and every light page behind one of its long
//!   polls waited as long as on tokio (benches/RESULTS.md, 2026-12-06, the `searches` mix). A class
//!   not yet learned from is placed by its central estimate alone: its upper estimate is the
//!   prior's generous 50 ms, which says nothing about the class's tail and would send every new
//!   route's first requests to the bulk pool. Budgets follow the upper estimate (what it may do).
//! - **cpu_ns** (past it: demoted to bulk, never cancelled): the upper estimate × the margin, at
//!   least the bulk threshold (a latency request may use that much before it is judged long), capped
//!   by the annotation's `cpu`.
//! - **memory**: hard = max(upper × margin, floor), capped by the annotation's `mem` (a cap below
//!   the floor wins: the user said so); soft = max(upper, floor/2) ≤ hard. The floor is the room one
//!   poll may allocate before the poll-boundary check sees it.
//! - **I/O**: depth and bandwidth from the annotation, else unlimited (the class limits in
//!   pagegen-io still bound the class as a whole).
//! - **wall_ns**: the annotation's `timeout`, else the configured default, else none.
//! - **net priority**: 0 in the latency pool, 4 in the bulk pool (`SO_PRIORITY` scale, 0–6 need no
//!   privilege).

use std::time::Duration;

use pagegen_core::{ClassId, Demand, Grant, GrantCell, PoolId, RouteSpec};

/// The knobs of the Demand → Grant rules (defaults in `crate::config`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrantPolicy {
    /// Central CPU estimate above which a request starts in the bulk pool, ns.
    pub bulk_threshold_ns: u64,
    /// Upper CPU estimate above which a request starts in the bulk pool whatever its central
    /// one, ns (`u64::MAX`: placement by the central estimate alone).
    pub tail_threshold_ns: u64,
    /// Whether a bulk pool exists (without one every grant names the latency pool).
    pub has_bulk: bool,
    /// Budget margin over the upper estimates (≥ 1).
    pub margin: f64,
    /// Smallest memory budget, bytes.
    pub mem_floor: u64,
    /// Wall-clock limit of requests whose route names none, ns (`u64::MAX`: none).
    pub default_wall_ns: u64,
}

impl Default for GrantPolicy {
    fn default() -> Self {
        GrantPolicy {
            bulk_threshold_ns: 2_000_000,
            tail_threshold_ns: 20_000_000,
            has_bulk: true,
            margin: 1.5,
            mem_floor: 4 << 20,
            default_wall_ns: 30_000_000_000,
        }
    }
}

/// A duration in ns, saturating at `u64::MAX`.
pub(crate) fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// `v × margin`, saturating at `u64::MAX`.
pub(crate) fn scale(v: u64, margin: f64) -> u64 {
    let x = v as f64 * margin;
    if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        x as u64
    }
}

impl GrantPolicy {
    /// The grant of a request of `class` predicted to need `demand`, under `route`'s caps;
    /// `learned`: the predictor has seen a request of the class finish (its demand is not the
    /// prior).
    pub fn grant(
        &self,
        class: ClassId,
        demand: &Demand,
        route: &RouteSpec,
        learned: bool,
    ) -> Grant {
        let long = demand.cpu_ns.central > self.bulk_threshold_ns
            || (learned && demand.cpu_ns.upper > self.tail_threshold_ns);
        let pool = match route.pool {
            Some(p) if self.has_bulk || p == PoolId::LATENCY => p,
            _ if long && self.has_bulk => PoolId::BULK,
            _ => PoolId::LATENCY,
        };
        let cap = |v: u64, c: Option<u64>| c.map_or(v, |c| v.min(c));
        let cpu_ns = cap(
            scale(demand.cpu_ns.upper, self.margin).max(self.bulk_threshold_ns),
            route.cpu.map(ns),
        );
        let upper_mem = demand.peak_bytes.upper;
        let mem_hard = cap(scale(upper_mem, self.margin).max(self.mem_floor), route.mem);
        let mem_soft = upper_mem.max(self.mem_floor / 2).min(mem_hard);
        let wall_ns = route.timeout.map_or(self.default_wall_ns, ns);
        Grant {
            class,
            pool,
            cpu_ns,
            mem_soft,
            mem_hard,
            io_depth: route.io_depth.unwrap_or(u32::MAX).max(1),
            io_bytes_per_sec: route.io_bytes_per_sec.unwrap_or(u64::MAX).max(1),
            wall_ns,
            net_priority: if pool == PoolId::LATENCY { 0 } else { 4 },
        }
    }
}

/// Lowers `grant` to `route`'s caps (memory, CPU, wall time, I/O depth and bandwidth); returns
/// whether anything changed. Used when an annotation binds on a handler's first call, after its
/// request was granted without it.
pub fn apply_caps(grant: &mut Grant, route: &RouteSpec) -> bool {
    let before = *grant;
    if let Some(m) = route.mem {
        grant.mem_hard = grant.mem_hard.min(m);
        grant.mem_soft = grant.mem_soft.min(m);
    }
    if let Some(c) = route.cpu {
        grant.cpu_ns = grant.cpu_ns.min(ns(c));
    }
    if let Some(t) = route.timeout {
        grant.wall_ns = grant.wall_ns.min(ns(t));
    }
    if let Some(d) = route.io_depth {
        grant.io_depth = grant.io_depth.min(d.max(1));
    }
    if let Some(b) = route.io_bytes_per_sec {
        grant.io_bytes_per_sec = grant.io_bytes_per_sec.min(b.max(1));
    }
    *grant != before
}

/// [`apply_caps`] on a running request's live grant.
pub fn cap_live(cell: &GrantCell, route: &RouteSpec) {
    let mut g = cell.get();
    if apply_caps(&mut g, route) {
        cell.set(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::Estimate;
    use proptest::prelude::*;
    use std::time::Duration;

    fn demand(cpu: (u64, u64), mem: (u64, u64)) -> Demand {
        Demand {
            cpu_ns: Estimate::new(cpu.0, cpu.1),
            peak_bytes: Estimate::new(mem.0, mem.1),
            upper_quantile: 0.99,
            ..Demand::default()
        }
    }

    #[test]
    fn long_predictions_start_in_bulk_and_short_ones_in_latency() {
        let p = GrantPolicy::default();
        let c = ClassId::from_raw(3);
        let none = RouteSpec::default();
        let short = p.grant(
            c,
            &demand((200_000, 400_000), (1 << 20, 2 << 20)),
            &none,
            true,
        );
        assert_eq!(short.pool, PoolId::LATENCY);
        assert_eq!(short.net_priority, 0);
        assert_eq!(short.cpu_ns, p.bulk_threshold_ns, "at least the threshold");
        let long = p.grant(c, &demand((20_000_000, 40_000_000), (0, 0)), &none, true);
        assert_eq!(long.pool, PoolId::BULK);
        assert_eq!(long.cpu_ns, 60_000_000);
        let single = GrantPolicy {
            has_bulk: false,
            ..p
        };
        assert_eq!(
            single
                .grant(c, &demand((20_000_000, 40_000_000), (0, 0)), &none, true)
                .pool,
            PoolId::LATENCY
        );
    }

    #[test]
    fn a_long_tail_starts_in_bulk_whatever_the_central_estimate() {
        let p = GrantPolicy::default();
        let c = ClassId::from_raw(5);
        let none = RouteSpec::default();
        // Mostly 0.8 ms, but the upper estimate says it may take 120 ms in one poll.
        let bimodal = p.grant(c, &demand((800_000, 120_000_000), (0, 0)), &none, true);
        assert_eq!(bimodal.pool, PoolId::BULK);
        assert_eq!(bimodal.net_priority, 4);
        // The same demand for a class nothing was learned from yet is the prior: placed by its
        // central estimate.
        assert_eq!(
            p.grant(c, &demand((800_000, 120_000_000), (0, 0)), &none, false)
                .pool,
            PoolId::LATENCY
        );
        // Just under the tail threshold: placed by the central estimate.
        let edge = p.grant(
            c,
            &demand((800_000, p.tail_threshold_ns), (0, 0)),
            &none,
            true,
        );
        assert_eq!(edge.pool, PoolId::LATENCY);
        // Switched off, or without a bulk pool, or pinned by the annotation: latency.
        let off = GrantPolicy {
            tail_threshold_ns: u64::MAX,
            ..p
        };
        assert_eq!(
            off.grant(c, &demand((800_000, 120_000_000), (0, 0)), &none, true)
                .pool,
            PoolId::LATENCY
        );
        let single = GrantPolicy {
            has_bulk: false,
            ..p
        };
        assert_eq!(
            single
                .grant(c, &demand((800_000, 120_000_000), (0, 0)), &none, true)
                .pool,
            PoolId::LATENCY
        );
        let pinned = RouteSpec {
            pool: Some(PoolId::LATENCY),
            ..RouteSpec::default()
        };
        assert_eq!(
            p.grant(c, &demand((800_000, 120_000_000), (0, 0)), &pinned, true)
                .pool,
            PoolId::LATENCY
        );
    }

    #[test]
    fn annotations_cap_budgets_and_name_the_pool() {
        let p = GrantPolicy::default();
        let route = RouteSpec {
            cpu: Some(Duration::from_millis(20)),
            mem: Some(64 << 20),
            io_depth: Some(8),
            io_bytes_per_sec: Some(50 << 20),
            timeout: Some(Duration::from_secs(2)),
            pool: Some(PoolId::BULK),
            ..RouteSpec::default()
        };
        let g = p.grant(
            ClassId::from_raw(1),
            &demand((1_000, 90_000_000), (200 << 20, 300 << 20)),
            &route,
            true,
        );
        assert_eq!(g.pool, PoolId::BULK);
        assert_eq!(g.cpu_ns, 20_000_000);
        assert_eq!(g.mem_hard, 64 << 20);
        assert_eq!(g.mem_soft, 64 << 20);
        assert_eq!((g.io_depth, g.io_bytes_per_sec), (8, 50 << 20));
        assert_eq!(g.wall_ns, 2_000_000_000);
    }

    #[test]
    fn small_predictions_get_the_floor() {
        let p = GrantPolicy::default();
        let g = p.grant(
            ClassId::from_raw(1),
            &demand((10, 20), (100, 200)),
            &RouteSpec::default(),
            true,
        );
        assert_eq!(g.mem_hard, p.mem_floor);
        assert_eq!(g.mem_soft, p.mem_floor / 2);
        assert_eq!(g.wall_ns, p.default_wall_ns);
        assert_eq!((g.io_depth, g.io_bytes_per_sec), (u32::MAX, u64::MAX));
    }

    #[test]
    fn caps_only_lower() {
        let mut g = Grant::unlimited(ClassId::from_raw(1));
        g.mem_hard = 10 << 20;
        let route = RouteSpec {
            mem: Some(1 << 20),
            timeout: Some(Duration::from_secs(1)),
            ..RouteSpec::default()
        };
        assert!(apply_caps(&mut g, &route));
        assert_eq!((g.mem_hard, g.wall_ns), (1 << 20, 1_000_000_000));
        assert!(
            !apply_caps(&mut g, &route),
            "a second application changes nothing"
        );
    }

    proptest! {
        #[test]
        fn grants_are_ordered_and_capped(
            cc in any::<u64>(), cu in any::<u64>(), mc in any::<u64>(), mu in any::<u64>(),
            cap in proptest::option::of(1u64..u64::MAX), margin in 1.0f64..8.0,
        ) {
            let p = GrantPolicy { margin, ..GrantPolicy::default() };
            let route = RouteSpec { mem: cap, ..RouteSpec::default() };
            let g = p.grant(ClassId::from_raw(2), &demand((cc, cu), (mc, mu)), &route, true);
            prop_assert!(g.mem_soft <= g.mem_hard);
            if let Some(c) = cap { prop_assert!(g.mem_hard <= c); }
            else { prop_assert!(g.mem_hard >= p.mem_floor); }
            prop_assert!(g.mem_hard >= g.mem_soft && g.cpu_ns >= 1);
            prop_assert!(g.io_depth >= 1);
        }
    }
}
