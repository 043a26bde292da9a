//! Helpers the end-to-end test binaries share: start an axum app on `pagegen::http::serve` over
//! 127.0.0.1:0, and speak HTTP/1.1 to it with hyper's client on a fresh connection. Each binary
//! uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use pagegen::engine::Engine;
use pagegen::route::Route;
use pagegen::rt::TokioIo;
use tokio::sync::{oneshot, Semaphore};

/// Starts `app` (with `routes` registered) on 127.0.0.1:0; returns its address and a shutdown
/// trigger.
pub async fn start(app: Router, routes: Vec<Route>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let mut server = pagegen::http::serve(listener, app).with_graceful_shutdown(async {
        let _ = rx.await;
    });
    for r in routes {
        server = server.route(r);
    }
    drop(pagegen::spawn(async move { server.await.unwrap() }));
    (addr, tx)
}

/// One request on a fresh connection: status, headers, body.
pub async fn send(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    drop(pagegen::spawn(conn));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = tx.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// One GET: status, `Retry-After`, body.
pub async fn get_once(addr: SocketAddr, path: &str) -> (StatusCode, Option<String>, Bytes) {
    let (status, headers, body) = send(addr, "GET", path).await;
    let retry = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, body)
}

/// The engine of the runtime the caller runs on.
pub fn engine() -> Arc<Engine> {
    Engine::current().expect("inside the runtime")
}

/// A handler that signals `entered` and then waits for a permit of `gate`: requests held in
/// flight for as long as a test wants.
#[derive(Clone)]
pub struct Gate {
    /// Released by the test, one permit per request to let through.
    pub gate: Arc<Semaphore>,
    /// One permit per request that reached the handler.
    pub entered: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate {
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
        }
    }
    /// The handler: answers `body` once let through.
    pub fn handler(
        &self,
        body: &'static str,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>
           + Clone
           + Send
           + Sync
           + 'static {
        let g = self.clone();
        move || {
            let g = g.clone();
            Box::pin(async move {
                g.entered.add_permits(1);
                g.gate.acquire().await.unwrap().forget();
                body
            })
        }
    }
    /// Waits until `n` requests reached the handler.
    pub async fn entered(&self, n: u32) {
        self.entered.acquire_many(n).await.unwrap().forget();
    }
    /// Lets `n` requests through.
    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// Every profile record stored in the state directory `dir` (open it only after the runtime that
/// wrote it was dropped: the directory is locked while one runs).
pub fn stored_records(dir: &std::path::Path) -> Vec<pagegen::core::ProfileRecord> {
    let state = pagegen::model::StateDir::open(dir).unwrap();
    let (mut store, _) =
        pagegen::model::ProfileStore::open(state.profiles(), Default::default()).unwrap();
    store.read_recent(usize::MAX).unwrap().0
}
