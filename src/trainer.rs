//! The model trainer beside a busy runtime: started at `SCHED_IDLE`, under a CPU duty cycle.
//!
//! The trainer (candle training rounds, see [`pagegen_model::trainer`]) must not take CPU from the
//! request path. It already stays on one core (`RAYON_NUM_THREADS=1`, which `#[pagegen::main]` sets).
//! [`start`] also, on the trainer thread itself before its first round:
//! - lowers it to nice +[`TRAINER_NICE`] (the lowest), and then
//! - puts it under Linux's `SCHED_IDLE` policy, so the kernel runs it only on CPU time no normal
//!   thread wants (nice +19 still has a weight: beside two saturated workers it was given 5.7 % of a
//!   core and cost the heavy class ~5 % of its throughput, `benches/trainer.rs`, 2026-11-30).
//!   `SCHED_IDLE` is safe here because the trainer holds nothing a completion waits for: completions
//!   only *try* the profile store's lock and the trainer takes no class lock (see
//!   [`pagegen_model::runtime`] and [`pagegen_model::recurrent`]). Where the OS refuses it, the
//!   nice value stays and a warning says so.
//!
//! Independently of the OS policy, the trainer bounds its own CPU time to
//! [`TrainerConfig::cpu_share`](pagegen_model::TrainerConfig::cpu_share) of one core (default 2 %)
//! and skips rounds with too few new records (see [`pagegen_model::trainer`]).
//!
//! `benches/trainer.rs` measures a busy runtime with and without the trainer beside it.

use std::time::Duration;

use pagegen_model::{ModelError, ModelRuntime, StartHook};

/// Nice levels the trainer thread is lowered by before it enters `SCHED_IDLE` (what it keeps where
/// `SCHED_IDLE` is refused).
pub const TRAINER_NICE: i32 = 19;

/// What [`isolate_current_thread`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// `SCHED_IDLE` (after nice +19).
    SchedIdle,
    /// Only the nice value (`SCHED_IDLE` refused); the value set.
    Nice(i32),
    /// Nothing: the OS refused both; the thread runs at the process's priority.
    None,
}

/// Lowers the calling thread as [`start`] does for the trainer: nice +[`TRAINER_NICE`], then
/// `SCHED_IDLE`. Each refusal is logged once, as a warning.
pub fn isolate_current_thread() -> Isolation {
    let nice = match pagegen_executor::lower_current_thread_priority(TRAINER_NICE) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not lower the model trainer thread's nice value");
            None
        }
    };
    match pagegen_executor::set_current_thread_sched_idle() {
        Ok(()) => {
            tracing::debug!("model trainer thread at SCHED_IDLE");
            Isolation::SchedIdle
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                ?nice,
                "could not put the model trainer thread at SCHED_IDLE; it keeps its nice value"
            );
            nice.map_or(Isolation::None, Isolation::Nice)
        }
    }
}

/// The start hook [`start`] gives the trainer: [`isolate_current_thread`].
pub fn isolation_hook() -> StartHook {
    Box::new(|| {
        isolate_current_thread();
    })
}

/// Starts `model`'s trainer thread (a round every `interval`, see [`isolation_hook`] for its OS
/// priority). Needs `RAYON_NUM_THREADS=1`, as [`ModelRuntime::start_trainer`] does; a second call
/// while it runs does nothing.
pub fn start(model: &mut ModelRuntime, interval: Duration) -> Result<(), ModelError> {
    model.start_trainer_with(interval, isolation_hook())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's (nice value, scheduling policy), from `/proc/thread-self/stat` (fields 19
    /// and 41).
    fn thread_nice_policy() -> (i32, u32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces; the fields after its closing ')' do not.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (rest[16].parse().unwrap(), rest[38].parse().unwrap())
    }

    /// Linux's number for `SCHED_IDLE`.
    const SCHED_IDLE: u32 = 5;

    #[test]
    fn the_hook_isolates_only_the_thread_it_runs_on() {
        let before = thread_nice_policy();
        let (got, inside) = std::thread::spawn(|| {
            let got = isolate_current_thread();
            (got, thread_nice_policy())
        })
        .join()
        .unwrap();
        match got {
            Isolation::SchedIdle => assert_eq!(inside.1, SCHED_IDLE),
            Isolation::Nice(n) => assert_eq!((n, inside.0), ((before.0 + TRAINER_NICE).min(19), n)),
            Isolation::None => assert_eq!(inside, before),
        }
        if got != Isolation::None {
            assert_eq!(inside.0, (before.0 + TRAINER_NICE).min(19));
        }
        assert_eq!(thread_nice_policy(), before);
    }
}
