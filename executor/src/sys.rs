//! The raw clock reads of the poll instrumentation and the thread-priority calls of the pools; the
//! crate's only FFI.

/// The CPU's time-stamp counter. Only meaningful where `clock.rs` probed an invariant TSC.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a register, touches no memory, and exists on every x86_64 CPU.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Sets the calling thread's nice value (Linux: per thread, through its tid).
pub(crate) fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: `gettid` has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: plain syscall on this thread's own id; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts the calling thread in the `SCHED_IDLE` policy (it runs only when nothing else wants the CPU).
pub(crate) fn set_thread_sched_idle() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` is a valid `sched_param` for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// This thread's CPU time, ns (`CLOCK_THREAD_CPUTIME_ID`); `None` if the kernel refuses.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
