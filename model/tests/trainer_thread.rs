//! The trainer thread's start hook runs on the trainer thread, before any round, and rounds are
//! counted. Its own test binary: it sets `RAYON_NUM_THREADS=1` before any other thread exists.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagegen_core::VirtualClock;
use pagegen_model::{ModelConfig, ModelRuntime, StateDir};

#[test]
fn start_hook_runs_first_on_the_trainer_thread() {
    // The only test in this binary, so no other test thread reads the environment meanwhile.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let tmp = tempfile::tempdir().unwrap();
    let mut m = ModelRuntime::open(
        StateDir::open(tmp.path()).unwrap(),
        Arc::new(VirtualClock::new()),
        ModelConfig::default(),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    m.start_trainer_with(
        Duration::from_millis(1),
        Box::new(move || {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send(name).unwrap();
        }),
    )
    .unwrap();
    let name = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(name.as_deref(), Some("pagegen-trainer"));
    // The hook ran once: its sender is gone with it.
    assert!(rx.recv_timeout(Duration::from_secs(60)).is_err());
    // Rounds on the (empty) store keep being counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.trainer().unwrap().rounds() < 3 {
        assert!(Instant::now() < deadline, "trainer made no rounds");
        std::thread::yield_now();
    }
    // A second start does nothing.
    m.start_trainer(Duration::from_millis(1)).unwrap();
}
