//! The raw clock reads of the poll instrumentation and the thread-priority calls of the pools; the
//! crate's only FFI.

/// The CPU's time-stamp counter. Only meaningful where `clock.rs` probed an invariant TSC.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a register, touches no memory, and exists on every x86_64 CPU.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Raises the calling thread's nice value by `offset` above the one it inherited (Linux: per thread,
/// through its tid), clamped to 19, so "bulk at +10" stays 10 levels below the latency workers even
/// when the whole process was started under `nice`. Returns the nice value set.
pub(crate) fn raise_thread_nice(offset: i32) -> std::io::Result<i32> {
    // SAFETY: `gettid` has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // `getpriority` may legitimately return -1, so errors are told apart through errno.
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall on this thread's own id; no memory is passed.
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let err = std::io::Error::last_os_error();
    if base == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
        return Err(err);
    }
    let nice = (base + offset).clamp(-20, 19);
    // SAFETY: plain syscall on this thread's own id; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 {
        Ok(nice)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Gives the calling thread a custom scheduler slice of `slice_ns` under `SCHED_OTHER` (Linux EEVDF,
/// 6.12 and later: `sched_setattr` with `sched_runtime` = the slice; the kernel clamps it to
/// 0.1–100 ms). A short slice gives the thread an early virtual deadline whenever it wakes, so the
/// kernel preempts a thread with a longer slice for it at once instead of at that thread's next tick.
/// `sched_setattr` also sets the nice value, so the thread's current one is passed through unchanged.
/// Kernels before 6.12 accept the call and ignore the slice; that cannot be told apart from here.
pub(crate) fn set_thread_slice(slice_ns: u64) -> std::io::Result<()> {
    // SAFETY: `gettid` has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall on this thread's own id; no memory is passed.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let err = std::io::Error::last_os_error();
    if nice == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
        return Err(err);
    }
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: pid 0 names the calling thread; `attr` is a valid, initialised `sched_attr` whose
    // `size` field is its own size, read by the kernel for the duration of the call only; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::pid_t,
            &attr as *const libc::sched_attr,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// This thread's scheduler slice as the kernel reports it (`sched_getattr`'s `sched_runtime`, ns).
#[cfg(all(test, not(loom)))]
pub(crate) fn thread_slice_ns() -> std::io::Result<u64> {
    // SAFETY: `sched_attr` is plain integers; all-zero is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 names the calling thread; `attr` is writable and its size is passed, so the
    // kernel writes at most that many bytes; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0 as libc::pid_t,
            &mut attr as *mut libc::sched_attr,
            std::mem::size_of::<libc::sched_attr>() as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(attr.sched_runtime)
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
