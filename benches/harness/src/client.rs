//! A keep-alive HTTP/1.1 connection pool over loopback, on hyper's low-level client
//! (`hyper::client::conn::http1`).
//!
//! One request per connection at a time. A request takes an idle connection; when every open
//! connection is busy it opens a new one, up to `cap`; at the cap it waits for one to come back,
//! but only until its deadline, after which it is counted as never sent (an open-loop generator
//! must not quietly turn into a closed loop by waiting on its own pool).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use http_body_util::{BodyExt, Empty};
use hyper::{
    body::Bytes,
    client::conn::http1::{self, SendRequest},
    header::HOST,
    Request,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Semaphore, time::Instant};

use crate::latency::Outcome;

type Sender = SendRequest<Empty<Bytes>>;

/// The pool.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    host: String,
    idle: Mutex<Vec<Sender>>,
    /// One permit per request holding a connection: at most `cap` at once.
    slots: Semaphore,
    live: Arc<AtomicUsize>,
    peak: AtomicUsize,
    opened: AtomicUsize,
}

/// What a request reports back: when it actually left (if it did) and its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// When the request was written to a connection.
    pub at: Option<Instant>,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Pool {
    /// A pool for the server at `addr` with at most `cap` connections.
    pub fn new(addr: SocketAddr, cap: usize) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(cap.max(1)),
            live: Arc::new(AtomicUsize::new(0)),
            peak: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
        }
    }

    /// The most connections open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Connections opened in total (reconnects included).
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> Option<Sender> {
        let stream = TcpStream::connect(self.addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let now = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        let live = Arc::clone(&self.live);
        tokio::spawn(async move {
            // Drives the connection until either side closes it.
            let _ = conn.await;
            live.fetch_sub(1, Ordering::Relaxed);
        });
        Some(sender)
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// A new connection before `hard_deadline`, or what the request becomes without one.
    async fn fresh(&self, hard_deadline: Instant) -> Result<Sender, Sent> {
        match tokio::time::timeout_at(hard_deadline, self.connect()).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Sent {
                at: None,
                outcome: Outcome::Error,
            }),
            Err(_) => Err(Sent {
                at: None,
                outcome: Outcome::Unsent,
            }),
        }
    }

    /// Sends `GET path`. Waits for a connection until `unsent_after`, then gives up unsent;
    /// gives up on the response at `hard_deadline` (timed out).
    pub async fn get(&self, path: &str, unsent_after: Instant, hard_deadline: Instant) -> Sent {
        let Ok(Ok(_permit)) =
            tokio::time::timeout_at(unsent_after.min(hard_deadline), self.slots.acquire()).await
        else {
            return Sent {
                at: None,
                outcome: Outcome::Unsent,
            };
        };
        // A kept-alive connection the server has just closed fails before the request leaves; such
        // a request is retried once on a fresh connection (as hyper-util's pooled client retries
        // canceled requests), so a server's idle-connection policy does not read as errors.
        let (mut sender, mut reused) = match self.take_idle() {
            Some(s) => (s, true),
            None => match self.fresh(hard_deadline).await {
                Ok(s) => (s, false),
                Err(sent) => return sent,
            },
        };
        loop {
            let written = if sender.ready().await.is_err() {
                Err(true)
            } else {
                let request = Request::get(path)
                    .header(HOST, &self.host)
                    .body(Empty::new())
                    .expect("a path from a validated mix is a valid URI");
                let at = Instant::now();
                let exchange = async {
                    let response = match sender.send_request(request).await {
                        Ok(r) => r,
                        // Canceled: never written (the connection closed first).
                        Err(e) => return Err(e.is_canceled()),
                    };
                    let status = response.status().as_u16();
                    // Read the whole body: the connection takes the next request only after it.
                    response.into_body().collect().await.map_err(|_| false)?;
                    Ok(status)
                };
                match tokio::time::timeout_at(hard_deadline, exchange).await {
                    Ok(Ok(status)) => Ok((at, Outcome::Status(status))),
                    Ok(Err(unwritten)) => Err(unwritten),
                    // The connection is dropped with the request: it may still carry a late answer.
                    Err(_) => Ok((at, Outcome::TimedOut)),
                }
            };
            match written {
                Ok((at, outcome)) => {
                    if matches!(outcome, Outcome::Status(_)) && !sender.is_closed() {
                        self.idle.lock().expect("pool lock").push(sender);
                    }
                    return Sent {
                        at: Some(at),
                        outcome,
                    };
                }
                Err(true) if reused => {
                    reused = false;
                    sender = match self.fresh(hard_deadline).await {
                        Ok(s) => s,
                        Err(sent) => return sent,
                    };
                }
                Err(_) => {
                    return Sent {
                        at: None,
                        outcome: Outcome::Error,
                    }
                }
            }
        }
    }
}
