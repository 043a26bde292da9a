//! Checkpoints: what happens while a running request nears its grant.
//!
//! The grant is decided before a request runs, from a prediction; a checkpoint looks again once the
//! request has shown what it really does. [`Checkpoints::check`] runs at every poll boundary of an
//! admitted request (from [`EnforceHook`](crate::policy::EnforceHook), so after the profiler and the
//! memory hook have folded the poll into the accounts) and compares a handful of counters; only a
//! crossing does any work, once per level:
//!
//! | resource | 50 % | 90 % (memory: past the soft limit) | 100 % |
//! |---|---|---|---|
//! | CPU, latency pool | marked | re-predicted: still short → **extended** in the latency pool; long → **demoted** to the bulk pool now | demoted ([`EnforceHook`](crate::policy::EnforceHook)) |
//! | CPU, bulk pool | marked | marked (CPU never cancels) | — |
//! | memory | marked (by the memory hook) | re-predicted: **extended** when the annotation's cap, a 4× growth bound and the memory pool allow (the extra bytes are reserved from the pool like an admission), else **refused** | cancelled, 503 (memory hook) |
//! | wall time | marked | marked | cancelled, 503 ([`EnforceHook`](crate::policy::EnforceHook)) |
//!
//! Wall time is never extended: it is the client's deadline, not a resource estimate. File I/O has
//! no volume in the grant — depth and bandwidth are rates the I/O driver enforces on every
//! operation — so it has no level to cross; its usage is in the profile.
//!
//! **Re-prediction from the usage so far.** A request at 90 % of a budget sized from the upper
//! estimate is already in its class's tail. For the heavy-tailed service times of web requests the
//! remainder grows with what was used (the mean-residual-life argument behind Perséphone's and
//! DARC's reservations for long requests), so the re-predicted total is
//! `max(upper, used × spread)`, where the spread is the class's own `upper / central` clamped to
//! `[1.25, 2]`; the new budget is that × the grant margin.
//!
//! Every decision is marked in the request's context (its profile carries the
//! [`CheckpointLog`](pagegen_core::CheckpointLog)) and counted ([`Decision::Checkpoint`],
//! [`Decision::Extended`], [`Decision::ExtensionRefused`], [`Decision::Demoted`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pagegen_alloc::{MemoryPool, Reservation};
use pagegen_core::{
    CheckpointLevel, ClassId, ClassRegistry, Estimate, PoolId, RequestCtx, Resource, RouteSpec,
};

use crate::policy::counters::{Decision, Decisions};
use crate::policy::grant::{ns, scale, GrantPolicy};

/// How far past its admission budget (upper × margin) a request's memory may be extended.
const MAX_MEM_GROWTH: u64 = 4;

/// The checkpoint policy; see the module docs.
#[derive(Debug)]
pub struct Checkpoints {
    policy: GrantPolicy,
    decisions: Arc<Decisions>,
    memory: Arc<MemoryPool>,
    registry: Option<Arc<ClassRegistry>>,
    /// Extra memory reserved by extensions, per request id, released by [`release`](Self::release).
    extensions: Mutex<HashMap<u64, Reservation>>,
}

impl Checkpoints {
    /// A policy extending with `policy`'s margin and thresholds, reserving extensions from
    /// `memory`, and reading annotation caps from `registry` (none: uncapped).
    pub fn new(
        policy: GrantPolicy,
        decisions: Arc<Decisions>,
        memory: Arc<MemoryPool>,
        registry: Option<Arc<ClassRegistry>>,
    ) -> Self {
        Checkpoints {
            policy,
            decisions,
            memory,
            registry,
            extensions: Mutex::new(HashMap::new()),
        }
    }

    /// Judges `ctx` at a poll boundary, `now_ns` on the clock that stamped its admission.
    pub fn check(&self, ctx: &RequestCtx, now_ns: u64) {
        self.check_cpu(ctx);
        self.check_memory(ctx);
        let wall = ctx.grant().wall_ns();
        if wall != u64::MAX {
            let elapsed = now_ns.saturating_sub(ctx.admitted_ns());
            self.marks(ctx, Resource::Wall, elapsed, wall);
        }
    }

    /// Marks the 50 % and 90 % levels of `used` against `budget`; true when 90 % was crossed now.
    fn marks(&self, ctx: &RequestCtx, r: Resource, used: u64, budget: u64) -> bool {
        if (used as u128) * 2 < budget as u128 {
            return false;
        }
        ctx.mark_checkpoint(r, CheckpointLevel::Half);
        if (used as u128) * 10 < (budget as u128) * 9
            || !ctx.mark_checkpoint(r, CheckpointLevel::Ninety)
        {
            return false;
        }
        self.decisions.count(ctx.class(), Decision::Checkpoint);
        true
    }

    fn check_cpu(&self, ctx: &RequestCtx) {
        let grant = ctx.grant();
        let budget = grant.cpu_ns();
        if budget == u64::MAX {
            return;
        }
        let used = ctx.cpu.cpu_ns();
        if !self.marks(ctx, Resource::Cpu, used, budget)
            || grant.pool() != PoolId::LATENCY
            || !self.policy.has_bulk
        {
            return;
        }
        let est = ctx.demand().map_or(Estimate::default(), |d| d.cpu_ns);
        let projected = project(used, est);
        let cap = self.route(ctx.class()).and_then(|r| r.cpu).map(ns);
        // Still a short request by the placement rule's measure (twice the threshold: it was
        // admitted as short and is only past its estimate, not a different kind of request).
        let short = projected <= self.policy.bulk_threshold_ns.saturating_mul(2);
        if short && cap.is_none_or(|c| projected <= c) {
            let extended = scale(projected, self.policy.margin).min(cap.unwrap_or(u64::MAX));
            if extended > budget {
                grant.set_cpu_ns(extended);
                ctx.mark_extended(Resource::Cpu);
                self.decisions.count(ctx.class(), Decision::Extended);
                return;
            }
        }
        ctx.mark_refused(Resource::Cpu);
        self.decisions
            .count(ctx.class(), Decision::ExtensionRefused);
        if ctx.mark_demoted() {
            grant.set_pool(PoolId::BULK);
            self.decisions.count(ctx.class(), Decision::Demoted);
        }
    }

    fn check_memory(&self, ctx: &RequestCtx) {
        let grant = ctx.grant();
        let (soft, hard) = (grant.mem_soft(), grant.mem_hard());
        // soft == hard: unlimited, or an extension was refused (nothing left to decide).
        if soft >= hard {
            return;
        }
        let peak = ctx.mem.peak_net_bytes();
        if peak <= 0 || (peak as u64) <= soft {
            return;
        }
        let peak = peak as u64;
        self.decisions.count(ctx.class(), Decision::Checkpoint);
        let est = ctx.demand().map_or(Estimate::default(), |d| d.peak_bytes);
        let bound = scale(est.upper, self.policy.margin)
            .max(self.policy.mem_floor)
            .saturating_mul(MAX_MEM_GROWTH);
        let cap = self
            .route(ctx.class())
            .and_then(|r| r.mem)
            .unwrap_or(u64::MAX)
            .min(bound);
        let projected = project(peak, est);
        let want = scale(projected, self.policy.margin).min(cap);
        if want > hard && self.reserve_more(ctx.id().0, want - hard, want) {
            {
                grant.set_memory(projected.min(want), want);
                ctx.mark_extended(Resource::Memory);
                self.decisions.count(ctx.class(), Decision::Extended);
                return;
            }
        }
        // Refused: the hard limit stands (and cancels if reached); soft = hard ends the question.
        grant.set_memory(hard, hard);
        ctx.mark_refused(Resource::Memory);
        self.decisions
            .count(ctx.class(), Decision::ExtensionRefused);
    }

    /// Reserves `bytes` more for request `id`, whose budget then is `total` (one reservation per
    /// request, grown in place; large or small for the pool's reserve by `total`).
    fn reserve_more(&self, id: u64, bytes: u64, total: u64) -> bool {
        let mut map = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&id) {
            Some(r) => r.grow_as(bytes, total).is_ok(),
            None => match self.memory.try_reserve_as(bytes, total) {
                Ok(r) => {
                    map.insert(id, r);
                    true
                }
                Err(_) => false,
            },
        }
    }

    /// Releases the memory `ctx`'s extensions reserved (the request ended). Free for requests that
    /// were never extended (one flag read).
    pub fn release(&self, ctx: &RequestCtx) {
        if ctx.checkpoint_log().extended(Resource::Memory) {
            let r = self
                .extensions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ctx.id().0);
            drop(r);
        }
    }

    /// Bytes reserved by extensions of running requests.
    pub fn extended_bytes(&self) -> u64 {
        self.extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Reservation::bytes)
            .sum()
    }

    fn route(&self, class: ClassId) -> Option<RouteSpec> {
        self.registry.as_ref()?.spec(class).map(|s| s.route)
    }
}

/// The re-predicted total of a resource from `used` so far and the admission estimate (module docs).
pub fn project(used: u64, est: Estimate) -> u64 {
    let spread = if est.central == 0 {
        2.0
    } else {
        (est.upper as f64 / est.central as f64).clamp(1.25, 2.0)
    };
    est.upper.max(scale(used, spread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassSpec, Demand, Grant, MemFlush, RequestId};
    use std::time::Duration;

    fn policy() -> GrantPolicy {
        GrantPolicy {
            bulk_threshold_ns: 5_000_000,
            tail_threshold_ns: u64::MAX,
            has_bulk: true,
            margin: 1.5,
            mem_floor: 1 << 20,
            default_wall_ns: u64::MAX,
        }
    }

    fn checkpoints(
        pool_bytes: u64,
        registry: Option<Arc<ClassRegistry>>,
    ) -> (Checkpoints, Arc<Decisions>, Arc<MemoryPool>) {
        let d = Arc::new(Decisions::default());
        let pool = MemoryPool::with_capacity(pool_bytes);
        (
            Checkpoints::new(policy(), d.clone(), pool.clone(), registry),
            d,
            pool,
        )
    }

    fn ctx(grant: Grant, demand: Demand) -> Arc<RequestCtx> {
        let c = RequestCtx::new(RequestId(7), grant, 0);
        c.set_demand(demand);
        c
    }

    fn cpu_grant(class: ClassId, cpu_ns: u64) -> Grant {
        Grant {
            cpu_ns,
            ..Grant::unlimited(class)
        }
    }

    fn mem_grant(class: ClassId, soft: u64, hard: u64) -> Grant {
        Grant {
            mem_soft: soft,
            mem_hard: hard,
            ..Grant::unlimited(class)
        }
    }

    fn alloc(c: &RequestCtx, bytes: u64) {
        c.mem.flush(&MemFlush {
            alloc_bytes: bytes,
            allocs: 1,
            peak_delta: bytes as i64,
            ..MemFlush::default()
        });
    }

    #[test]
    fn projection_grows_with_use_by_the_class_spread() {
        assert_eq!(
            project(10, Estimate::new(100, 400)),
            400,
            "below upper: upper"
        );
        assert_eq!(
            project(1000, Estimate::new(100, 110)),
            1250,
            "spread floor 1.25"
        );
        assert_eq!(
            project(1000, Estimate::new(100, 1000)),
            2000,
            "spread cap 2"
        );
        assert_eq!(project(1000, Estimate::default()), 2000, "no estimate: 2×");
    }

    #[test]
    fn cpu_near_its_grant_is_extended_while_short_and_demoted_once_long() {
        let (cp, d, _) = checkpoints(1 << 30, None);
        let class = ClassId::from_raw(3);
        let demand = Demand {
            cpu_ns: Estimate::new(2_000_000, 3_000_000),
            ..Demand::default()
        };
        // Granted 4.5 ms; 2.4 ms used: 50 % marked, no decision.
        let c = ctx(cpu_grant(class, 4_500_000), demand);
        c.cpu.record_poll(2_400_000, 2_400_000, 0);
        cp.check(&c, 0);
        let log = c.checkpoint_log();
        assert!(log.reached(Resource::Cpu, CheckpointLevel::Half));
        assert!(!log.reached(Resource::Cpu, CheckpointLevel::Ninety));
        assert_eq!(d.class(class).get(Decision::Checkpoint), 0);
        // 4.2 ms: 90 %; projected max(3, 4.2 × 1.5) = 6.3 ms ≤ 10 ms → extended to 9.45 ms.
        c.cpu.record_poll(1_800_000, 1_800_000, 0);
        cp.check(&c, 0);
        assert_eq!(c.grant().cpu_ns(), 9_450_000);
        assert_eq!(c.grant().pool(), PoolId::LATENCY);
        assert!(c.checkpoint_log().extended(Resource::Cpu));
        assert_eq!(d.class(class).get(Decision::Extended), 1);
        // The 90 % mark fires once: more use before 100 % decides nothing new.
        c.cpu.record_poll(1_000_000, 1_000_000, 0);
        cp.check(&c, 0);
        assert_eq!(d.class(class).get(Decision::Checkpoint), 1);

        // A request whose projection is long is demoted at 90 %, not at 100 %.
        let c = ctx(cpu_grant(class, 9_000_000), demand);
        c.cpu.record_poll(8_200_000, 8_200_000, 0);
        cp.check(&c, 0);
        assert_eq!(c.grant().pool(), PoolId::BULK);
        assert!(c.demoted());
        let log = c.checkpoint_log();
        assert!(log.refused(Resource::Cpu) && !log.extended(Resource::Cpu));
        assert_eq!(d.class(class).get(Decision::Demoted), 1);
    }

    #[test]
    fn an_annotation_cpu_cap_refuses_the_extension() {
        let reg = Arc::new(ClassRegistry::in_memory());
        let class = reg
            .register(ClassSpec::new("GET /capped").with_route(RouteSpec {
                cpu: Some(Duration::from_millis(5)),
                ..RouteSpec::default()
            }))
            .unwrap();
        let (cp, d, _) = checkpoints(1 << 30, Some(reg));
        let demand = Demand {
            cpu_ns: Estimate::new(2_000_000, 3_000_000),
            ..Demand::default()
        };
        let c = ctx(cpu_grant(class, 4_500_000), demand);
        c.cpu.record_poll(4_200_000, 4_200_000, 0);
        cp.check(&c, 0);
        assert_eq!(c.grant().cpu_ns(), 4_500_000);
        assert_eq!(c.grant().pool(), PoolId::BULK);
        assert_eq!(d.class(class).get(Decision::ExtensionRefused), 1);
    }

    #[test]
    fn memory_past_soft_is_extended_from_the_pool_and_released_at_the_end() {
        let (cp, d, pool) = checkpoints(64 << 20, None);
        let class = ClassId::from_raw(4);
        let demand = Demand {
            peak_bytes: Estimate::new(2 << 20, 4 << 20),
            ..Demand::default()
        };
        let c = ctx(mem_grant(class, 4 << 20, 6 << 20), demand);
        alloc(&c, 3 << 20);
        cp.check(&c, 0);
        assert_eq!(c.grant().mem_hard(), 6 << 20, "below soft: nothing");
        alloc(&c, 2 << 20); // peak 5 MiB > soft 4 MiB
        cp.check(&c, 0);
        // projected max(4, 5 × 2) = 10 MiB; × 1.5 = 15 MiB ≤ bound 4 × 6 = 24 MiB.
        assert_eq!(c.grant().mem_hard(), 15 << 20);
        assert_eq!(c.grant().mem_soft(), 10 << 20);
        assert_eq!(pool.reserved(), 9 << 20, "the extra 9 MiB is reserved");
        assert_eq!(cp.extended_bytes(), 9 << 20);
        assert!(c.checkpoint_log().extended(Resource::Memory));
        assert_eq!(d.class(class).get(Decision::Extended), 1);
        // Growing past the new soft limit extends again, up to the growth bound.
        alloc(&c, 6 << 20); // peak 11 MiB
        cp.check(&c, 0);
        assert_eq!(c.grant().mem_hard(), 24 << 20);
        assert_eq!(pool.reserved(), 18 << 20);
        cp.release(&c);
        assert_eq!(pool.reserved(), 0);
        assert_eq!(cp.extended_bytes(), 0);
    }

    #[test]
    fn an_extension_to_a_large_budget_leaves_the_small_reserve() {
        // 64 MiB, the last 16 only for budgets of at most 8 MiB; 40 MiB held by a large grant.
        let pool = MemoryPool::with_small_reserve(64 << 20, 16 << 20, 8 << 20);
        let d = Arc::new(Decisions::default());
        let cp = Checkpoints::new(policy(), d.clone(), pool.clone(), None);
        let _held = pool.try_reserve(40 << 20).unwrap();
        let class = ClassId::from_raw(6);
        let demand = Demand {
            peak_bytes: Estimate::new(2 << 20, 4 << 20),
            ..Demand::default()
        };
        // As in the test above, a peak of 5 MiB asks for a 15 MiB budget: 9 MiB more. The pool has
        // 24 MiB free, but a 15 MiB budget is large and may use only the 8 above the reserve.
        let c = ctx(mem_grant(class, 4 << 20, 6 << 20), demand);
        alloc(&c, 5 << 20);
        cp.check(&c, 0);
        assert_eq!(
            c.grant().mem_hard(),
            6 << 20,
            "refused: the hard limit stands"
        );
        assert!(c.checkpoint_log().refused(Resource::Memory));
        assert_eq!(d.class(class).get(Decision::ExtensionRefused), 1);
        assert_eq!(pool.reserved(), 40 << 20);
    }

    #[test]
    fn memory_is_refused_when_the_pool_has_no_room_and_the_hard_limit_stands() {
        let (cp, d, pool) = checkpoints(8 << 20, None);
        let _held = pool.try_reserve(7 << 20).unwrap();
        let class = ClassId::from_raw(5);
        let demand = Demand {
            peak_bytes: Estimate::new(1 << 20, 2 << 20),
            ..Demand::default()
        };
        let c = ctx(mem_grant(class, 2 << 20, 3 << 20), demand);
        alloc(&c, (2 << 20) + 1);
        cp.check(&c, 0);
        assert_eq!(c.grant().mem_hard(), 3 << 20);
        assert_eq!(c.grant().mem_soft(), 3 << 20, "refused: soft = hard");
        assert!(c.checkpoint_log().refused(Resource::Memory));
        assert_eq!(d.class(class).get(Decision::ExtensionRefused), 1);
        // Decided once: more polls past soft do not count again.
        cp.check(&c, 0);
        assert_eq!(d.class(class).get(Decision::Checkpoint), 1);
        cp.release(&c);
        assert_eq!(pool.reserved(), 7 << 20);
    }

    #[test]
    fn wall_time_is_marked_never_extended() {
        let (cp, d, _) = checkpoints(1 << 30, None);
        let class = ClassId::from_raw(6);
        let g = Grant {
            wall_ns: 1_000,
            ..Grant::unlimited(class)
        };
        let c = ctx(g, Demand::default());
        cp.check(&c, 500);
        assert!(c
            .checkpoint_log()
            .reached(Resource::Wall, CheckpointLevel::Half));
        cp.check(&c, 950);
        assert!(c
            .checkpoint_log()
            .reached(Resource::Wall, CheckpointLevel::Ninety));
        assert_eq!(c.grant().wall_ns(), 1_000);
        assert_eq!(d.class(class).get(Decision::Checkpoint), 1);
    }
}
