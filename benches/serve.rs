//! HTTP serving, side by side: an axum app served by `pagegen::http::serve` (the request loop on),
//! by a plain hyper accept loop on pagegen (the loop off), and by `axum::serve` on tokio with the
//! same number of workers — same process, loopback, keep-alive, runs alternated.
//!
//! Two routes: `/` (a trivial page) and `/work` (~1 ms of CPU). The load is closed-loop: `CONNS`
//! keep-alive connections, each sending its next request when the last answer arrived, for
//! `SECS` seconds per run; the client runs on its own tokio thread (it shares the 2 cores, as a
//! load generator on the same machine does). Reported: requests/s per configuration (median over
//! rounds) and the ratio to tokio+axum; then the loop's fixed cost per request (classify, features,
//! predict, grant, admit, context, finish and record), measured in-process without HTTP.
//!
//! `cargo bench --bench serve` (full: 5 rounds of 3 s); `-- --quick` or `PAGEGEN_SERVE_QUICK=1`
//! for a smoke run (1 round of 0.5 s).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

const WORKERS: usize = 2;
const CONNS: usize = 32;

fn spin(d: Duration) -> u64 {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello, world" }))
        .route(
            "/work",
            get(|| async { spin(Duration::from_millis(1)).to_string() }),
        )
}

/// Closed-loop load on `addr` for `secs`: requests per second.
fn load(addr: SocketAddr, path: &'static str, secs: f64) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                while Instant::now() < until {
                    // A kept-alive hyper client connection takes the next request only once it
                    // has asked for one.
                    tx.ready().await.unwrap();
                    let res = tx
                        .send_request(Request::get(path).body(Empty::<Bytes>::new()).unwrap())
                        .await
                        .unwrap();
                    assert!(res.status().is_success());
                    res.into_body().collect().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Tokio,
    PagegenLoop,
    /// The loop with the behavioural profile off (`profile = false`): what the profile costs.
    PagegenLoopNoProfile,
    PagegenBare,
}

/// Starts `server` on a thread of its own; returns its address and a stopper.
fn start(server: Server) -> (SocketAddr, Box<dyn FnOnce()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let dir = tempfile::tempdir().unwrap();
    let thread = std::thread::spawn(move || match server {
        Server::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app())
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        }
        Server::PagegenLoop | Server::PagegenLoopNoProfile | Server::PagegenBare => {
            let cfg = pagegen::runtime::Config {
                profile: server != Server::PagegenLoopNoProfile,
                ..pagegen::runtime::Config::default()
            };
            let rt = pagegen::runtime::Builder::with_config(cfg)
                .workers(WORKERS)
                .bulk_workers(WORKERS)
                .state_dir(dir.path())
                .trainer(false)
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                if server != Server::PagegenBare {
                    pagegen::http::serve(l, app())
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .unwrap();
                } else {
                    bare_loop(l, stop_rx).await;
                }
            });
        }
    });
    let addr = addr_rx.recv().unwrap();
    (
        addr,
        Box::new(move || {
            let _ = stop_tx.send(());
            thread.join().unwrap();
        }),
    )
}

/// The router on pagegen without the request loop: hyper-util's auto builder per connection.
async fn bare_loop(l: tokio::net::TcpListener, stop: tokio::sync::oneshot::Receiver<()>) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            r = l.accept() => r.unwrap().0,
            _ = &mut stop => return,
        };
        stream.set_nodelay(true).unwrap();
        drop(pagegen::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app());
            let _ = hyper_util::server::conn::auto::Builder::new(pagegen::rt::HyperExecutor)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The loop's fixed cost per request, without HTTP: ns per classify → features → predict → grant →
/// admit → context → finish (the record queued), on the request path; and the recorder thread's
/// cost per record (`ModelRuntime::record`: every predictor observes it, the store appends it),
/// paid off the request path.
fn loop_cost(n: u32) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let rt = pagegen::runtime::Builder::new()
        .workers(1)
        .bulk_workers(1)
        .state_dir(dir.path())
        .trainer(false)
        .build()
        .unwrap();
    let path_ns = rt.block_on(async move {
        let run = |n: u32| async move {
            let e = pagegen::engine::Engine::current().unwrap();
            let t = Instant::now();
            for i in 0..n {
                let (class, spec) = e.classify("GET", Some("/product/{id}"));
                let f = pagegen::model::features::extract(class, "/product/17", None, 0, 4);
                let a = e.admit(class, &spec, f).await.unwrap();
                std::hint::black_box(&a);
                e.finish(a, pagegen::core::Outcome::Completed);
                if i % 4096 == 4095 {
                    // Keep the recorder's queue from filling (its drops would flatter the cost).
                    e.sync_records();
                }
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        };
        run(2_000).await;
        run(n).await
    });
    let model = rt.model().clone();
    let class = rt.engine().classify("GET", Some("/product/{id}")).0;
    let mut r = pagegen::core::ProfileRecord::new(1, class, pagegen::core::Usage::default());
    r.usage.cpu.cpu_ns = 200_000;
    r.usage.mem.peak_net_bytes = 1 << 20;
    let t = Instant::now();
    for i in 0..n / 4 {
        r.request_id = u64::from(i);
        r.usage.cpu.cpu_ns = 200_000 + u64::from(i % 1000) * 100;
        model.record(&r);
    }
    let record_ns = t.elapsed().as_nanos() as f64 / f64::from(n / 4);
    (path_ns, record_ns)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("PAGEGEN_SERVE_QUICK").is_some();
    let (rounds, secs) = if quick { (1, 0.5) } else { (5, 3.0) };
    // `PAGEGEN_SERVE_ONLY=PagegenLoop:/` runs one configuration on one route (for a profiler);
    // `PAGEGEN_SERVE_ONLY=cost` only the loop's costs.
    let only = std::env::var("PAGEGEN_SERVE_ONLY").ok();
    if only.as_deref() == Some("cost") {
        let (p, r) = loop_cost(200_000);
        println!("request path {p:.0} ns/request, recorder {r:.0} ns/record");
        return;
    }
    if let Some(o) = &only {
        let (s, path) = o.split_once(':').expect("PAGEGEN_SERVE_ONLY=Server:/path");
        let server = [
            Server::Tokio,
            Server::PagegenLoop,
            Server::PagegenLoopNoProfile,
            Server::PagegenBare,
        ]
        .into_iter()
        .find(|x| format!("{x:?}") == s)
        .expect("Tokio, PagegenLoop, PagegenLoopNoProfile or PagegenBare");
        let path: &'static str = if path == "/" { "/" } else { "/work" };
        let (addr, stop) = start(server);
        println!("{s} {path}: {:.0} req/s", load(addr, path, secs * 4.0));
        stop();
        return;
    }
    let servers = [
        Server::Tokio,
        Server::PagegenLoop,
        Server::PagegenLoopNoProfile,
        Server::PagegenBare,
    ];
    for path in ["/", "/work"] {
        let mut got: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for _ in 0..rounds {
            for (i, s) in servers.iter().enumerate() {
                let (addr, stop) = start(*s);
                got[i].push(load(addr, path, secs));
                stop();
            }
        }
        let base = median(&mut got[0].clone());
        println!(
            "route {path}: {rounds} rounds x {secs} s, {CONNS} connections, {WORKERS} workers"
        );
        let mut medians = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let m = median(&mut got[i].clone());
            medians.push(m);
            println!(
                "  {:<22} {:>9.0} req/s  {:.2}x tokio+axum",
                format!("{s:?}"),
                m,
                m / base
            );
        }
        // Goal: the whole behavioural profile costs at most 5 % of requests/s.
        println!(
            "  profile on / off: {:.3}x (per round: {})",
            medians[1] / medians[2],
            got[1]
                .iter()
                .zip(&got[2])
                .map(|(on, off)| format!("{:.3}", on / off))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let n = if quick { 20_000 } else { 200_000 };
    let (mut path, mut record): (Vec<f64>, Vec<f64>) =
        (0..if quick { 1 } else { 5 }).map(|_| loop_cost(n)).unzip();
    println!(
        "loop fixed cost on the request path (classify+features+predict+grant+admit+ctx+finish): {:.0} ns/request (median)",
        median(&mut path)
    );
    println!(
        "recorder cost off the request path (ModelRuntime::record): {:.0} ns/record (median)",
        median(&mut record)
    );
}
