//! Loom models of the task state protocol (rules R1–R3, W1/W2, A1, J1–J3 in the module docs).

use std::sync::Arc;
use std::task::{Poll, Waker};

use loom::thread;

use super::raw::JoinRaw;
use super::tests_support::{probe_task, Counter};
use crate::loom::{lock, Mutex};

fn join_output(j: &JoinRaw) -> Poll<Result<(), crate::error::JoinError>> {
    // SAFETY: probe tasks output `()`, and each model reads the output at most once.
    unsafe { j.poll_output::<()>(Waker::noop()) }
}

/// A wake from another thread racing with the poll that parks the waker: never lost, never doubled.
#[test]
fn loom_wake_races_with_idle_transition() {
    loom::model(|| {
        let counter = Counter::new();
        let slot = Arc::new(Mutex::new(None));
        let (n, join, ()) = probe_task(&counter, 1, Some(slot.clone()));
        let waker_thread = {
            let slot = slot.clone();
            thread::spawn(move || {
                if let Some(w) = lock(&slot).take() {
                    w.wake();
                }
            })
        };
        counter.run(n);
        waker_thread.join().unwrap();
        // If the other thread came too early, this wake is the one that counts.
        if let Some(w) = lock(&slot).take() {
            w.wake();
        }
        counter.drain();
        assert_eq!(counter.runs(), 1);
        assert_eq!(counter.drops(), 1);
        assert!(matches!(join_output(&join), Poll::Ready(Ok(()))));
    });
}

/// An abort racing with a poll: the future is dropped exactly once and the join sees a cancel.
#[test]
fn loom_abort_races_with_poll() {
    loom::model(|| {
        let counter = Counter::new();
        let (n, join, ()) = probe_task(&counter, usize::MAX, None);
        let join = Arc::new(join);
        let aborter = {
            let join = join.clone();
            thread::spawn(move || join.abort())
        };
        counter.run(n);
        aborter.join().unwrap();
        counter.drain();
        assert_eq!(counter.drops(), 1);
        assert_eq!(counter.runs(), 0);
        match join_output(&join) {
            Poll::Ready(Err(e)) => assert!(e.is_cancelled()),
            other => panic!(
                "expected a cancelled output, got {:?}",
                other.map(|r| r.is_ok())
            ),
        }
    });
}

/// Dropping the `JoinHandle` while the task completes: the output is dropped exactly once (J1/R3)
/// and the task is freed (the probe's drop ran).
#[test]
fn loom_join_drop_races_with_completion() {
    loom::model(|| {
        let counter = Counter::new();
        let (n, join, ()) = probe_task(&counter, 0, None);
        let dropper = thread::spawn(move || drop(join));
        counter.run(n);
        dropper.join().unwrap();
        assert_eq!(counter.runs(), 1);
        assert_eq!(counter.drops(), 1);
    });
}
