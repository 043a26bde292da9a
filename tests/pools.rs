//! Worker pools: tasks run in their request's pool, move between pools between polls, and pool
//! threads carry their pool's nice value.

use std::sync::Arc;

use pagegen::core::{ClassId, Grant, PoolId, RequestCtx, RequestId};
use pagegen::runtime::{Builder, PoolSpec, Runtime};

fn two_pools() -> Runtime {
    Builder::new()
        .temporary_state()
        .trainer(false)
        .temporary_state()
        .trainer(false)
        .thread_name("pools")
        .pool(PoolSpec::new("latency", 1))
        .pool(PoolSpec::new("bulk", 1).nice(10))
        .build()
        .unwrap()
}

fn ctx_in(pool: PoolId) -> Arc<RequestCtx> {
    let mut g = Grant::unlimited(ClassId::from_raw(1));
    g.pool = pool;
    RequestCtx::new(RequestId(1), g, 0)
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or_default().to_owned()
}

/// The nice value of the calling thread, from `/proc/thread-self/stat` (field 19).
fn own_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may contain spaces: fields are counted after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(16)?.parse().ok()
}

#[test]
fn a_task_runs_in_its_requests_pool_and_moves_between_polls() {
    let rt = two_pools();
    let ctx = ctx_in(PoolId::BULK);
    let h = rt.handle().spawn_with_ctx(ctx.clone(), async move {
        let first = (thread_name(), own_nice());
        // A checkpoint promotes the request: its tasks move at their next scheduling.
        RequestCtx::with_current(|c| c.unwrap().grant().set_pool(PoolId::LATENCY));
        pagegen::task::yield_now().await;
        let second = (thread_name(), own_nice());
        (first, second)
    });
    let ((bulk_name, bulk_nice), (lat_name, lat_nice)) = rt.block_on(h).unwrap();
    assert_eq!(bulk_name, "pools-bulk-0");
    assert_eq!(lat_name, "pools-latency-0");
    assert!(
        !std::path::Path::new("/proc/thread-self/stat").exists() || bulk_nice.is_some(),
        "/proc is there but the nice value did not parse"
    );
    if let (Some(b), Some(l)) = (bulk_nice, lat_nice) {
        // Raising one's nice value needs no privilege on Linux, so this holds wherever /proc exists;
        // the offset is relative to the process's own nice value (CI may run under `nice`).
        assert_eq!(
            b - l,
            (l + 10).min(19) - l,
            "bulk workers run 10 nice levels below latency workers"
        );
    }
}

#[test]
fn unclassified_work_and_unknown_pools_run_in_the_first_pool() {
    let rt = two_pools();
    let name = rt.block_on(rt.spawn(async { thread_name() })).unwrap();
    assert_eq!(name, "pools-latency-0");
    let odd = rt
        .block_on(
            rt.handle()
                .spawn_with_ctx(ctx_in(PoolId(7)), async { thread_name() }),
        )
        .unwrap();
    assert_eq!(odd, "pools-latency-0");
}

#[test]
fn children_and_wakes_follow_the_pool() {
    let rt = two_pools();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = rt
        .handle()
        .spawn_with_ctx(ctx_in(PoolId::BULK), async move {
            let child = pagegen::spawn(async { thread_name() }).await.unwrap();
            rx.await.unwrap();
            (child, thread_name())
        });
    tx.send(()).unwrap();
    let (child, after_wake) = rt.block_on(h).unwrap();
    assert_eq!(child, "pools-bulk-0");
    assert_eq!(after_wake, "pools-bulk-0");
}

/// The scheduling policy of the calling thread, from `/proc/thread-self/stat` (field 41).
fn own_policy() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(38)?.parse().ok()
}

#[test]
fn a_sched_idle_pool_runs_its_threads_under_sched_idle_and_spawn_in_follows_the_class_pool() {
    let rt = Builder::new()
        .temporary_state()
        .trainer(false)
        .temporary_state()
        .trainer(false)
        .thread_name("idlepool")
        .pool(PoolSpec::new("latency", 1))
        .pool(PoolSpec::new("bulk", 1).nice(10).sched_idle(true))
        .class(pagegen::ClassSpec::new("report").with_pool(PoolId::BULK))
        .build()
        .unwrap();
    let report = rt.handle().class_registry().id_of("report").unwrap();
    let (name, policy) = rt
        .block_on(rt.spawn_in(report, async { (thread_name(), own_policy()) }))
        .unwrap();
    assert_eq!(
        name, "idlepool-bulk-0",
        "spawn_in starts in the class's pool"
    );
    // SCHED_IDLE is 5 on Linux; lowering one's own policy to it needs no privilege.
    if let Some(p) = policy {
        assert_eq!(p, 5, "bulk thread's policy");
    }
    let latency = rt.block_on(rt.spawn(async { own_policy() })).unwrap();
    if let Some(p) = latency {
        assert_eq!(p, 0, "latency thread stays SCHED_OTHER");
    }
}
