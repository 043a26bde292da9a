//! The few system calls the harness needs that std does not wrap: its own CPU time
//! (`getrusage`), SIGTERM to a server, the clock tick of `/proc/PID/stat`, the open-file limit
//! and the generator's own scheduling priority. The only module
//! with `unsafe` (each block a plain libc call on values it owns).
#![allow(unsafe_code)]

use std::{io, time::Duration};

/// CPU time (user + system) of this whole process so far: the load generator's own cost.
pub fn own_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given; the pointer is to a
    // zeroed, properly aligned local that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Sends SIGTERM to `pid` (a server this harness started and has not yet reaped, so the pid
/// cannot have been reused).
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second, the unit of utime/stime in `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Raises this process's open-file soft limit towards its hard limit so that `want` connections
/// (and as many on the server's side: servers inherit the limit) fit; returns the soft limit now.
/// A soft limit of 1024, common on desktops, would turn an overloaded phase's connection growth
/// into connect errors of the generator's own making.
pub fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the pointer it is given, a local that outlives
    // the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = want.min(lim.rlim_max);
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` from a local that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return target;
        }
    }
    lim.rlim_cur
}

/// The real-time priority the generator's threads ask for: the lowest `SCHED_FIFO` level.
const GENERATOR_RT_PRIORITY: libc::c_int = 1;

/// Puts the calling thread under `SCHED_FIFO` at the lowest real-time priority, with
/// `SCHED_RESET_ON_FORK` so that neither the servers it starts nor the threads it creates
/// inherit it (each thread that wants it asks for itself).
///
/// Why: the load generator shares the machine's cores with the server under test. At normal
/// priority its dispatcher wakes late and its receiving side notices answers late whenever the
/// server keeps both cores busy, and that lag lands in every latency it measures (about 2 ms at
/// p99 on this 2-core machine), a floor that hides the difference between servers. Ahead of
/// every normal thread it behaves more like a generator on its own machine; it uses a few % of
/// one core, so the server loses little. Needs `CAP_SYS_NICE` (root here); the error says why
/// when it is refused, and the caller runs at normal priority instead.
pub fn raise_thread_to_realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: GENERATOR_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler reads one `sched_param` from a local that outlives the call;
    // pid 0 is the calling thread.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy, in words (`SCHED_FIFO 1`, `SCHED_OTHER`, ...).
pub fn thread_policy() -> String {
    // SAFETY: sched_getscheduler takes a plain integer (0: the calling thread).
    let policy = unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getparam writes one `sched_param` into a local that outlives the call.
    let rc = unsafe { libc::sched_getparam(0, &mut param) };
    let prio = if rc == 0 { param.sched_priority } else { 0 };
    match policy {
        libc::SCHED_FIFO => format!("SCHED_FIFO {prio}"),
        libc::SCHED_RR => format!("SCHED_RR {prio}"),
        libc::SCHED_OTHER => "SCHED_OTHER".into(),
        libc::SCHED_BATCH => "SCHED_BATCH".into(),
        libc::SCHED_IDLE => "SCHED_IDLE".into(),
        other => format!("policy {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realtime_thread_says_so_and_its_children_do_not_inherit_it() {
        let inner = std::thread::spawn(|| {
            let raised = raise_thread_to_realtime();
            let mine = thread_policy();
            // A thread created by a real-time one with SCHED_RESET_ON_FORK starts at normal
            // priority.
            let child = std::thread::spawn(thread_policy)
                .join()
                .expect("child thread");
            (raised.is_ok(), mine, child)
        });
        let (raised, mine, child) = inner.join().expect("test thread");
        if raised {
            assert_eq!(mine, "SCHED_FIFO 1");
        } else {
            assert_eq!(
                mine, "SCHED_OTHER",
                "a refused raise leaves the thread as it was"
            );
        }
        assert_eq!(child, "SCHED_OTHER");
    }
}
