//! One file operation's life, shared by the future that waits for it and the backend that runs it.
//!
//! Lifecycle protocol (cited as "op.rs protocol" elsewhere):
//! 1. The future acquires a [`Permit`] from its class, builds an [`Op`] owning every resource the
//!    kernel will touch (buffer, path, statx buffer, and an `Arc` of the file so its fd cannot be
//!    closed and reused while the operation is queued), and hands an `Arc<Op>` to the backend.
//!    [`run`] does this given only the pieces it needs (the class limits, the live-op counter and
//!    a submit function); [`Io::run_op`](crate::handle::Io::run_op) passes the runtime's.
//! 2. The backend (a ring's in-flight table, or a blocking-pool job) keeps its own `Arc<Op>` until the
//!    operation's completion arrives. **Only the backend's clone keeps the resources alive for the
//!    kernel**; the future may vanish at any time.
//! 3. On completion the backend calls [`Op::complete`], which **releases, then publishes**: it
//!    first drops the permit (the class's, device's and request's slots are free only once the
//!    kernel is done), and only then, under a second lock of the op, stores the result and takes
//!    the waker, which the backend wakes outside any lock. A future sees the result only after the
//!    slot is free, so when it returns, `IoClasses::in_flight` and the request's count no longer
//!    include it, whether it was woken or merely polled again (a poll loop may see a result before
//!    any wake). Storing the result first and releasing after let a future return while the
//!    backend thread still held its slot.
//! 4. A future dropped before completion marks the op abandoned and, if the op reached a ring, sends
//!    a cancel for it to the ring that owns it ([`Inbox::cancel`]) — never touching that ring
//!    itself. The ring submits an `AsyncCancel`; whatever the outcome, the buffer is freed only when
//!    the ring drops its `Arc` after the final completion. An op that never reached the kernel (still
//!    in an inbox or a backlog) is simply skipped and dropped.
//!
//! Socket operations (`net`) follow the same protocol with two differences. They hold **no class
//! permit**: a receive on an idle keep-alive connection may wait for minutes, and must not hold a
//! file-I/O depth slot meanwhile ([`start`] instead of [`run`]). And a **multishot** operation (the
//! listener's accept) completes many times: each completion flagged `IORING_CQE_F_MORE` is
//! delivered into the op's resources ([`Op::deliver`]) and wakes the waiter without ending the op;
//! the last one (no `MORE`) completes it as in step 3. Its waiter is a [`Multi`], which polls the
//! op repeatedly and, when dropped, cancels it exactly as step 4 says.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pagegen_core::RequestCtx;

use crate::chain::ReadFile;
use crate::classes::{IoClasses, Permit};
use crate::ring::Inbox;

/// The resources of one operation: what the kernel reads or writes while it runs.
#[derive(Debug)]
pub(crate) enum Res {
    /// Read up to `len` bytes at `offset` into `buf`'s spare capacity.
    Read {
        file: Arc<File>,
        buf: Vec<u8>,
        len: usize,
        offset: u64,
    },
    /// Write `buf[from..]` at `offset`.
    Write {
        file: Arc<File>,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
    },
    /// Open `path`.
    Open {
        path: CString,
        flags: i32,
        mode: u32,
    },
    /// Stat `path`, or `file` when given (with an empty path and `AT_EMPTY_PATH`).
    Statx {
        file: Option<Arc<File>>,
        path: CString,
        out: Box<libc::statx>,
    },
    /// `fsync` the file.
    Fsync { file: Arc<File> },
    /// Receive up to `len` bytes from the socket into `buf`'s spare capacity.
    Recv {
        sock: Arc<TcpStream>,
        buf: Vec<u8>,
        len: usize,
    },
    /// Send `buf[from..]` on the socket (`MSG_NOSIGNAL`: a reset peer is an error, not a signal).
    Send {
        sock: Arc<TcpStream>,
        buf: Vec<u8>,
        from: usize,
    },
    /// `fs::read`'s linked chain (open, read, probe; chain.rs protocol); the blocking pool runs
    /// the same steps as plain calls.
    ReadFile(ReadFile),
    /// Multishot accept on the listener: every completion's connection (or `-errno`) is queued
    /// in `ready`; a connection nobody collects is closed when the op is freed.
    Accept {
        sock: Arc<TcpListener>,
        ready: VecDeque<Result<OwnedFd, i32>>,
    },
}

#[derive(Debug)]
pub(crate) struct OpInner {
    /// `None` only while a blocking-pool thread runs the operation.
    pub(crate) res: Option<Res>,
    result: Option<i32>,
    waker: Option<Waker>,
    abandoned: bool,
    permit: Option<Permit>,
    /// The ring that owns the op once it is in the kernel, and its user_data there.
    owner: Option<(Arc<Inbox>, u64)>,
    submitted: Instant,
    completed: Option<Instant>,
}

/// A submitted operation. See the module docs for who holds which clone.
#[derive(Debug)]
pub(crate) struct Op {
    inner: Mutex<OpInner>,
    /// The runtime's count of ops whose resources are alive (decremented when this op is freed).
    live: Arc<AtomicUsize>,
}

impl Drop for Op {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Release);
    }
}

impl Op {
    /// A new op holding `res` and the class `permit` (none for sockets); `live` already counts it
    /// (protocol step 1).
    fn new(res: Res, permit: Option<Permit>, live: Arc<AtomicUsize>) -> Arc<Op> {
        Arc::new(Op {
            inner: Mutex::new(OpInner {
                res: Some(res),
                result: None,
                waker: None,
                abandoned: false,
                permit,
                owner: None,
                submitted: Instant::now(),
                completed: None,
            }),
            live,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OpInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the result, releases the permit and returns the waker to wake (outside any lock).
    pub(crate) fn complete(&self, result: i32) -> Option<Waker> {
        self.complete_with(result, |_| {})
    }

    /// [`complete`](Op::complete), running `f` on the resources first under the same lock (a
    /// ring marks the bytes a read filled).
    ///
    /// Releases, then publishes (op.rs protocol, step 3): the permit is dropped between two locks
    /// of the op, never under one (its drop takes the class queue's lock and may wake other
    /// operations' futures), and the result is stored only after it.
    pub(crate) fn complete_with(&self, result: i32, f: impl FnOnce(&mut Res)) -> Option<Waker> {
        let completed = Instant::now();
        let permit = {
            let mut g = self.lock();
            if let Some(res) = g.res.as_mut() {
                f(res);
            }
            g.owner = None;
            g.permit.take()
        };
        drop(permit);
        let mut g = self.lock();
        g.result = Some(result);
        g.completed = Some(completed);
        g.waker.take()
    }

    /// Hands one completion of a multishot op to its resources without ending the op (the
    /// completion carried `IORING_CQE_F_MORE`); returns the waker to wake outside any lock.
    pub(crate) fn deliver(&self, f: impl FnOnce(&mut Res)) -> Option<Waker> {
        let mut g = self.lock();
        if let Some(res) = g.res.as_mut() {
            f(res);
        }
        g.waker.take()
    }

    /// Drops an op that never reached the kernel (its future is gone): releases the permit.
    pub(crate) fn discard(&self) {
        let permit = self.lock().permit.take();
        drop(permit);
    }
}

impl OpInner {
    /// Whether the future was dropped.
    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned
    }
    /// Records which ring owns the op (set under the op's lock when its SQE is pushed).
    pub(crate) fn set_owner(&mut self, inbox: Arc<Inbox>, user_data: u64) {
        self.owner = Some((inbox, user_data));
    }
}

/// What a finished operation hands back to the fs layer.
#[derive(Debug)]
pub(crate) struct Done {
    /// `>= 0`: the syscall's result; `< 0`: `-errno`.
    pub(crate) result: i32,
    pub(crate) res: Res,
    /// Submission to completion, ns.
    pub(crate) latency_ns: u64,
    /// The request the operation worked for, if any.
    pub(crate) ctx: Option<Arc<RequestCtx>>,
}

/// Future that waits for an [`Op`]'s completion; cancels it when dropped early.
#[derive(Debug)]
pub(crate) struct Wait {
    op: Option<Arc<Op>>,
    ctx: Option<Arc<RequestCtx>>,
}

impl Future for Wait {
    type Output = Done;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        let this = self.get_mut();
        let op = this.op.as_ref().expect("Wait polled after completion");
        let mut g = op.lock();
        match g.result {
            Some(result) => {
                let res = g.res.take().expect("completed op keeps its resources");
                let latency_ns = g
                    .completed
                    .map_or(0, |c| c.duration_since(g.submitted).as_nanos() as u64);
                drop(g);
                this.op = None;
                Poll::Ready(Done {
                    result,
                    res,
                    latency_ns,
                    ctx: this.ctx.take(),
                })
            }
            None => {
                match &mut g.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            abandon(op);
        }
    }
}

/// Step 4 of the protocol: marks the op abandoned and sends a cancel to the ring that owns it.
fn abandon(op: Arc<Op>) {
    let owner = {
        let mut g = op.lock();
        if g.result.is_some() {
            return;
        }
        g.abandoned = true;
        g.waker = None;
        g.owner.take()
    };
    if let Some((inbox, user_data)) = owner {
        inbox.cancel(user_data);
    }
}

/// The waiter of a multishot op (module docs): polled any number of times; dropping it cancels
/// the op (protocol step 4), whose resources live until the kernel's last completion.
#[derive(Debug)]
pub(crate) struct Multi {
    op: Option<Arc<Op>>,
}

impl Multi {
    /// Takes what `take` finds in the op's resources; else `Err(result)` once the op has ended;
    /// else registers the waker.
    pub(crate) fn poll_take<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut Res) -> Option<T>,
    ) -> Poll<Result<T, i32>> {
        let op = self
            .op
            .as_ref()
            .expect("a Multi holds its op until dropped");
        let mut g = op.lock();
        if let Some(v) = g.res.as_mut().and_then(take) {
            return Poll::Ready(Ok(v));
        }
        if let Some(r) = g.result {
            return Poll::Ready(Err(r));
        }
        match &mut g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Multi {
    /// Whether the op has ended (its last completion arrived) with nothing left in its
    /// resources that `left` recognises.
    pub(crate) fn ended_empty(&self, left: impl FnOnce(&Res) -> bool) -> bool {
        let op = self
            .op
            .as_ref()
            .expect("a Multi holds its op until dropped");
        let g = op.lock();
        g.result.is_some() && !g.res.as_ref().is_some_and(left)
    }
}

impl Drop for Multi {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            abandon(op);
        }
    }
}

/// Starts a socket operation (op.rs protocol, step 1, without a class permit: see the module
/// docs): counts it in `live`, hands it to `submit`, returns the future of its completion, which
/// charges nothing by itself (the `net` layer charges the current request).
pub(crate) fn start(live: &Arc<AtomicUsize>, submit: impl FnOnce(Arc<Op>), res: Res) -> Wait {
    live.fetch_add(1, Ordering::Relaxed);
    let op = Op::new(res, None, Arc::clone(live));
    submit(Arc::clone(&op));
    Wait {
        op: Some(op),
        ctx: None,
    }
}

/// Starts a multishot socket operation ([`start`]'s rules); its completions are collected with
/// [`Multi::poll_take`].
pub(crate) fn start_multi(
    live: &Arc<AtomicUsize>,
    submit: impl FnOnce(Arc<Op>),
    res: Res,
) -> Multi {
    live.fetch_add(1, Ordering::Relaxed);
    let op = Op::new(res, None, Arc::clone(live));
    submit(Arc::clone(&op));
    Multi { op: Some(op) }
}

/// Runs one operation (op.rs protocol, step 1): waits for a slot of `bytes` in `classes`, counts
/// the op in `live` (until the op is freed), hands it to `submit` (the backend), waits for the
/// completion. The returned [`Done`] carries the resources back.
pub(crate) async fn run(
    classes: &Arc<IoClasses>,
    live: &Arc<AtomicUsize>,
    submit: impl FnOnce(Arc<Op>),
    res: Res,
    bytes: u64,
) -> Done {
    let permit = classes.acquire(bytes).await;
    let ctx = permit.ctx().cloned();
    live.fetch_add(1, Ordering::Relaxed);
    let op = Op::new(res, Some(permit), Arc::clone(live));
    submit(Arc::clone(&op));
    Wait { op: Some(op), ctx }.await
}

/// Like [`run`], resubmitting on `EINTR` and `EAGAIN` (the operation is simply tried again).
pub(crate) async fn run_retrying(
    classes: &Arc<IoClasses>,
    live: &Arc<AtomicUsize>,
    submit: impl Fn(Arc<Op>),
    mut res: Res,
    bytes: u64,
) -> Done {
    loop {
        let done = run(classes, live, &submit, res, bytes).await;
        if done.result == -libc::EINTR || done.result == -libc::EAGAIN {
            res = done.res;
            continue;
        }
        return done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    use pagegen_core::ClassId;

    use crate::classes::IoClasses;

    /// The waker of an operation queued behind `op` for the class's only slot: when the slot is
    /// handed over, records whether `op`'s result was already visible to its future.
    struct Behind {
        op: Arc<Op>,
        published_at_handover: Mutex<Vec<bool>>,
    }

    impl Wake for Behind {
        fn wake(self: Arc<Self>) {
            let published = self.op.lock().result.is_some();
            self.published_at_handover.lock().unwrap().push(published);
        }
    }

    fn op_holding(permit: Permit) -> Arc<Op> {
        let res = Res::Fsync {
            file: Arc::new(File::open("/dev/null").unwrap()),
        };
        Op::new(res, Some(permit), Arc::new(AtomicUsize::new(1)))
    }

    #[test]
    fn completion_frees_the_slot_before_the_future_can_see_the_result() {
        let classes = IoClasses::new(64);
        classes.set_depth(ClassId::DEFAULT, 1).unwrap();
        let noop = Waker::noop();
        let mut first = classes.acquire(0);
        let Poll::Ready(permit) = Pin::new(&mut first).poll(&mut Context::from_waker(noop)) else {
            panic!("an idle class admits at once");
        };
        let op = op_holding(permit);
        let mut wait = Wait {
            op: Some(Arc::clone(&op)),
            ctx: None,
        };
        assert!(Pin::new(&mut wait)
            .poll(&mut Context::from_waker(noop))
            .is_pending());

        let behind = Arc::new(Behind {
            op: Arc::clone(&op),
            published_at_handover: Mutex::new(Vec::new()),
        });
        let behind_waker = Waker::from(Arc::clone(&behind));
        let mut second = classes.acquire(0);
        assert!(Pin::new(&mut second)
            .poll(&mut Context::from_waker(&behind_waker))
            .is_pending());

        let waker = op.complete(0).expect("the waiting future's waker");
        assert_eq!(
            *behind.published_at_handover.lock().unwrap(),
            [false],
            "the slot is handed over before the result is published (release, then publish)"
        );
        // The future may collect the result before anyone wakes it: its slot is already free.
        let Poll::Ready(done) = Pin::new(&mut wait).poll(&mut Context::from_waker(noop)) else {
            panic!("a completed op is ready");
        };
        assert_eq!(done.result, 0);
        let Poll::Ready(next) = Pin::new(&mut second).poll(&mut Context::from_waker(noop)) else {
            panic!("the freed slot went to the waiter");
        };
        assert_eq!(
            classes.in_flight(ClassId::DEFAULT),
            1,
            "only the waiter's op"
        );
        drop(next);
        assert_eq!(classes.in_flight(ClassId::DEFAULT), 0);
        waker.wake();
    }
}
