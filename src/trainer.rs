//! The model trainer beside a busy runtime: started at a low OS priority.
//!
//! The trainer (candle training rounds, see [`pagegen_model::trainer`]) must not take CPU from the
//! request path. It already stays on one core (`RAYON_NUM_THREADS=1`, which `#[pagegen::main]` sets);
//! [`start`] also lowers its thread's priority by [`TRAINER_NICE`] nice levels, on the trainer thread
//! itself before its first round, so the kernel runs it only when the workers leave CPU over. The
//! lowest nice value (19, weight 15 against a nice-0 thread's 1024: about 1.5 % of a contended core)
//! rather than +10, because a bulk pool usually sits at +10 and the trainer must yield to it too; at
//! +10 it took an equal share beside bulk workers (`benches/trainer.rs`, 2026-11-30). Not
//! `SCHED_IDLE`: the trainer takes the profile store's lock, which the completion path also takes,
//! and a `SCHED_IDLE` holder can be starved while holding it.
//!
//! `benches/trainer.rs` measures a busy runtime with and without the trainer beside it.

use std::time::Duration;

use pagegen_model::{ModelError, ModelRuntime, StartHook};

/// Nice levels the trainer thread is lowered by.
pub const TRAINER_NICE: i32 = 19;

/// The start hook [`start`] gives the trainer: lower the calling thread's priority by
/// [`TRAINER_NICE`]. Where the OS refuses, the trainer runs at the process's priority and says so once.
pub fn lower_priority_hook() -> StartHook {
    Box::new(
        || match pagegen_executor::lower_current_thread_priority(TRAINER_NICE) {
            Ok(nice) => tracing::debug!(nice, "model trainer thread lowered"),
            Err(e) => tracing::warn!(
                error = %e,
                "could not lower the model trainer thread's priority; it runs at normal priority"
            ),
        },
    )
}

/// Starts `model`'s trainer thread (a round every `interval`) at low OS priority
/// ([`lower_priority_hook`]). Needs `RAYON_NUM_THREADS=1`, as
/// [`ModelRuntime::start_trainer`] does; a second call while it runs does nothing.
pub fn start(model: &mut ModelRuntime, interval: Duration) -> Result<(), ModelError> {
    model.start_trainer_with(interval, lower_priority_hook())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, from `/proc/thread-self/stat` (field 19).
    fn thread_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces; the fields after its closing ')' do not.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn the_hook_lowers_only_the_thread_it_runs_on() {
        let before = thread_nice();
        let inside = std::thread::spawn(|| {
            lower_priority_hook()();
            thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + TRAINER_NICE).min(19));
        assert_eq!(thread_nice(), before);
    }
}
