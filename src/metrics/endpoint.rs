//! The endpoint: `GET /metrics` on `metrics_addr`, answered with the runtime's
//! [`registry`](crate::metrics::registry) in OpenMetrics text.
//!
//! **Its own thread, not a pagegen task.** The endpoint runs on one thread (`pagegen-metrics`)
//! with a private current-thread tokio runtime and hyper's HTTP/1 server, for three reasons:
//! - metrics must answer when the runtime is in trouble — every worker busy, a handler blocking a
//!   worker, the admission controller shedding — which is when an operator looks; a task on the
//!   workers would queue behind the very work it reports on;
//! - a scrape would otherwise show up in the figures it reads (polls, scheduling delay, the
//!   background class's CPU), and a scrape every few seconds should not move them;
//! - nothing of the request loop applies to it (classes, admission, budgets), so the edge's
//!   machinery (`crate::http`) would only be in the way.
//!
//! The cost is one thread, parked in `epoll` between scrapes. Connections are tasks of the
//! private runtime (at most [`MAX_CONNECTIONS`], each with [`HEADER_READ_TIMEOUT`]), so
//! Prometheus can keep its connection alive while another scraper or `curl` gets an answer.
//!
//! The listener is bound in [`Builder::build`](crate::runtime::Builder::build), so a bad or busy
//! address is a startup error that names `metrics_addr`; the bound address (port 0 picks one) is
//! logged once and returned by [`Runtime::metrics_addr`](crate::runtime::Runtime::metrics_addr).
//! Dropping the runtime stops the thread (and its connections) before anything it reads.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::sync::{oneshot, Semaphore};

use crate::metrics::encode;

/// The content type of the exposition, as `prometheus_client` encodes it (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; more are closed at accept. A handful of scrapers and a human with
/// `curl` is the expected load (plucked from thin air, generous for that).
pub const MAX_CONNECTIONS: usize = 16;

/// A connection that has not sent a request head by then is closed (so idle sockets cannot hold
/// the [`MAX_CONNECTIONS`] slots). Prometheus scrapes every 15 s by default and keeps its
/// connection alive between scrapes: 60 s outlasts that interval by a wide margin.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The running endpoint: its address, and the thread serving it (stopped on drop).
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A startup error naming the knob.
fn knob_error(addr: SocketAddr, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("pagegen config: `metrics_addr` = {addr}: {what}: {e}"),
    )
}

impl Endpoint {
    /// Binds `addr` and starts serving `registry` on a thread of its own.
    ///
    /// # Errors
    /// The address cannot be bound, or the thread or its runtime cannot start; the message names
    /// `metrics_addr`.
    pub(crate) fn start(addr: SocketAddr, registry: Registry) -> io::Result<Endpoint> {
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| knob_error(addr, "cannot listen", &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| knob_error(addr, "cannot listen", &e))?;
        let bound = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| knob_error(addr, "cannot start the metrics thread", &e))?;
        let (stop, stopped) = oneshot::channel();
        let registry = Arc::new(registry);
        let thread = std::thread::Builder::new()
            .name("pagegen-metrics".to_owned())
            .spawn(move || rt.block_on(serve(listener, registry, stopped)))
            .map_err(|e| knob_error(addr, "cannot start the metrics thread", &e))?;
        if !bound.ip().is_loopback() {
            tracing::warn!(
                addr = %bound,
                "the metrics endpoint listens beyond loopback (metrics_addr names {}); it has no \
                 authentication",
                bound.ip()
            );
        }
        tracing::info!(addr = %bound, "Prometheus metrics on http://{bound}/metrics");
        Ok(Endpoint {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop, until `stopped` fires (or its sender drops).
async fn serve(
    listener: std::net::TcpListener,
    registry: Arc<Registry>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the metrics endpoint cannot register its listener");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // full: the stream drops, closing the connection
        };
        let registry = registry.clone();
        // A task of the endpoint's private runtime, on this thread: not the request loop's.
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = respond(&registry, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// `GET /metrics` (and `HEAD`): the exposition; another method: 405; another path: 404.
fn respond<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(encode(registry))));
    r.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
    r
}
