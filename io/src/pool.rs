//! The blocking backend: a pool of threads that run each operation as a plain system call.
//!
//! Used when io_uring cannot be set up (or `PAGEGEN_IO=blocking`). Operations go through the same
//! [`IoClasses`](crate::IoClasses) permits and the same op.rs protocol as on a ring, so limits and
//! profiles are identical; only the submission differs: a job queue instead of a submission queue.
//! A job takes the op's resources out for the duration of the call (so the future never waits on a
//! lock held across a system call), then completes the op, which frees the class's slot before it
//! publishes the result (op.rs protocol, step 3: release, then publish), so a future that has
//! returned never leaves its slot held by a pool thread.
//!
//! Threads are started on demand up to a maximum and exit after an idle period.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::op::{Op, Res};
use crate::sys;

/// Pool threads at most. 16: each blocking read holds a thread, and page-cache reads take
/// microseconds, so a few threads per core keep the device busy; cold reads beyond this queue,
/// which is what a per-class depth would impose anyway.
pub(crate) const MAX_THREADS: usize = 16;

/// An idle pool thread exits after this long (tokio's blocking pool uses 10 s).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Arc<Op>>,
    threads: usize,
    idle: usize,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// A pool of blocking threads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Queues `op`; starts a thread if none is idle and the pool is below its maximum.
    pub(crate) fn submit(&self, op: Arc<Op>) {
        let spawn = {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.jobs.push_back(op);
            if st.idle == 0 && st.threads < MAX_THREADS {
                st.threads += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("pagegen-io-blocking".into())
                .spawn(move || worker(shared));
            if let Err(e) = started {
                tracing::warn!("pagegen-io: cannot start a blocking I/O thread: {e}");
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.threads -= 1;
                if st.threads == 0 {
                    // Nobody will run the queue: run it here rather than hang.
                    let jobs: Vec<_> = st.jobs.drain(..).collect();
                    drop(st);
                    jobs.into_iter().for_each(run_job);
                }
                return;
            }
        }
        self.shared.cv.notify_one();
    }
}

fn worker(shared: Arc<Shared>) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(op) = st.jobs.pop_front() {
            drop(st);
            run_job(op);
            st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.idle += 1;
        let (g, timeout) = shared
            .cv
            .wait_timeout(st, KEEP_ALIVE)
            .unwrap_or_else(|e| e.into_inner());
        st = g;
        st.idle -= 1;
        if timeout.timed_out() && st.jobs.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

fn run_job(op: Arc<Op>) {
    let res = {
        let mut g = op.lock();
        if g.abandoned() {
            drop(g);
            op.discard();
            return;
        }
        g.res.take()
    };
    let Some(mut res) = res else {
        return;
    };
    let result = run_blocking(&mut res);
    op.lock().res = Some(res);
    // Releases the permit, then publishes the result (op.rs protocol, step 3).
    if let Some(w) = op.complete(result) {
        w.wake();
    }
}

/// Runs one operation as a blocking system call; returns its result or `-errno`.
pub(crate) fn run_blocking(res: &mut Res) -> i32 {
    match res {
        Res::Read {
            file,
            buf,
            len,
            offset,
        } => sys::pread_spare(file.as_raw_fd(), buf, *len, *offset),
        Res::Write {
            file,
            buf,
            from,
            offset,
        } => sys::pwrite(file.as_raw_fd(), &buf[(*from).min(buf.len())..], *offset),
        Res::Open { path, flags, mode } => sys::open(path, *flags | libc::O_CLOEXEC, *mode),
        Res::Statx { file, path, out } => match file {
            Some(f) => sys::statx(f.as_raw_fd(), c"", libc::AT_EMPTY_PATH, out),
            None => sys::statx(libc::AT_FDCWD, path.as_c_str(), 0, out),
        },
        Res::Fsync { file } => sys::fsync(file.as_raw_fd()),
        // Sockets reach the pool only on the uring backend when no ring can serve the thread;
        // they are blocking there (see ring.rs, `build_entry`).
        Res::Recv { sock, buf, len } => sys::recv_spare(sock.as_raw_fd(), buf, *len),
        Res::Send { sock, buf, from } => {
            sys::send(sock.as_raw_fd(), &buf[(*from).min(buf.len())..])
        }
        Res::ReadFile(rf) => {
            rf.run_blocking();
            0
        }
        Res::Accept { sock, ready } => {
            // One connection per job; the op then ends and the listener starts another.
            ready.push_back(sys::accept(sock.as_raw_fd(), 0));
            0
        }
    }
}
