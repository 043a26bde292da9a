//! [`TcpStream`]: receives and sends on the worker's ring (owned buffers), or non-blocking calls
//! with readiness on the blocking backend.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use pagegen_core::ConnAccount;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::backend::SocketPath;
use crate::file::os_err;
use crate::handle::Io;
use crate::op::{self, Done, Res, Wait};
use crate::profile::{record_recv, record_send};
use crate::ready::{Dir, Interest};
use crate::sys;

/// Bytes one receive asks for at most (and at least 4 KiB): 64 KiB, so a request body arrives in
/// few operations while an idle keep-alive connection's pending receive holds little memory (a
/// guess, not a measurement; 1,024 connections hold 64 MiB at most).
pub const MAX_RECV: usize = 64 * 1024;

/// A receive asks for at least this much even when the caller's buffer is smaller (the rest waits
/// for the next read): 4 KiB, one page, plucked from thin air as the smallest worth a system call.
const MIN_RECV: usize = 4096;

/// Bytes one write copies into a send at most: 64 KiB, as for receives; a larger write is
/// accepted in pieces, each sent before the next is taken.
pub const MAX_SEND: usize = 64 * 1024;

/// The ring side of a stream (see the [module docs](super)).
#[derive(Debug, Default)]
struct Ring {
    /// Received bytes not yet handed out, from `rpos`.
    rbuf: Vec<u8>,
    rpos: usize,
    recv: Option<Wait>,
    eof: bool,
    send: Option<Wait>,
    /// The last send's buffer, reused by the next write.
    spare: Vec<u8>,
}

/// The readiness side: the socket's interest and when the current wait began.
#[derive(Debug, Default)]
struct Ready {
    interest: Arc<Interest>,
    read_since: Option<Instant>,
    write_since: Option<Instant>,
    /// The last write was not taken whole (short, or waiting for room): the writer has more to
    /// send, so a read meanwhile does not mean a response has left.
    unsent: bool,
}

#[derive(Debug)]
enum Kind {
    Ring(Ring),
    Ready(Ready),
}

/// The socket and its runtime: what both sides need besides their own state.
#[derive(Debug)]
struct Sock {
    sock: Arc<std::net::TcpStream>,
    io: Io,
    /// Where its traffic is charged when a server splits it per request
    /// ([`TcpStream::set_account`]); else to the request current on the polling thread.
    account: Option<Arc<ConnAccount>>,
    /// The `SO_PRIORITY` last applied from the account (`u8::MAX`: none).
    applied_priority: u8,
}

impl Sock {
    fn start(&self, res: Res) -> Wait {
        op::start(self.io.live(), |op| self.io.submit(op), res)
    }

    fn charge_recv(&self, bytes: u64, latency_ns: u64) {
        match &self.account {
            Some(a) => a.record_recv(bytes, latency_ns),
            None => record_recv(bytes, latency_ns),
        }
    }

    fn charge_send(&self, bytes: u64, latency_ns: u64) {
        match &self.account {
            Some(a) => a.record_send(bytes, latency_ns),
            None => record_send(bytes, latency_ns),
        }
    }

    /// Before a send: the priority the account's current request asks for, if it changed.
    fn apply_priority(&mut self) {
        let Some(p) = self.account.as_ref().and_then(|a| a.priority()) else {
            return;
        };
        if p != self.applied_priority {
            self.applied_priority = p;
            // Best effort: a refused priority leaves the socket's as it was.
            let _ = sys::set_int_opt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                i32::from(p.min(6)),
            );
        }
    }
}

/// A TCP connection whose I/O runs on pagegen's backend (see the [module docs](super)).
pub struct TcpStream {
    s: Sock,
    kind: Kind,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("peer", &self.s.sock.peer_addr().ok())
            .field("path", &self.s.io.socket_path())
            .finish()
    }
}

fn retry(result: i32) -> bool {
    result == -libc::EINTR || result == -libc::EAGAIN
}

impl TcpStream {
    /// Wraps a connected std stream for `io`'s socket path (blocking mode on a ring, non-blocking
    /// on readiness).
    pub fn from_std_on(io: &Io, sock: std::net::TcpStream) -> io::Result<TcpStream> {
        sock.set_nonblocking(io.socket_path() == SocketPath::Readiness)?;
        Ok(TcpStream::from_prepared(io, sock))
    }

    /// Wraps a stream already in the mode `io`'s backend needs (an accepted one).
    pub(crate) fn from_prepared(io: &Io, sock: std::net::TcpStream) -> TcpStream {
        let kind = match io.socket_path() {
            SocketPath::Ring => Kind::Ring(Ring::default()),
            SocketPath::Readiness => Kind::Ready(Ready::default()),
        };
        TcpStream {
            s: Sock {
                sock: Arc::new(sock),
                io: io.clone(),
                account: None,
                applied_priority: u8::MAX,
            },
            kind,
        }
    }

    /// Charges this connection's traffic to `account` (which a server tells which request the
    /// connection serves) instead of the request current on the polling thread; the socket
    /// takes the `SO_PRIORITY` of the account's current request before each send, and each read
    /// announces to the account that the previous response has left (see
    /// [`ConnAccount`]'s protocol).
    pub fn set_account(&mut self, account: Arc<ConnAccount>) {
        self.s.account = Some(account);
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.sock.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.sock.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.s.sock.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.s.sock.nodelay()
    }

    /// Sets the socket priority (`SO_PRIORITY`), which orders this connection's packets in the
    /// host's queueing disciplines. 0-6 need no privilege; above 6 is refused with
    /// `InvalidInput` (the kernel would require `CAP_NET_ADMIN`).
    pub fn set_priority(&self, priority: u8) -> io::Result<()> {
        if priority > 6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket priority above 6 needs CAP_NET_ADMIN; use 0-6",
            ));
        }
        sys::set_int_opt(
            self.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            priority as i32,
        )
    }

    /// The socket priority (`SO_PRIORITY`).
    pub fn priority(&self) -> io::Result<u8> {
        sys::int_opt(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY).map(|p| p as u8)
    }

    fn tos_opt(&self) -> io::Result<(i32, i32)> {
        Ok(match self.local_addr()? {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_TOS),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
        })
    }

    /// Sets the type-of-service byte of outgoing packets (`IP_TOS`, or `IPV6_TCLASS` on IPv6):
    /// DSCP in the upper six bits, ECN in the lower two.
    pub fn set_tos(&self, tos: u8) -> io::Result<()> {
        let (level, name) = self.tos_opt()?;
        sys::set_int_opt(self.as_raw_fd(), level, name, tos as i32)
    }

    /// The type-of-service byte.
    pub fn tos(&self) -> io::Result<u8> {
        let (level, name) = self.tos_opt()?;
        sys::int_opt(self.as_raw_fd(), level, name).map(|t| t as u8)
    }
}

impl Ring {
    /// Hands out buffered bytes, else drives (or starts) a receive (op.rs protocol: the buffer is
    /// the op's until its completion).
    fn poll_read(
        &mut self,
        stream: &Sock,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.rpos < self.rbuf.len() {
                let n = (self.rbuf.len() - self.rpos).min(buf.remaining());
                buf.put_slice(&self.rbuf[self.rpos..self.rpos + n]);
                self.rpos += n;
                return Poll::Ready(Ok(()));
            }
            if self.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let Some(wait) = self.recv.as_mut() else {
                let mut rbuf = std::mem::take(&mut self.rbuf);
                rbuf.clear();
                let want = buf.remaining().clamp(MIN_RECV, MAX_RECV);
                rbuf.reserve(want);
                self.rpos = 0;
                self.recv = Some(stream.start(Res::Recv {
                    sock: Arc::clone(&stream.sock),
                    buf: rbuf,
                    len: want,
                }));
                continue;
            };
            let Poll::Ready(done) = Pin::new(wait).poll(cx) else {
                return Poll::Pending;
            };
            self.recv = None;
            let Done {
                result,
                res,
                latency_ns,
                ..
            } = done;
            if let Res::Recv { buf: rbuf, .. } = res {
                self.rbuf = rbuf;
            }
            if retry(result) {
                continue;
            }
            if result < 0 {
                self.rbuf.clear();
                return Poll::Ready(Err(os_err(result)));
            }
            stream.charge_recv(result as u64, latency_ns);
            self.eof = result == 0;
        }
    }

    /// Drives the send in flight to its end (resubmitting what a partial send left); an error
    /// ends it and is returned.
    fn poll_sent(&mut self, stream: &Sock, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(wait) = self.send.as_mut() {
            let Poll::Ready(done) = Pin::new(wait).poll(cx) else {
                return Poll::Pending;
            };
            self.send = None;
            let Done {
                result,
                res,
                latency_ns,
                ..
            } = done;
            let Res::Send { sock, buf, from } = res else {
                unreachable!("a send's op holds a send")
            };
            if retry(result) {
                self.send = Some(stream.start(Res::Send { sock, buf, from }));
                continue;
            }
            if result < 0 {
                self.spare = buf;
                return Poll::Ready(Err(os_err(result)));
            }
            stream.charge_send(result as u64, latency_ns);
            let from = from + result as usize;
            if from < buf.len() {
                self.send = Some(stream.start(Res::Send { sock, buf, from }));
            } else {
                self.spare = buf;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Once the last send is done, offers `bufs` to the socket at once (one `sendmsg`). What it
    /// takes is the kernel's before this returns, as with a readiness write, so a flush has
    /// nothing to wait for; only what it cannot take (a full send buffer) goes to the ring as one
    /// owned send of up to [`MAX_SEND`] bytes, copied from the buffers in order.
    fn poll_write(
        &mut self,
        stream: &Sock,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.poll_sent(stream, cx)) {
            return Poll::Ready(Err(e));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let since = Instant::now();
        let r = sys::send_vectored(stream.sock.as_raw_fd(), bufs, libc::MSG_DONTWAIT);
        if r > 0 {
            stream.charge_send(r as u64, since.elapsed().as_nanos() as u64);
            return Poll::Ready(Ok(r as usize));
        }
        if r < 0 && r != -libc::EAGAIN {
            return Poll::Ready(Err(os_err(r)));
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        for b in bufs {
            let room = MAX_SEND - buf.len();
            buf.extend_from_slice(&b[..b.len().min(room)]);
            if buf.len() == MAX_SEND {
                break;
            }
        }
        let n = buf.len();
        self.send = Some(stream.start(Res::Send {
            sock: Arc::clone(&stream.sock),
            buf,
            from: 0,
        }));
        Poll::Ready(Ok(n))
    }
}

impl Ready {
    fn poll_read(
        &mut self,
        stream: &Sock,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let since = *self.read_since.get_or_insert_with(Instant::now);
        let fd = stream.sock.as_raw_fd();
        let io = &stream.io;
        let room = buf.remaining();
        let r = self.interest.poll_io(
            cx,
            Dir::Read,
            fd,
            || io.ready_set(),
            || sys::recv_into(fd, buf),
            |&n| n > 0 && n < room,
        );
        let Poll::Ready(r) = r else {
            return Poll::Pending;
        };
        self.read_since = None;
        let n = r?;
        stream.charge_recv(n as u64, since.elapsed().as_nanos() as u64);
        Poll::Ready(Ok(()))
    }

    /// Sends what the socket takes of `bufs` (one `sendmsg`), waiting for room if it takes
    /// nothing.
    fn poll_write(
        &mut self,
        stream: &Sock,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let since = *self.write_since.get_or_insert_with(Instant::now);
        let fd = stream.sock.as_raw_fd();
        let io = &stream.io;
        // Less sent than offered: the send buffer is full (drained, ready.rs protocol step 1a).
        let offered: usize = sys::sendable(bufs).iter().map(|b| b.len()).sum();
        let send = || {
            let r = sys::send_vectored(fd, bufs, 0);
            if r < 0 {
                Err(os_err(r))
            } else {
                Ok(r as usize)
            }
        };
        let Poll::Ready(r) = self.interest.poll_io(
            cx,
            Dir::Write,
            fd,
            || io.ready_set(),
            send,
            |&n| n < offered,
        ) else {
            self.unsent = true;
            return Poll::Pending;
        };
        self.write_since = None;
        let n = r?;
        self.unsent = n < len;
        stream.charge_send(n as u64, since.elapsed().as_nanos() as u64);
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let TcpStream { s, kind } = self.get_mut();
        if let Some(a) = &s.account {
            // Reading again with nothing left to send: the last response has left.
            let sending = match kind {
                Kind::Ring(r) => r.send.is_some(),
                Kind::Ready(r) => r.unsent,
            };
            if !sending {
                a.response_sent();
            }
        }
        match kind {
            Kind::Ring(r) => r.poll_read(s, cx, buf),
            Kind::Ready(r) => r.poll_read(s, cx, buf),
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// One `sendmsg` for all of `bufs` (hyper then queues a response's head and body instead of
    /// copying the body behind the head).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let TcpStream { s, kind } = self.get_mut();
        if s.account.is_some() {
            s.apply_priority();
        }
        match kind {
            Kind::Ring(r) => r.poll_write(s, cx, bufs),
            Kind::Ready(r) => r.poll_write(s, cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Ring: waits until the kernel has taken every byte written so far. Readiness: nothing to do
    /// (a write is a system call).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let TcpStream { s, kind } = self.get_mut();
        match kind {
            Kind::Ring(r) => r.poll_sent(s, cx),
            Kind::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    /// Flushes, then shuts the write half down (the peer reads end of stream).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        match self.s.sock.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Kind::Ready(r) = &self.kind {
            r.interest.deregister(self.s.sock.as_raw_fd());
        }
        // A ring's operations are cancelled by their `Wait`s' drops; their `Arc`s of the socket
        // keep the fd open until the kernel's completions.
    }
}

impl TryFrom<std::net::TcpStream> for TcpStream {
    type Error = io::Error;
    /// Wraps it for the current runtime ([`Io::current`]).
    fn try_from(sock: std::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::from_std_on(&Io::current(), sock)
    }
}

impl TryFrom<tokio::net::TcpStream> for TcpStream {
    type Error = io::Error;
    /// Takes it from tokio's reactor and wraps it for the current runtime ([`Io::current`]).
    fn try_from(sock: tokio::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::try_from(sock.into_std()?)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.s.sock.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.s.sock.as_fd()
    }
}
