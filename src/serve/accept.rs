//! The accept loop: `pagegen::http::serve(listener, router)`, used like `axum::serve`.
//!
//! The shape is axum's `serve` (hyper-util's `server::conn::auto::Builder` — HTTP/1.1 with
//! keep-alive and HTTP/2 by preface — a tower-to-hyper service adapter, graceful shutdown through a
//! watch channel), with three differences: every connection and every handler is a **pagegen
//! task** (connections in the background class; handlers in their request's class, spawned by
//! [`LoopService`]), never a task on tokio's driver thread, and the listener given (a
//! `tokio::net::TcpListener`) is converted into a [`pagegen::net`](crate::net) listener, so every
//! connection's reads and writes run on the workers' own rings (or readiness sets), not through
//! tokio's reactor; the router is wrapped in the request loop; and the connection is protected:
//! - **connection limit** (`max_connections`): a connection past it is answered at once with a
//!   `503` + `Retry-After` and closed, so a flood of idle sockets cannot starve the workers and the
//!   client learns why;
//! - **header-read timeout** (`header_read_timeout_ms`, HTTP/1): a peer that does not finish its
//!   headers in time is disconnected (slowloris);
//! - **body limit** (`body_limit`): a declared `Content-Length` past it is answered `413` before
//!   admission; a streamed body is cut at the limit (the handler's body read fails).
//!
//! Shutdown: on the future given to [`Serve::with_graceful_shutdown`] (default: SIGTERM or ctrl-c)
//! the loop stops accepting, asks every connection to finish its in-flight request and close, and
//! waits up to `drain_timeout_ms` for them.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pagegen_core::ConnAccount;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

use crate::engine::Engine;
use crate::route::Route;
use crate::rt::HyperExecutor;
use crate::serve::classify::Classifier;
use crate::serve::layer::{LoopLayer, LoopService};

type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server being set up; `.await` it to run (see the module docs).
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    /// Routes still to register: those given while no engine was current (a `Serve` built outside
    /// the runtime it will run in), registered when it starts.
    routes: Vec<Route>,
    /// Whether the annotated paths were registered when it was built.
    registered: bool,
    shutdown: Option<ShutdownSignal>,
}

impl<S> std::fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// Serves an axum router on `listener` with the request loop (classes by `MatchedPath`).
/// Must run inside a pagegen runtime (`#[pagegen::main]`).
pub fn serve(listener: TcpListener, router: axum::Router) -> Serve<axum::Router> {
    // `Router::layer` wraps every route and the fallback, after routing: `MatchedPath` is known.
    Serve {
        listener,
        service: router.layer(LoopLayer::new()),
        routes: Vec::new(),
        registered: register_now(),
        shutdown: None,
    }
}

/// Registers every `#[pagegen::route(path = ...)]` with `engine`, so the classes and their caps
/// exist before the first request.
fn register_annotated_paths(engine: &Engine) {
    for a in crate::route::annotated_paths() {
        if let Some(p) = a.path {
            engine.annotate_path(p, a.class, &a.spec());
        }
    }
}

/// [`register_annotated_paths`] with the current engine, if any (when `serve` is built, so before
/// it is first polled); whether there was one.
fn register_now() -> bool {
    Engine::current()
        .map(|e| register_annotated_paths(&e))
        .is_some()
}

/// Serves any tower service (not an axum router) with the request loop; `classifier` names each
/// request's route.
pub fn serve_with<S, C>(
    listener: TcpListener,
    service: S,
    classifier: C,
) -> Serve<LoopService<S, C>>
where
    C: Classifier,
{
    Serve {
        listener,
        service: tower::Layer::layer(&LoopLayer::with_classifier(classifier), service),
        routes: Vec::new(),
        registered: register_now(),
        shutdown: None,
    }
}

impl<S> Serve<S> {
    /// Registers a route's budgets before the first request (the builder form of
    /// `#[pagegen::route(path = ...)]`).
    pub fn route(mut self, route: Route) -> Self {
        match Engine::current() {
            Some(engine) => {
                engine.annotate_path(&route.path, route.class.as_deref(), &route.spec);
            }
            None => self.routes.push(route),
        }
        self
    }
    /// Stops accepting when `signal` completes, then drains (default: SIGTERM or ctrl-c).
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }
    /// The address it listens on.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// SIGTERM or ctrl-c; where neither can be listened to, never.
async fn default_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let int = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = term => {},
        () = int => {},
    }
}

/// Connection-level settings, from the runtime's configuration.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    body_limit: u64,
}

/// The hyper-facing service: checks the body limit, turns hyper's body into axum's, calls the
/// request loop.
#[derive(Clone)]
struct Edge<S> {
    inner: S,
    limits: Limits,
    /// The connection's traffic account, handed to the request loop in each request's
    /// extensions.
    conn: Option<Arc<ConnAccount>>,
}

impl<S> Service<Request<Incoming>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let limit = self.limits.body_limit;
        let declared: Option<u64> = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if declared.is_some_and(|n| n > limit) {
            if let Some(c) = &self.conn {
                c.discard_pending();
            }
            return Box::pin(async move {
                Ok((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {limit} bytes"),
                )
                    .into_response())
            });
        }
        let mut req = req;
        if let Some(c) = &self.conn {
            req.extensions_mut().insert(Arc::clone(c));
        }
        let req = req.map(|b| {
            Body::new(http_body_util::Limited::new(
                b,
                usize::try_from(limit).unwrap_or(usize::MAX),
            ))
        });
        let mut inner = self.inner.clone();
        Box::pin(async move { inner.call(req).await })
    }
}

const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 24\r\ncontent-type: text/plain\r\n\r\ntoo many open connections";

impl<S> IntoFuture for Serve<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let engine = Engine::current().ok_or_else(|| {
                io::Error::other(
                    "pagegen::http::serve must run inside a pagegen runtime (#[pagegen::main])",
                )
            })?;
            // By now the program has set up its own subscriber, if it has one.
            if engine.config().profile {
                crate::tracing::install_default();
            }
            // A `Serve` built outside the runtime it runs in registers now.
            if !self.registered {
                register_annotated_paths(&engine);
            }
            for r in &self.routes {
                engine.annotate_path(&r.path, r.class.as_deref(), &r.spec);
            }
            let cfg = engine.config();
            let limits = Limits {
                header_read_timeout: cfg.header_read_timeout,
                body_limit: cfg.body_limit,
            };
            let max = cfg.max_connections;
            let drain = cfg.drain_timeout;
            let slots = Arc::new(Semaphore::new(max));
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut shutdown = self.shutdown.unwrap_or_else(|| Box::pin(default_signal()));
            let edge = Edge {
                inner: self.service,
                limits,
                conn: None,
            };
            // Users bind tokio's listener; connections are served by pagegen's sockets, on the
            // workers' rings (readiness sets without io_uring), not through tokio's reactor.
            let listener = crate::net::TcpListener::try_from(self.listener)?;
            loop {
                let (mut stream, _) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(s) => s,
                        Err(e) => {
                            // EMFILE and friends: the listener itself is fine; back off briefly
                            // so a full fd table does not spin the loop (axum's serve does the same).
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    () = &mut shutdown => break,
                };
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        // Each request's profile gets its own share of the connection's traffic.
                        let conn = Arc::new(ConnAccount::new());
                        stream.set_account(Arc::clone(&conn));
                        let edge = Edge {
                            conn: Some(conn),
                            ..edge.clone()
                        };
                        let mut stop = stop_rx.clone();
                        drop(crate::spawn(async move {
                            let mut builder = auto::Builder::new(HyperExecutor);
                            builder
                                .http1()
                                .timer(TokioTimer::new())
                                .header_read_timeout(limits.header_read_timeout);
                            let conn = builder.serve_connection_with_upgrades(
                                TokioIo::new(stream),
                                TowerToHyperService::new(edge),
                            );
                            let mut conn = std::pin::pin!(conn);
                            let stopping = tokio::select! {
                                _ = conn.as_mut() => false,
                                r = stop.wait_for(|s| *s) => r.is_ok(),
                            };
                            if stopping {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.as_mut().await;
                            }
                            drop(permit);
                        }));
                    }
                    Err(_) => {
                        engine.count_refused_connection();
                        drop(crate::spawn(async move {
                            let mut stream = stream;
                            let _ = stream.write_all(OVER_LIMIT).await;
                            let _ = stream.shutdown().await;
                        }));
                    }
                }
            }
            drop(listener);
            let _ = stop_tx.send(true);
            let all = u32::try_from(max).unwrap_or(u32::MAX);
            if tokio::time::timeout(drain, slots.acquire_many(all))
                .await
                .is_err()
            {
                tracing::warn!(
                    open = max - slots.available_permits(),
                    "drain deadline passed with connections still open"
                );
            }
            Ok(())
        })
    }
}
