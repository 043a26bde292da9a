//! `/synthetic?cpu_us=&mem_kb=`: a request with exactly the given CPU time and memory, for
//! replaying a trace of function invocations (the load harness replays the Azure Functions trace
//! onto it).
//!
//! It allocates `mem_kb` KiB and touches every page, then computes over that memory in slices of
//! at most [`SLICE`] of *thread* CPU time (`CLOCK_THREAD_CPUTIME_ID`, so time the thread spends
//! preempted is not counted), yielding between slices, and frees the memory only after the last
//! slice: the memory is held across every await of the request.

use std::time::Duration;

use cpu_time::ThreadTime;

use super::platform::Platform;

/// Longest stretch of CPU between two yields (a long request still lets others run at this
/// grain; 1 ms is the order of a poll the executor's coop budget allows, plucked, not measured).
pub const SLICE: Duration = Duration::from_millis(1);
/// Most CPU one request may ask for.
pub const MAX_CPU: Duration = Duration::from_secs(10);
/// Most memory one request may ask for, KiB (1 GiB).
pub const MAX_MEM_KB: u64 = 1 << 20;

/// What a synthetic request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// CPU burnt, µs (thread CPU time, at least what was asked).
    pub cpu_us: u64,
    /// Memory held, KiB.
    pub mem_kb: u64,
    /// Yields made while holding it.
    pub yields: u32,
    /// A value computed from the memory, so the work cannot be optimised away.
    pub checksum: u64,
}

/// Burns `cpu` of CPU while holding `mem_kb` KiB; see the module docs.
pub async fn run(platform: Platform, cpu: Duration, mem_kb: u64) -> Done {
    let len = (mem_kb.min(MAX_MEM_KB) as usize) << 10;
    let mut mem = vec![0u8; len];
    // Touch every page so the memory is resident, not just reserved.
    for (i, b) in mem.iter_mut().enumerate().step_by(4096) {
        *b = i as u8 | 1;
    }
    let cpu = cpu.min(MAX_CPU);
    let mut spent = Duration::ZERO;
    let mut checksum = 0x9e37_79b9_7f4a_7c15u64;
    let mut yields = 0;
    let mut pos = 0;
    loop {
        let slice = (cpu - spent).min(SLICE);
        // The clock is read and compared on one thread: no await in between.
        spent += {
            let start = ThreadTime::now();
            loop {
                for _ in 0..256 {
                    let byte = if mem.is_empty() {
                        0
                    } else {
                        pos = (pos + 4093) % mem.len();
                        mem[pos]
                    };
                    checksum = (checksum ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
                    checksum = checksum.rotate_left(5);
                }
                let elapsed = start.elapsed();
                if elapsed >= slice {
                    break elapsed;
                }
            }
        };
        // Yield with the memory still held, at least once.
        platform.yield_now().await;
        yields += 1;
        if spent >= cpu {
            break;
        }
    }
    let mem_kb = (mem.len() >> 10) as u64;
    drop(mem);
    Done {
        cpu_us: spent.as_micros() as u64,
        mem_kb,
        yields,
        checksum,
    }
}
