//! TCP sockets on pagegen's own workers: [`TcpListener`] and [`TcpStream`].
//!
//! Two paths ([`SocketPath`](crate::SocketPath), per runtime). On the **ring**
//! (`PAGEGEN_IO_SOCKETS=ring`, uring backend) a socket's operations run on the ring of the worker
//! that polls them (the reaper ring for threads without one), under the op.rs protocol for sockets: no class
//! permit, a buffer the operation owns until the kernel's completion. The listener keeps one
//! *multishot* accept in flight; a stream receives into a buffer of its own (up to
//! [`MAX_RECV`] bytes per operation) and hands the bytes out on the next reads. A write first
//! offers the bytes to the socket with one non-blocking `send` (a response that fits the send
//! buffer is then the kernel's before `poll_write` returns, and a flush has nothing to wait for:
//! hyper, which sees a connection as busy until its flush returns, needs that to tell a clean
//! close from a truncated one); what the socket cannot take is copied (up to [`MAX_SEND`] bytes)
//! into an owned buffer and sent by the ring, `poll_write` returning at once;
//! [`poll_flush`](tokio::io::AsyncWrite::poll_flush) waits for that send, and its error surfaces
//! on the next write or flush, as with a `BufWriter`. Dropping a read or accept future leaves the
//! operation in flight for the next call (nothing received is lost); dropping the stream or the
//! listener cancels it, and its buffer lives until the kernel's completion.
//!
//! On **readiness** — the default, and the only path on the blocking backend
//! (`PAGEGEN_IO=blocking`, or a failed io_uring probe) — sockets are
//! non-blocking and wait for readiness in the polling worker's own readiness set (ready.rs),
//! which its driver checks between tasks and sleeps in when idle (on io_uring the worker's ring
//! watches the set with one poll entry, so one park covers files on the ring and sockets); no
//! other thread is involved on a worker. Threads without a pagegen worker use the runtime's
//! readiness thread. Reads and writes are then plain system calls made by whichever worker polls
//! the task, so a ready connection is never tied to one worker's ring: on cores shared with other
//! work this path has the lower tail, which is why it is the default (benches/RESULTS.md,
//! network entries).
//!
//! Both implement tokio's [`AsyncRead`](tokio::io::AsyncRead) / [`AsyncWrite`](tokio::io::AsyncWrite)
//! (so hyper runs on them through `hyper_util::rt::TokioIo`), convert from tokio's and std's
//! sockets with `TryFrom`, and charge every completed receive and send (bytes, latency) to the
//! request current on the polling thread ([`NetAccount`](pagegen_core::NetAccount)'s socket
//! counters) — or, for a server connection given a [`ConnAccount`](pagegen_core::ConnAccount)
//! ([`TcpStream::set_account`]), to the request that connection is serving, whichever task
//! polls it; such a connection also takes that request's socket priority before it sends.
//! [`TcpStream::set_priority`] and [`TcpStream::set_tos`] mark a connection's packets for the
//! network's queues.

mod listener;
mod stream;

pub use listener::TcpListener;
pub use stream::{TcpStream, MAX_RECV, MAX_SEND};
