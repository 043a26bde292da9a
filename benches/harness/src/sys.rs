//! The few system calls the harness needs that std does not wrap: its own CPU time
//! (`getrusage`), SIGTERM to a server, and the clock tick of `/proc/PID/stat`. The only module
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
