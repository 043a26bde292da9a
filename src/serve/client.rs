//! Outgoing backend calls, instrumented: [`Client`] (an HTTP client over hyper-util's pooled
//! client) and its [`Connector`].
//!
//! For each call made inside a request (its context is current when the call starts):
//! - **accounted**: one outgoing request, its body bytes out and in, and its latency (from the call
//!   to the end — or drop — of the response body) go into the request's
//!   [`NetAccount`](pagegen_core::NetAccount), so the profile's `net` says how the page depends on
//!   its backends;
//! - **prioritised**: the connection carries the request's `Grant::net_priority` as `SO_PRIORITY`
//!   (0–6, no privilege needed; the latency pool's requests get 0, the bulk pool's 4) and, when
//!   [`ClientBuilder::dscp`] is on, a matching DSCP code point through `IP_TOS`. A pooled
//!   connection is reused by later calls, so the client keeps **one connection pool per priority**:
//!   a bulk request never sends on a latency request's connection, nor the other way round;
//! - **limited**: at most [`ClientBuilder::per_class_limit`] calls of one class are in flight at
//!   once; the next waits (the permit is held until its response body ends or is dropped), so one
//!   class's fan-out cannot take every backend connection.
//!
//! Connection tasks run in the background context (class `default`), not in the request that
//! happened to open the connection: a pooled connection outlives its first request, and that
//! request's cancellation must not close it under the next one.
//!
//! Byte counts are of bodies (what the handler sent and read), not of headers and framing. Outside
//! a request nothing is accounted or limited, and the priority is 0.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::TokioIo;
use pagegen_core::{ClassId, RequestCtx};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Highest `SO_PRIORITY` an unprivileged process may set.
pub const MAX_PRIORITY: u8 = 6;

/// The DSCP code point for a priority: 0–1 → AF41 (interactive), 2–3 → AF21, 4–6 → CS1 (lower
/// effort, RFC 8622's neighbour); the value `IP_TOS` takes is this shifted left by 2.
pub fn dscp_for(priority: u8) -> u8 {
    match priority {
        0 | 1 => 34,
        2 | 3 => 18,
        _ => 8,
    }
}

/// Connects with hyper-util's `HttpConnector`, then sets the socket's priority (and DSCP).
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    priority: u8,
    dscp: bool,
}

impl Connector {
    /// A connector whose sockets get `SO_PRIORITY = priority` (capped at [`MAX_PRIORITY`]) and,
    /// with `dscp`, `IP_TOS = dscp_for(priority) << 2`.
    pub fn new(priority: u8, dscp: bool) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Connector {
            http,
            priority: priority.min(MAX_PRIORITY),
            dscp,
        }
    }

    fn mark(&self, s: &TcpStream) -> io::Result<()> {
        let sock = socket2::SockRef::from(s);
        // TOS first: on Linux setting IP_TOS also resets SO_PRIORITY from the TOS bits.
        if self.dscp && s.local_addr()?.is_ipv4() {
            sock.set_tos_v4(u32::from(dscp_for(self.priority)) << 2)?;
        }
        sock.set_priority(u32::from(self.priority))
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            this.mark(io.inner())?;
            Ok(io)
        })
    }
}

/// Spawns hyper's connection tasks on pagegen in the background context (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
struct BackgroundExecutor;

impl<F> hyper::rt::Executor<F> for BackgroundExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(pagegen_executor::spawn_in(ClassId::DEFAULT, fut));
    }
}

/// Settings of a [`Client`].
#[derive(Clone, Copy, Debug)]
pub struct ClientBuilder {
    per_class: usize,
    dscp: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            per_class: 64,
            dscp: false,
        }
    }
}

impl ClientBuilder {
    /// Calls of one class in flight at most (default 64; at least 1).
    pub fn per_class_limit(mut self, n: usize) -> Self {
        self.per_class = n.max(1);
        self
    }
    /// Also mark packets with a DSCP code point per priority ([`dscp_for`]; default off: networks
    /// that do not honour it may re-mark or drop it).
    pub fn dscp(mut self, on: bool) -> Self {
        self.dscp = on;
        self
    }
    /// The client.
    pub fn build<B>(self) -> Client<B>
    where
        B: Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let pools = (0..=MAX_PRIORITY)
            .map(|p| PooledClient::builder(BackgroundExecutor).build(Connector::new(p, self.dscp)))
            .collect();
        Client {
            pools,
            per_class: self.per_class,
            limits: Arc::default(),
        }
    }
}

/// The instrumented HTTP client; see the module docs.
pub struct Client<B> {
    pools: Vec<PooledClient<Connector, B>>,
    per_class: usize,
    limits: Arc<Mutex<HashMap<ClassId, Arc<Semaphore>>>>,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            pools: self.pools.clone(),
            per_class: self.per_class,
            limits: self.limits.clone(),
        }
    }
}

impl<B> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("per_class", &self.per_class)
            .finish_non_exhaustive()
    }
}

/// A failed call.
pub type ClientError = hyper_util::client::legacy::Error;

impl<B> Client<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Settings, starting from the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Calls of `class` in flight now.
    pub fn in_flight(&self, class: ClassId) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&class)
            .map_or(0, |s| self.per_class - s.available_permits())
    }

    /// Sends `req` for the current request (see the module docs).
    ///
    /// # Errors
    /// What hyper-util's client returns (connect, protocol).
    pub async fn request(&self, req: Request<B>) -> Result<Response<CountedBody>, ClientError> {
        let ctx = RequestCtx::current().filter(|c| !c.id().is_background());
        let priority = ctx
            .as_ref()
            .map_or(0, |c| c.grant().get().net_priority.min(MAX_PRIORITY));
        let permit = match &ctx {
            Some(c) => {
                let sem = self
                    .limits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(c.class())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_class)))
                    .clone();
                Some(sem.acquire_owned().await.expect("never closed"))
            }
            None => None,
        };
        let started = Instant::now();
        let bytes_out = req.body().size_hint().exact().unwrap_or(0);
        let res = self.pools[usize::from(priority)].request(req).await;
        let recording = Recording {
            ctx,
            started,
            bytes_out,
            bytes_in: 0,
            _permit: permit,
        };
        match res {
            Ok(res) => Ok(res.map(|inner| CountedBody {
                inner,
                recording: Some(recording),
            })),
            // Dropping the recording records the failed call (latency to the failure, 0 bytes in).
            Err(e) => Err(e),
        }
    }
}

/// One call being recorded: written into the request's account once, when dropped.
struct Recording {
    ctx: Option<Arc<RequestCtx>>,
    started: Instant,
    bytes_out: u64,
    bytes_in: u64,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            let latency = self.started.elapsed().as_nanos() as u64;
            ctx.net.record(self.bytes_out, self.bytes_in, latency);
        }
    }
}

/// A response body that counts what is read and ends the call's recording (and frees its class
/// permit) when it ends or is dropped.
pub struct CountedBody {
    inner: Incoming,
    recording: Option<Recording>,
}

impl std::fmt::Debug for CountedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedBody").finish_non_exhaustive()
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(r)) = (frame.data_ref(), self.recording.as_mut()) {
                    r.bytes_in += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(self.recording.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
