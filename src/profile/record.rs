//! A finished request's accounts → its [`ProfileRecord`].

use std::time::{SystemTime, UNIX_EPOCH};

use pagegen_core::{ClassId, Features, Grant, Outcome, ProfileRecord, RequestCtx, Serving, Usage};
use pagegen_model::Served;

/// The record of a request that ran (`ctx` holds its grant, prediction and accounts) and ended with
/// `outcome` at `now_ns` (the clock that stamped its admission); `served_by` made its prediction,
/// widened to explore when `explored`.
pub fn finish_record(
    ctx: &RequestCtx,
    features: Features,
    (served_by, explored): (Serving, bool),
    outcome: Outcome,
    now_ns: u64,
) -> ProfileRecord {
    let usage = ctx.usage(now_ns);
    ProfileRecord {
        request_id: ctx.id().0,
        class: ctx.class(),
        started_unix_ms: unix_ms_ago(usage.cpu.wall_ns),
        features,
        predicted: ctx.demand(),
        grant: Some(ctx.grant().get()),
        usage,
        outcome,
        demoted: ctx.demoted(),
        checkpoints: ctx.checkpoint_log(),
        served_by: Some(served_by),
        explored,
    }
}

/// The record of a request shed before it ran: its prediction and the grant it was refused.
pub fn shed_record(
    request_id: u64,
    class: ClassId,
    features: Features,
    served: Served,
    grant: Grant,
) -> ProfileRecord {
    ProfileRecord {
        request_id,
        class,
        started_unix_ms: unix_ms_ago(0),
        features,
        predicted: Some(served.demand),
        grant: Some(grant),
        usage: Usage::default(),
        outcome: Outcome::Shed,
        demoted: false,
        checkpoints: Default::default(),
        served_by: Some(served.by),
        explored: served.explored,
    }
}

fn unix_ms_ago(ns: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(ns / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{CancelReason, Demand, Estimate, RequestId, Resource};

    #[test]
    fn records_carry_prediction_grant_usage_and_outcome() {
        let g = Grant {
            mem_hard: 1 << 20,
            ..Grant::unlimited(ClassId::from_raw(6))
        };
        let ctx = RequestCtx::new(RequestId(42), g, 1_000);
        let d = Demand {
            cpu_ns: Estimate::new(10, 20),
            ..Demand::default()
        };
        ctx.set_demand(d);
        ctx.cpu.record_poll(300, 310, 5);
        let r = finish_record(
            &ctx,
            Features::default(),
            (Serving::Ewma, true),
            Outcome::Cancelled(CancelReason::BudgetExceeded(Resource::Memory)),
            5_000,
        );
        assert_eq!((r.request_id, r.class), (42, ClassId::from_raw(6)));
        assert_eq!(r.predicted, Some(d));
        assert_eq!((r.served_by, r.explored), (Some(Serving::Ewma), true));
        assert_eq!(r.grant.map(|g| g.mem_hard), Some(1 << 20));
        assert_eq!((r.usage.cpu.cpu_ns, r.usage.cpu.wall_ns), (300, 4_000));
        assert!(r.censored(), "a cancelled request's usage is a lower bound");
        assert!(r.started_unix_ms > 1_600_000_000_000);
        let served = Served {
            demand: d,
            by: Serving::Recurrent,
            explored: false,
        };
        let s = shed_record(1, ClassId::from_raw(6), Features::default(), served, g);
        assert!(s.censored() && s.usage.cpu.polls == 0);
        assert_eq!(
            (s.predicted, s.served_by),
            (Some(d), Some(Serving::Recurrent))
        );
    }
}
