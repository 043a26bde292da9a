//! The trainer thread: [`spawn`] runs a [`tick`](Trainer::tick) every interval, paced by a
//! [`DutyCycle`]; [`TrainerHandle`] stops it. The rounds themselves are in [`super`].
//!
//! Beside a busy runtime: the trainer must not take CPU the request path wants. The facade runs
//! the thread at `SCHED_IDLE` (`pagegen::trainer`, through the [`StartHook`]), which is safe
//! because the trainer takes nothing the completion path waits for: it holds the profile store
//! only for a [snapshot](crate::store::StoreSnapshot) (completions only *try* the store's lock,
//! see [`crate::runtime`]) and no class lock at all (see [`crate::recurrent`]). On top, a duty
//! cycle ([`cpu_share`](super::TrainerConfig::cpu_share)) bounds the thread's CPU time: between
//! optimiser steps and between the gate's replays it sleeps so that its CPU time since the round
//! began stays under that share of the wall time since then; and a tick with fewer than
//! [`min_new_records`](super::TrainerConfig::min_new_records) new records skips the round.
//!
//! One core: candle 0.11 parallelises matmuls over its rayon pool and re-reads `/proc/cpuinfo` per
//! matmul when `RAYON_NUM_THREADS` is unset, so [`spawn`] requires `RAYON_NUM_THREADS=1` (the
//! facade's `#[pagegen::main]` sets it before any thread starts unless the user did).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Trainer;
use crate::deployed::Deployed;
use crate::error::ModelError;
use crate::store::ProfileStore;

/// The trainer thread's CPU budget: how long to sleep now so that the thread's CPU time since
/// [`start`](DutyCycle::start) stays under `share` of the wall time since then.
#[derive(Debug)]
pub struct DutyCycle {
    share: f64,
    wall0: std::time::Instant,
    cpu0: Option<u64>,
}

/// The calling thread's CPU time, ns, from `/proc/thread-self/schedstat` (its first field; Linux).
/// `None` elsewhere: [`DutyCycle`] then counts wall time, an upper bound of CPU time.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

impl DutyCycle {
    /// A budget of `share` of one core from now (`share >= 1`: unbounded).
    pub fn start(share: f64) -> Self {
        DutyCycle {
            share,
            wall0: std::time::Instant::now(),
            cpu0: thread_cpu_ns(),
        }
    }
    /// The sleep owed now (zero when within budget or unbounded).
    pub fn owed(&self) -> Duration {
        let wall = self.wall0.elapsed();
        let used = match (self.cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => wall,
        };
        owed(self.share, used, wall)
    }
}

/// Sleep owed after using `cpu` of CPU time in `wall` of wall time under a `share` of one core: the
/// wall time `cpu` is allowed to take (`cpu / share`) minus the wall time already passed.
fn owed(share: f64, cpu: Duration, wall: Duration) -> Duration {
    if share >= 1.0 {
        return Duration::ZERO;
    }
    cpu.div_f64(share).saturating_sub(wall)
}

/// A running trainer thread; dropping the handle stops it.
#[derive(Debug)]
pub struct TrainerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    rounds: Arc<AtomicU64>,
}

impl TrainerHandle {
    /// Ticks finished so far (trained or not, failed or not).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TrainerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether `RAYON_NUM_THREADS=1`, i.e. candle will stay on the calling thread's core.
pub fn single_threaded_candle() -> bool {
    std::env::var("RAYON_NUM_THREADS").is_ok_and(|v| v.trim() == "1")
}

/// Something the trainer thread runs once, first, on itself: the place to lower its OS priority
/// (the facade's `pagegen::trainer` passes `pagegen_executor::lower_current_thread_priority`; this
/// crate forbids `unsafe` and so cannot call the OS itself).
pub type StartHook = Box<dyn FnOnce() + Send + 'static>;

/// Starts the trainer thread: every `interval` it runs a [`tick`](Trainer::tick) (snapshot of
/// `store`, newest records, a [`round`](Trainer::round), a promoted champion saved to
/// `checkpoint`), paced to [`cpu_share`](super::TrainerConfig::cpu_share) of a core (see the
/// module docs). Refuses to start unless `RAYON_NUM_THREADS=1` (see the module docs). Same as
/// [`spawn_with`] with no start hook.
pub fn spawn(
    trainer: Trainer,
    deployed: Arc<Deployed>,
    store: Arc<Mutex<ProfileStore>>,
    checkpoint: Option<PathBuf>,
    interval: Duration,
) -> Result<TrainerHandle, ModelError> {
    spawn_with(
        trainer,
        deployed,
        store,
        checkpoint,
        interval,
        Box::new(|| {}),
    )
}

/// [`spawn`], running `on_start` on the trainer thread before its first round (see [`StartHook`]).
pub fn spawn_with(
    mut trainer: Trainer,
    deployed: Arc<Deployed>,
    store: Arc<Mutex<ProfileStore>>,
    checkpoint: Option<PathBuf>,
    interval: Duration,
    on_start: StartHook,
) -> Result<TrainerHandle, ModelError> {
    if !single_threaded_candle() {
        return Err(ModelError::Config(
            "the trainer needs RAYON_NUM_THREADS=1 in the environment before any thread starts \
             (#[pagegen::main] sets it; set it yourself when building the runtime by hand)"
                .into(),
        ));
    }
    let (tx, rx) = mpsc::channel::<()>();
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = rounds.clone();
    let thread = std::thread::Builder::new()
        .name("pagegen-trainer".into())
        .spawn(move || {
            on_start();
            let share = trainer.config.cpu_share;
            loop {
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let duty = DutyCycle::start(share);
                let mut pace = || {
                    let owed = duty.owed();
                    // Sleep on the stop channel, so stopping never waits out a long sleep.
                    owed.is_zero()
                        || matches!(rx.recv_timeout(owed), Err(RecvTimeoutError::Timeout))
                };
                match trainer.tick_paced(&deployed, &store, checkpoint.as_deref(), &mut pace) {
                    Ok(Some(report)) => tracing::debug!(?report, "trainer round"),
                    Ok(None) => tracing::trace!("trainer tick: no round"),
                    Err(e) => tracing::warn!(error = %e, "trainer round failed"),
                }
                // The round's end pays its debt too, so back-to-back ticks keep the share (a stop
                // during the round shows here as well, or at the next wait).
                if !pace() {
                    return;
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| ModelError::io("pagegen-trainer thread", e))?;
    Ok(TrainerHandle {
        stop: Some(tx),
        thread: Some(thread),
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Serving;
    use crate::net::NetWeights;
    use crate::store::StoreConfig;
    use crate::trainer::TrainerConfig;
    use pagegen_core::VirtualClock;

    #[test]
    fn spawn_requires_single_threaded_candle() {
        if single_threaded_candle() {
            // The environment already satisfies the requirement; the refusal cannot be observed.
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(tmp.path(), StoreConfig::default())
            .unwrap()
            .0;
        let deployed = Arc::new(Deployed::new(
            crate::DeployedConfig::default(),
            Arc::new(VirtualClock::new()),
            Arc::new(NetWeights::zeros()),
            Serving::Ewma,
        ));
        let t = Trainer::new(TrainerConfig::default(), &NetWeights::zeros()).unwrap();
        let r = spawn(
            t,
            deployed,
            Arc::new(Mutex::new(store)),
            None,
            Duration::from_secs(3600),
        );
        assert!(matches!(r, Err(ModelError::Config(_))));
    }

    #[test]
    fn the_duty_cycle_owes_what_keeps_cpu_under_the_share() {
        let ms = Duration::from_millis;
        // 40 ms of CPU at 2 % may take 2 s of wall time: 0.5 s passed, 1.5 s owed.
        assert_eq!(owed(0.02, ms(40), ms(500)), ms(1500));
        // Within budget: nothing owed.
        assert_eq!(owed(0.02, ms(40), ms(3000)), Duration::ZERO);
        // Unbounded.
        assert_eq!(owed(1.0, ms(40), ms(1)), Duration::ZERO);
        // Without a CPU clock, wall time counts as CPU: a busy share < 1 always owes.
        assert!(owed(0.5, ms(10), ms(10)) > Duration::ZERO);
    }
}
