//! [`TcpListener`]: a multishot accept on the worker's ring, or readiness on the blocking backend.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::backend::SocketPath;
use crate::file::os_err;
use crate::handle::Io;
use crate::op::{self, Multi, Res};
use crate::ready::{Dir, Interest};
use crate::sys;

use super::TcpStream;

enum Kind {
    /// The multishot accept in flight, started on the first accept (op.rs, multishot operations).
    Ring(Mutex<Option<Multi>>),
    Ready(Arc<Interest>),
}

/// A TCP listener whose accepts run on pagegen's backend (see the [module docs](super)).
///
/// One task accepts at a time: when several poll the same listener concurrently, only the most
/// recent one is woken (as with tokio's `poll_accept`).
pub struct TcpListener {
    sock: Arc<std::net::TcpListener>,
    io: Io,
    kind: Kind,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.sock.local_addr().ok())
            .field("path", &self.io.socket_path())
            .finish()
    }
}

impl TcpListener {
    /// Binds a listener on the current runtime ([`Io::current`]). The bind itself is a plain
    /// (immediate) system call.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        TcpListener::from_std_on(&Io::current(), std::net::TcpListener::bind(addr)?)
    }

    /// Wraps a bound std listener for `io`'s socket path (blocking mode on a ring, non-blocking
    /// on readiness).
    pub fn from_std_on(io: &Io, sock: std::net::TcpListener) -> io::Result<TcpListener> {
        let kind = match io.socket_path() {
            SocketPath::Ring => {
                sock.set_nonblocking(false)?;
                Kind::Ring(Mutex::new(None))
            }
            SocketPath::Readiness => {
                sock.set_nonblocking(true)?;
                Kind::Ready(Arc::default())
            }
        };
        Ok(TcpListener {
            sock: Arc::new(sock),
            io: io.clone(),
            kind,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Accepts a connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection. Errors (`EMFILE`, `ENFILE`, `ECONNABORTED`...) concern one
    /// accept: the listener stays usable and the next call tries again.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            let fd = match &self.kind {
                Kind::Ring(multi) => match self.poll_ring(multi, cx) {
                    Poll::Ready(Ok(fd)) => fd,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
                Kind::Ready(interest) => {
                    let raw = self.sock.as_raw_fd();
                    let io = &self.io;
                    let accept = || sys::accept(raw, libc::SOCK_NONBLOCK).map_err(os_err);
                    // An accepted connection says nothing of the backlog left: never drained.
                    let drains = |_: &OwnedFd| false;
                    match interest.poll_io(cx, Dir::Read, raw, || io.ready_set(), accept, drains) {
                        Poll::Ready(Ok(fd)) => fd,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            };
            let sock = std::net::TcpStream::from(fd);
            // A peer that reset before we asked is gone: nothing to serve, take the next one.
            let Ok(peer) = sock.peer_addr() else { continue };
            return Poll::Ready(Ok((TcpStream::from_prepared(&self.io, sock), peer)));
        }
    }

    fn poll_ring(
        &self,
        multi: &Mutex<Option<Multi>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<OwnedFd>> {
        let mut g = multi.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let m = g.get_or_insert_with(|| {
                let res = Res::Accept {
                    sock: Arc::clone(&self.sock),
                    ready: VecDeque::new(),
                };
                op::start_multi(self.io.live(), |op| self.io.submit(op), res)
            });
            let taken = m.poll_take(cx, |r| match r {
                Res::Accept { ready, .. } => ready.pop_front(),
                _ => None,
            });
            return match taken {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(Ok(fd))) => Poll::Ready(Ok(fd)),
                Poll::Ready(Ok(Err(errno))) => {
                    // The error that ended the op (the usual case: an accept error ends a
                    // multishot) is delivered here once; the next accept starts another op,
                    // which also reads the descriptor limit afresh (io_uring reads it when
                    // the accept is submitted).
                    let queued =
                        |r: &Res| matches!(r, Res::Accept { ready, .. } if !ready.is_empty());
                    if m.ended_empty(queued) {
                        *g = None;
                    }
                    Poll::Ready(Err(os_err(errno)))
                }
                // The multishot ended with everything collected: start the next one.
                Poll::Ready(Err(result)) if result >= 0 => {
                    *g = None;
                    continue;
                }
                // Ended without a queued result (a ring shutting down): say why, once.
                Poll::Ready(Err(errno)) => {
                    *g = None;
                    Poll::Ready(Err(os_err(errno)))
                }
            };
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Ready(interest) => interest.deregister(self.sock.as_raw_fd()),
            // A ring's accept is cancelled by the `Multi`'s drop, and its `Arc` of the socket
            // keeps the fd open until the kernel's last completion — which a busy or idle ring may
            // reap only later. Stop listening now, so a dropped listener refuses connections at
            // once, as closing its descriptor would.
            Kind::Ring(_) => {
                let _ = sys::stop_listening(self.sock.as_raw_fd());
            }
        }
    }
}

impl TryFrom<std::net::TcpListener> for TcpListener {
    type Error = io::Error;
    /// Wraps it for the current runtime ([`Io::current`]).
    fn try_from(sock: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std_on(&Io::current(), sock)
    }
}

impl TryFrom<tokio::net::TcpListener> for TcpListener {
    type Error = io::Error;
    /// Takes it from tokio's reactor and wraps it for the current runtime ([`Io::current`]).
    fn try_from(sock: tokio::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::try_from(sock.into_std()?)
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
