//! The worker side of `core::driver`'s contract: each worker builds its driver on its own thread,
//! parks through it, is woken through its unparker, polls it between tasks; a factory error falls
//! back to the executor's own parking.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pagegen_core::{Driver, DriverFactory, Unpark, WorkerInfo};
use pagegen_executor::{Builder, Runtime};

#[derive(Default)]
struct Counts {
    made_on_worker: AtomicUsize,
    polls: AtomicUsize,
    parks: AtomicUsize,
}

/// A driver whose park is a token + condvar (the contract's "unpark before park returns at once").
struct TokenUnpark {
    token: Mutex<bool>,
    cv: Condvar,
}
impl Unpark for TokenUnpark {
    fn unpark(&self) {
        *self.token.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

struct CountingDriver {
    counts: Arc<Counts>,
    unpark: Arc<TokenUnpark>,
}
impl Driver for CountingDriver {
    fn poll_nonblocking(&mut self) -> usize {
        self.counts.polls.fetch_add(1, Ordering::Relaxed);
        0
    }
    fn park(&mut self, timeout: Option<Duration>) {
        self.counts.parks.fetch_add(1, Ordering::Relaxed);
        let mut t = self.unpark.token.lock().unwrap();
        while !*t {
            match timeout {
                None => t = self.unpark.cv.wait(t).unwrap(),
                Some(d) => {
                    let (g, res) = self.unpark.cv.wait_timeout(t, d).unwrap();
                    t = g;
                    if res.timed_out() {
                        break;
                    }
                }
            }
        }
        *t = false;
    }
    fn unparker(&self) -> Arc<dyn Unpark> {
        self.unpark.clone()
    }
}

struct Factory {
    counts: Arc<Counts>,
    fail: bool,
}
impl DriverFactory for Factory {
    fn worker_driver(&self, worker: &WorkerInfo) -> io::Result<Box<dyn Driver>> {
        if self.fail {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no rings here"));
        }
        if std::thread::current().name() == Some(worker.name.as_str()) {
            self.counts.made_on_worker.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Box::new(CountingDriver {
            counts: self.counts.clone(),
            unpark: Arc::new(TokenUnpark {
                token: Mutex::new(false),
                cv: Condvar::new(),
            }),
        }))
    }
}

/// A runtime of `workers` workers whose drivers come from a [`Factory`] counting into `counts`.
fn runtime(workers: usize, counts: &Arc<Counts>, fail: bool) -> Runtime {
    Builder::new()
        .workers(workers)
        .tokio_compat(false)
        .driver(Arc::new(Factory {
            counts: counts.clone(),
            fail,
        }))
        .build()
        .unwrap()
}

#[test]
fn workers_build_park_and_wake_through_their_driver() {
    let counts = Arc::new(Counts::default());
    let rt = runtime(2, &counts, false);
    assert_eq!(counts.made_on_worker.load(Ordering::Relaxed), 2);
    // Many rounds of "worker idle → remote spawn must wake it": a lost wake would hang here.
    for i in 0..200u32 {
        assert_eq!(rt.block_on(rt.spawn(async move { i })).unwrap(), i);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        for _ in 0..200 {
            pagegen_executor::task::yield_now().await;
        }
        tx.send(()).unwrap();
    });
    rx.recv().unwrap();
    drop(rt);
    assert!(
        counts.parks.load(Ordering::Relaxed) > 0,
        "idle workers park through the driver"
    );
    assert!(
        counts.polls.load(Ordering::Relaxed) > 0,
        "the driver is polled between tasks"
    );
}

#[test]
fn a_failing_driver_factory_falls_back_to_own_parking() {
    let counts = Arc::new(Counts::default());
    let rt = runtime(2, &counts, true);
    for i in 0..50u32 {
        assert_eq!(rt.block_on(rt.spawn(async move { i })).unwrap(), i);
    }
    assert_eq!(counts.parks.load(Ordering::Relaxed), 0);
}

#[test]
fn a_backlogged_worker_polls_its_driver_less_often_but_never_stops() {
    // One worker, 300 tasks that each yield 20 times: its queue holds well over half a queue
    // (128) of tasks for almost the whole run, so most periodic polls are skipped, but at most
    // three in a row (executor worker.rs, `MAX_DRIVER_SKIPS`).
    const TASKS: usize = 300;
    const YIELDS: usize = 20;
    let counts = Arc::new(Counts::default());
    let rt = runtime(1, &counts, false);
    let before = counts.polls.load(Ordering::SeqCst);
    let done = rt.block_on(rt.spawn(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                pagegen_executor::spawn(async {
                    for _ in 0..YIELDS {
                        pagegen_executor::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut done = 0;
        for h in handles {
            h.await.unwrap();
            done += 1;
        }
        done
    }));
    assert_eq!(done.unwrap(), TASKS);
    let polls = counts.polls.load(Ordering::SeqCst) - before;
    drop(rt);
    let task_polls = TASKS * (YIELDS + 1);
    // Every 61 ticks without the gate; at least every 4 x 61 with it.
    let ungated = task_polls / 61;
    let floor = task_polls / (61 * 4);
    assert!(
        polls >= floor,
        "{polls} driver polls over {task_polls} task polls: the gate must not starve I/O"
    );
    assert!(
        polls < ungated * 2 / 3,
        "{polls} driver polls over {task_polls} task polls: a backlogged worker skips most"
    );
}
