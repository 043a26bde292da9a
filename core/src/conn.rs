//! [`ConnAccount`]: one server connection's socket traffic, split among the requests it carries.
//!
//! A server's connection task (hyper's, for instance) reads and writes the socket in its own task,
//! not in the task of the request being served, so "the request current on the polling thread" is
//! the wrong owner for that traffic. A connection given a `ConnAccount` charges its socket
//! operations here instead, and the request loop says which request the connection is serving:
//!
//! - [`begin`](ConnAccount::begin): a request was admitted on this connection. What the socket
//!   received while no request was current — this request's head, mostly — is charged to it, and
//!   later operations go to it.
//! - [`end`](ConnAccount::end): its handler is done and its response is about to leave. The
//!   response's sends are still the request's, so the request stays current; the callback given
//!   runs with the request's socket usage once the response has left, which the connection
//!   announces with [`response_sent`](ConnAccount::response_sent) when it next reads (HTTP/1:
//!   after a response, a server reads the next request) or when it closes (the account's drop).
//! - A request that began while another was still being served means the connection carries
//!   concurrent requests (HTTP/2): from then on its traffic is not split (nothing is charged to
//!   any request: a share would be a guess), and `end`'s callback runs at once.
//!
//! Traffic of a request refused before it ran can be dropped ([`discard_pending`](ConnAccount::discard_pending))
//! so it is not charged to the next one. A response streamed over several polls of the connection
//! may be cut short by a read in between (the connection checks for a closed peer): what it sends
//! after that is charged to the next request.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::account::NetAccount;
use crate::ctx::RequestCtx;
use crate::usage::SocketUsage;

/// What runs once a finished request's response has left: it receives the request's socket usage.
pub type OnSent = Box<dyn FnOnce(SocketUsage) + Send>;

/// Priority value meaning "not set" (valid ones are 0–6).
const NO_PRIORITY: u8 = u8::MAX;

#[derive(Default)]
struct State {
    /// The request being served (or whose response is leaving).
    current: Option<Arc<RequestCtx>>,
    /// Set by `end`: the current request's handler is done, this runs when its response has left.
    on_sent: Option<OnSent>,
    /// Traffic seen with no request current, for the next one (only its socket counters).
    pending: NetAccount,
    /// Concurrent requests were seen: traffic is no longer split.
    multiplexed: bool,
}

/// One connection's traffic, charged to the request it is serving (see the [module docs](self)).
pub struct ConnAccount {
    state: Mutex<State>,
    /// Whether `on_sent` is set: the connection's reads check this before taking the lock.
    finishing: AtomicBool,
    /// The `SO_PRIORITY` the connection's current request asks for (`NO_PRIORITY`: none yet).
    priority: AtomicU8,
}

impl fmt::Debug for ConnAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("ConnAccount")
            .field("current", &s.current.as_ref().map(|c| c.id()))
            .field("finishing", &s.on_sent.is_some())
            .field("pending", &s.pending.socket())
            .field("multiplexed", &s.multiplexed)
            .finish()
    }
}

impl Default for ConnAccount {
    fn default() -> Self {
        ConnAccount::new()
    }
}

impl ConnAccount {
    /// An account with no request current.
    pub fn new() -> Self {
        ConnAccount {
            state: Mutex::new(State::default()),
            finishing: AtomicBool::new(false),
            priority: AtomicU8::new(NO_PRIORITY),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `charge` on the account the connection's traffic goes to now: the current request's,
    /// else the pending one; nothing once the traffic is not split.
    fn charge(&self, charge: impl FnOnce(&NetAccount)) {
        let s = self.lock();
        if !s.multiplexed {
            charge(s.current.as_ref().map_or(&s.pending, |ctx| &ctx.net));
        }
    }

    /// Records one completed receive of `bytes` (0: end of stream) that waited `latency_ns`.
    pub fn record_recv(&self, bytes: u64, latency_ns: u64) {
        self.charge(|a| a.record_recv(bytes, latency_ns));
    }

    /// Records one completed send of `bytes` that took `latency_ns`.
    pub fn record_send(&self, bytes: u64, latency_ns: u64) {
        self.charge(|a| a.record_send(bytes, latency_ns));
    }

    /// `ctx` was admitted on this connection: it gets the traffic seen since the last request and
    /// everything until its response has left. A request still finishing is finished first.
    pub fn begin(&self, ctx: &Arc<RequestCtx>) {
        self.priority
            .store(ctx.grant().get().net_priority, Ordering::Relaxed);
        let mut s = self.lock();
        let done = if s.on_sent.is_some() {
            self.take_finished(&mut s)
        } else {
            None
        };
        if s.multiplexed {
            // Already not split.
        } else if s.current.is_some() {
            // Another request is being served: concurrent requests (HTTP/2).
            s.multiplexed = true;
            s.current = None;
            s.pending = NetAccount::default();
        } else {
            ctx.net.add_socket(&std::mem::take(&mut s.pending).socket());
            s.current = Some(Arc::clone(ctx));
        }
        drop(s);
        if let Some((f, u)) = done {
            f(u);
        }
    }

    /// `ctx`'s handler is done: `on_sent` runs with its socket usage once its response has left
    /// ([`response_sent`](Self::response_sent), or the account's drop) — at once when `ctx` is
    /// not the connection's current request (concurrent requests, or no `begin`).
    pub fn end(&self, ctx: &Arc<RequestCtx>, on_sent: OnSent) {
        let mut s = self.lock();
        let current = s.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx));
        if !current {
            let multiplexed = s.multiplexed;
            drop(s);
            on_sent(if multiplexed {
                SocketUsage::default()
            } else {
                ctx.net.socket()
            });
            return;
        }
        s.on_sent = Some(on_sent);
        self.finishing.store(true, Ordering::Release);
    }

    /// The connection went back to reading after a response (or is closing): the finished
    /// request's callback runs, and nothing is current until the next `begin`. Cheap when no
    /// request is finishing (one atomic load).
    pub fn response_sent(&self) {
        if !self.finishing.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        let done = self.take_finished(&mut s);
        drop(s);
        if let Some((f, u)) = done {
            f(u);
        }
    }

    /// Drops the traffic seen since the last request (a request refused before it ran).
    pub fn discard_pending(&self) {
        self.lock().pending = NetAccount::default();
    }

    /// Whether concurrent requests were seen on this connection (its traffic is not split).
    pub fn is_multiplexed(&self) -> bool {
        self.lock().multiplexed
    }

    /// The `SO_PRIORITY` asked for by the request most recently begun, if any (the connection
    /// applies it to its socket before its next send).
    pub fn priority(&self) -> Option<u8> {
        match self.priority.load(Ordering::Relaxed) {
            NO_PRIORITY => None,
            p => Some(p),
        }
    }

    /// Takes the finishing request's callback and usage, leaving nothing current.
    fn take_finished(&self, s: &mut State) -> Option<(OnSent, SocketUsage)> {
        self.finishing.store(false, Ordering::Release);
        let f = s.on_sent.take()?;
        let ctx = s.current.take()?;
        Some((f, ctx.net.socket()))
    }
}

impl Drop for ConnAccount {
    /// A closing connection's finishing request is finished.
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = s.on_sent.take() {
            let u = s
                .current
                .take()
                .map_or_else(SocketUsage::default, |c| c.net.socket());
            f(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::ClassId;
    use crate::ctx::RequestId;
    use crate::grant::Grant;
    use std::sync::mpsc;

    fn ctx(id: u64, prio: u8) -> Arc<RequestCtx> {
        let g = Grant {
            net_priority: prio,
            ..Grant::unlimited(ClassId::from_raw(3))
        };
        RequestCtx::new(RequestId(id), g, 0)
    }

    fn sink() -> (OnSent, mpsc::Receiver<SocketUsage>) {
        let (tx, rx) = mpsc::channel();
        (Box::new(move |u| tx.send(u).unwrap()), rx)
    }

    #[test]
    fn a_request_gets_its_head_its_body_and_its_response() {
        let conn = ConnAccount::new();
        conn.record_recv(300, 10); // the head, before the request exists
        let a = ctx(1, 4);
        conn.begin(&a);
        assert_eq!(conn.priority(), Some(4));
        conn.record_recv(1000, 20); // its body
        let (f, rx) = sink();
        conn.end(&a, f);
        assert!(rx.try_recv().is_err(), "the response has not left yet");
        conn.record_send(5000, 30); // its response
        conn.response_sent();
        let u = rx.try_recv().unwrap();
        assert_eq!((u.recv_ops, u.bytes_in, u.recv_ns), (2, 1300, 30));
        assert_eq!((u.send_ops, u.bytes_out, u.send_ns), (1, 5000, 30));
        // The next request starts from nothing but its own head.
        conn.record_recv(200, 5);
        let b = ctx(2, 0);
        conn.begin(&b);
        let (f, rx) = sink();
        conn.end(&b, f);
        drop(conn);
        let u = rx.try_recv().unwrap();
        assert_eq!((u.recv_ops, u.bytes_in, u.send_ops), (1, 200, 0));
    }

    #[test]
    fn a_pipelined_request_finishes_the_previous_one() {
        let conn = ConnAccount::new();
        let a = ctx(1, 0);
        conn.begin(&a);
        let (f, rx) = sink();
        conn.end(&a, f);
        conn.record_send(10, 1);
        let b = ctx(2, 0);
        conn.begin(&b);
        assert_eq!(rx.try_recv().unwrap().bytes_out, 10);
        conn.record_send(20, 1);
        assert_eq!(a.net.socket().bytes_out, 10);
        assert_eq!(b.net.socket().bytes_out, 20);
    }

    #[test]
    fn concurrent_requests_stop_the_split() {
        let conn = ConnAccount::new();
        let a = ctx(1, 0);
        let b = ctx(2, 0);
        conn.begin(&a);
        conn.record_recv(100, 1);
        conn.begin(&b); // while `a` is still served: HTTP/2
        assert!(conn.is_multiplexed());
        conn.record_recv(100, 1);
        conn.record_send(100, 1);
        let (f, rx) = sink();
        conn.end(&b, f);
        assert_eq!(rx.try_recv().unwrap(), SocketUsage::default());
        assert_eq!(a.net.socket().bytes_in, 100, "only what came before");
    }

    #[test]
    fn a_refused_request_leaves_nothing_for_the_next() {
        let conn = ConnAccount::new();
        conn.record_recv(700, 1);
        conn.discard_pending();
        let a = ctx(1, 0);
        conn.begin(&a);
        assert_eq!(a.net.socket(), SocketUsage::default());
        // `end` of a request that never began runs its callback at once.
        let other = ctx(9, 0);
        let (f, rx) = sink();
        conn.end(&other, f);
        assert!(rx.try_recv().is_ok());
    }
}
