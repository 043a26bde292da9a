//! Classes: registration on the builder and at run time, `spawn_in`, inheritance, and the
//! weighted-fair pick. Poll timing is off in the share tests, so every poll is charged the same
//! nominal CPU and one worker's order of polls depends on shares alone: the split is exact up to the
//! charge batch, not a timing measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pagegen_core::{ClassId, ClassRegistry, ClassSpec, RequestCtx, Shares};
use pagegen_executor::{spawn_in, task, Builder, Runtime};

fn shares(n: u16) -> Shares {
    Shares::new(n).expect("valid shares")
}

/// Yields until `total` reaches `limit`, counting its own polls.
async fn spin(mine: Arc<AtomicU64>, total: Arc<AtomicU64>, limit: u64) {
    while total.fetch_add(1, Ordering::Relaxed) < limit {
        mine.fetch_add(1, Ordering::Relaxed);
        task::yield_now().await;
    }
}

/// Runs one spinning task in each of `classes` on a single worker until `limit` polls in all, and
/// returns each class's polls.
fn split(handle: &Runtime, classes: &[ClassId], limit: u64) -> Vec<u64> {
    let total = Arc::new(AtomicU64::new(0));
    let counts: Vec<_> = classes
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let (cls, cnt, tot) = (classes.to_vec(), counts.clone(), total.clone());
    // Spawned from one task on the worker, so every class is queued before any of them runs.
    let h = handle.spawn(async move {
        let hs: Vec<_> = cls
            .iter()
            .zip(&cnt)
            .map(|(&c, n)| spawn_in(c, spin(n.clone(), tot.clone(), limit)))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    handle.block_on(h).unwrap();
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

#[test]
fn spawn_in_runs_in_the_class_and_children_inherit_it() {
    let rt = Builder::new()
        .workers(2)
        .tokio_compat(false)
        .class(ClassSpec::new("GET /search"))
        .build()
        .unwrap();
    let h = rt.handle();
    let search = h.class_registry().id_of("GET /search").unwrap();
    let (own, child) = rt.block_on(async move {
        spawn_in(search, async {
            let own = RequestCtx::current().map(|c| c.class());
            let child = pagegen_executor::spawn(async { RequestCtx::current().map(|c| c.class()) })
                .await
                .unwrap();
            (own, child)
        })
        .await
        .unwrap()
    });
    assert_eq!(own, Some(search));
    assert_eq!(child, Some(search), "children inherit the class");
    let unclassified = rt
        .block_on(rt.spawn(async { RequestCtx::current().map(|c| c.class()) }))
        .unwrap();
    assert_eq!(unclassified, Some(ClassId::DEFAULT));
}

#[test]
fn classes_registered_at_run_time_and_in_a_given_registry_are_scheduled() {
    let registry = Arc::new(ClassRegistry::in_memory());
    let early = registry.register(ClassSpec::new("early")).unwrap();
    let rt = Builder::new()
        .workers(1)
        .tokio_compat(false)
        .poll_timing(false)
        .class_registry(registry.clone())
        .build()
        .unwrap();
    let h = rt.handle();
    let late = h
        .register_class(ClassSpec::new("late").with_shares(shares(300)))
        .unwrap();
    assert_eq!(registry.id_of("late"), Some(late));
    assert_eq!(h.class_stats(early).unwrap().shares.get(), 100);
    assert_eq!(h.class_stats(late).unwrap().shares.get(), 300);
    let polls = split(&rt, &[early, late], 4_000);
    assert!(polls.iter().all(|&p| p > 0), "both ran: {polls:?}");
    assert!(h.class_stats(late).unwrap().polls >= polls[1]);
    assert_eq!(h.class_stats(ClassId::from_raw(999)), None);
}

#[test]
fn one_worker_splits_polls_by_shares_and_follows_changes() {
    let rt = Builder::new()
        .workers(1)
        .tokio_compat(false)
        .poll_timing(false)
        .class(ClassSpec::new("light").with_shares(shares(100)))
        .class(ClassSpec::new("heavy").with_shares(shares(300)))
        .build()
        .unwrap();
    let h = rt.handle();
    let reg = h.class_registry().clone();
    let (a, b) = (reg.id_of("light").unwrap(), reg.id_of("heavy").unwrap());

    let polls = split(&rt, &[a, b], 8_000);
    let frac = polls[1] as f64 / (polls[0] + polls[1]) as f64;
    assert!(
        (frac - 0.75).abs() < 0.02,
        "shares 1:3 gave polls {polls:?} ({frac:.3} to the heavier)"
    );

    assert!(h.set_shares(b, shares(100)));
    let polls = split(&rt, &[a, b], 8_000);
    let frac = polls[1] as f64 / (polls[0] + polls[1]) as f64;
    assert!(
        (frac - 0.5).abs() < 0.02,
        "equal shares gave polls {polls:?} ({frac:.3})"
    );
}

#[test]
fn an_unregistered_class_runs_at_default_shares() {
    let rt = Builder::new()
        .workers(1)
        .tokio_compat(false)
        .poll_timing(false)
        .build()
        .unwrap();
    let stray = ClassId::from_raw(42);
    let polls = split(&rt, &[ClassId::DEFAULT, stray], 4_000);
    let frac = polls[1] as f64 / (polls[0] + polls[1]) as f64;
    assert!((frac - 0.5).abs() < 0.02, "polls {polls:?}");
}

/// The shares policy sees each class's scheduled delay (`ClassLoad::sched_delay_p99_ns`): on one
/// worker, a `quick` task queued at the start of a `slow` task's 300 µs poll cannot run before that
/// poll ends, so its delay is at least 300 µs whatever order the pick takes, and the policy hears
/// so. (The slow poll spawns it: waiting on which class the pick prefers would make the test
/// depend on timing.)
#[test]
fn the_policy_sees_scheduled_delay_per_class() {
    use pagegen_core::{ClassLoad, SharesPolicy};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    struct Watch(Arc<Mutex<Vec<ClassLoad>>>);
    impl SharesPolicy for Watch {
        fn period(&self) -> Duration {
            Duration::ZERO
        }
        fn adjust(&mut self, loads: &[ClassLoad], _: &mut Vec<(ClassId, Shares)>) {
            self.0.lock().unwrap().extend_from_slice(loads);
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rt = Builder::new()
        .workers(1)
        .class(ClassSpec::new("quick"))
        .class(ClassSpec::new("slow"))
        .shares_policy(Watch(seen.clone()))
        .build()
        .unwrap();
    let reg = rt.handle().class_registry().clone();
    let (quick, slow) = (reg.id_of("quick").unwrap(), reg.id_of("slow").unwrap());
    let s = rt.spawn_in(slow, async move {
        let mut quicks = Vec::new();
        for _ in 0..50 {
            // Queued on this (the only) worker, which is busy with this poll for 300 µs more.
            quicks.push(spawn_in(quick, async {}));
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(300) {
                std::hint::spin_loop();
            }
            task::yield_now().await;
        }
        for q in quicks {
            q.await.unwrap();
        }
    });
    rt.block_on(async {
        s.await.unwrap();
    });
    let seen = seen.lock().unwrap();
    let worst = |c: ClassId| {
        seen.iter()
            .filter(|l| l.class == c)
            .map(|l| l.sched_delay_p99_ns)
            .max()
            .unwrap_or(0)
    };
    assert!(!seen.is_empty(), "the policy ran");
    assert!(
        worst(quick) >= 300_000,
        "quick waits behind 300 µs polls: p99 {} ns",
        worst(quick)
    );
}
