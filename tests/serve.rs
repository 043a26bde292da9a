//! The request loop end to end: a real axum router served by `pagegen::http::serve` over loopback
//! HTTP, real allocations, real state directories. Assertions are on status codes, bodies, bytes
//! and counters — never on durations.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use pagegen::engine::Engine;
use pagegen::policy::Decision;
use pagegen::route::Route;
use pagegen::rt::TokioIo;
use pagegen::runtime::{Builder, Config, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{engine, get_once, start, stored_records, Gate};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

const MIB: usize = 1 << 20;

fn runtime(dir: &std::path::Path, tune: impl FnOnce(&mut Config)) -> Runtime {
    let mut cfg = Config {
        workers: 2,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.to_path_buf(),
        memory_pool: Some(1 << 30),
        admission_wait: Duration::ZERO,
        ..Config::default()
    };
    tune(&mut cfg);
    Builder::with_config(cfg)
        .thread_name("serve-test")
        .build()
        .unwrap()
}

/// Allocates `mib` MiB in 1 MiB pieces across awaits, touching every page, and keeps it all.
async fn hog(mib: usize) -> Vec<Vec<u8>> {
    let mut held = Vec::new();
    for _ in 0..mib {
        held.push(vec![1u8; MIB]);
        pagegen::task::yield_now().await;
    }
    held
}

#[test]
fn predictions_for_a_route_converge_to_what_it_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route(
            "/page/{n}",
            get(|Path(n): Path<u32>| async move {
                let v = hog(8).await;
                format!("{n}:{}", v.len())
            }),
        );
        let (addr, stop) = start(app, vec![]).await;
        for i in 0..40 {
            let (s, _, body) = get_once(addr, &format!("/page/{i}")).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(body, format!("{i}:8"));
        }
        let e = engine();
        e.sync_records();
        let (class, spec) = e.classify("GET", Some("/page/{n}"));
        let d = e.decisions().class(class);
        assert_eq!(d.get(Decision::Completed), 40);
        assert_eq!(d.get(Decision::Recorded), 40);
        let f = pagegen::model::features::extract(class, "/page/41", None, 0, 1);
        let peak = e.predict(class, &f).peak_bytes.central;
        assert!(
            (6 * MIB as u64..12 * MIB as u64).contains(&peak),
            "predicted peak {peak} for a route that holds 8 MiB"
        );
        let cpu = e.predict(class, &f).cpu_ns.central;
        assert!(cpu > 0, "CPU is learned from live traffic");
        assert!(e.grant_for(class, &spec, &f).mem_hard >= 8 * MIB as u64);
        let _ = stop.send(());
    });
}

#[test]
fn a_handler_far_over_its_memory_budget_is_cancelled_while_light_requests_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |c| c.mem_floor = 4 << 20);
    rt.block_on(async {
        let app = Router::new().route("/", get(|| async { "home" })).route(
            "/report",
            get(|| async {
                let v = hog(512).await;
                format!("{}", v.len())
            }),
        );
        let routes = vec![Route::new("/report").mem(16 << 20)];
        let (addr, stop) = start(app, routes).await;
        let heavy = pagegen::spawn(async move { get_once(addr, "/report").await });
        let light: Vec<_> = (0..20)
            .map(|_| pagegen::spawn(async move { get_once(addr, "/").await }))
            .collect();
        for l in light {
            let (s, _, body) = l.await.unwrap();
            assert_eq!((s, &body[..]), (StatusCode::OK, &b"home"[..]));
        }
        let (s, retry, body) = heavy.await.unwrap();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry, None, "the same request would exceed again");
        assert!(String::from_utf8_lossy(&body).contains("Memory budget exceeded"));
        let e = engine();
        let (class, _) = e.classify("GET", Some("/report"));
        assert_eq!(e.decisions().class(class).get(Decision::CancelledMemory), 1);
        assert_eq!(
            e.admission().memory().reserved(),
            0,
            "every reservation released"
        );
        let _ = stop.send(());
    });
}

#[test]
fn a_panicking_handler_is_a_500_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async { panic!("handler bug") as &'static str }),
            )
            .route("/ok", get(|| async { "fine" }));
        let (addr, stop) = start(app, vec![]).await;
        for _ in 0..3 {
            let (s, _, _) = get_once(addr, "/boom").await;
            assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
            let (s, _, body) = get_once(addr, "/ok").await;
            assert_eq!((s, &body[..]), (StatusCode::OK, &b"fine"[..]));
        }
        assert_eq!(engine().decisions().snapshot().get(Decision::Panicked), 3);
        let _ = stop.send(());
    });
}

#[test]
fn beyond_capacity_requests_are_shed_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // A 64 MiB pool and 32 MiB per request: two fit, the third cannot.
    let rt = runtime(dir.path(), |c| {
        c.memory_pool = Some(64 << 20);
        c.mem_floor = 32 << 20;
    });
    rt.block_on(async {
        let gate = Gate::new();
        let app = Router::new().route("/slow", get(gate.handler("done")));
        let routes = vec![Route::new("/slow").mem(32 << 20)];
        let (addr, stop) = start(app, routes).await;
        let held: Vec<_> = (0..2)
            .map(|_| pagegen::spawn(async move { get_once(addr, "/slow").await }))
            .collect();
        gate.entered(2).await;
        let e = engine();
        assert_eq!(e.admission().memory().reserved(), 64 << 20);
        for _ in 0..5 {
            let (s, retry, _) = get_once(addr, "/slow").await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(retry.as_deref(), Some("1"));
        }
        assert!(e.admission().memory().reserved() <= 64 << 20);
        gate.open(2);
        for h in held {
            let (s, _, body) = h.await.unwrap();
            assert_eq!((s, &body[..]), (StatusCode::OK, &b"done"[..]));
        }
        assert_eq!(e.decisions().snapshot().get(Decision::ShedMemory), 5);
        let _ = stop.send(());
    });
}

#[test]
fn a_storm_of_unknown_paths_creates_no_classes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route("/known", get(|| async { "k" }));
        let (addr, stop) = start(app, vec![]).await;
        let _ = get_once(addr, "/known").await;
        let before = engine().registry().len();
        for i in 0..100 {
            let (s, _, _) = get_once(addr, &format!("/random/{i}/x{i}")).await;
            assert_eq!(s, StatusCode::NOT_FOUND);
        }
        let e = engine();
        assert_eq!(e.registry().len(), before);
        assert_eq!(
            e.decisions()
                .class(e.unmatched_class())
                .get(Decision::Completed),
            100
        );
        let _ = stop.send(());
    });
}

#[test]
fn a_handler_parked_forever_is_cancelled_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route(
            "/stuck",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        );
        let routes = vec![Route::new("/stuck").timeout(Duration::from_millis(50))];
        let (addr, stop) = start(app, routes).await;
        let (s, retry, body) = get_once(addr, "/stuck").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(String::from_utf8_lossy(&body).contains("deadline"));
        assert_eq!(
            engine()
                .decisions()
                .snapshot()
                .get(Decision::CancelledDeadline),
            1
        );
        let _ = stop.send(());
    });
}

#[test]
fn the_connection_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |c| c.max_connections = 2);
    rt.block_on(async {
        let app = Router::new().route("/", get(|| async { "hi" }));
        let (addr, stop) = start(app, vec![]).await;
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            open.push(s);
        }
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        third.read_to_end(&mut got).await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(engine().refused_connections(), 1);
        drop(open);
        let _ = stop.send(());
    });
}

/// Runs in a child process (this test binary re-executed): serves `/learn` on a state directory,
/// prints its port, and waits to be killed.
fn child_server(dir: &str) {
    let rt = runtime(std::path::Path::new(dir), |_| {});
    rt.block_on(async {
        let app = Router::new()
            .route("/learn", get(|| async { hog(4).await.len().to_string() }))
            .route(
                "/sync",
                get(|| async {
                    let e = engine();
                    let id = e.classify("GET", Some("/learn")).0.raw();
                    pagegen::spawn_blocking(move || e.sync_records())
                        .await
                        .unwrap();
                    id.to_string()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        pagegen::http::serve(listener, app)
            .with_graceful_shutdown(std::future::pending())
            .await
            .unwrap();
    });
}

#[test]
fn a_restart_after_sigkill_keeps_class_ids_and_what_was_learned() {
    if let Ok(dir) = std::env::var("PAGEGEN_SERVE_TEST_CHILD") {
        child_server(&dir);
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_restart_after_sigkill_keeps_class_ids_and_what_was_learned",
            "--nocapture",
        ])
        .env("PAGEGEN_SERVE_TEST_CHILD", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("child printed its port").unwrap();
        if let Some(p) = line.strip_prefix("PORT ") {
            break p.parse().unwrap();
        }
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id: u32 = client.block_on(async {
        for _ in 0..30 {
            let (s, _, _) = plain_get(addr, "/learn").await;
            assert_eq!(s, 200);
        }
        let (_, _, body) = plain_get(addr, "/sync").await;
        String::from_utf8(body).unwrap().parse().unwrap()
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let e = engine();
        assert_eq!(e.registry().id_of("GET /learn").map(|c| c.raw()), Some(id));
        let class = pagegen::ClassId::from_raw(id);
        let f = pagegen::model::features::extract(class, "/learn", None, 0, 1);
        let peak = e.predict(class, &f).peak_bytes.central;
        assert!(
            (3 * MIB as u64..6 * MIB as u64).contains(&peak),
            "after the restart the route is still predicted to hold ~4 MiB, got {peak}"
        );
    });
}

/// A GET without hyper (the client runtime here is plain tokio): status, headers, body.
async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap();
    // Bodies here are short and sent with content-length.
    (status, head.to_owned(), body.as_bytes().to_vec())
}

#[test]
fn a_corrupt_state_directory_starts_fresh_and_keeps_the_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("classes"), b"\x00\xffnot a registry").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (addr, stop) = start(app, vec![]).await;
        assert_eq!(get_once(addr, "/").await.0, StatusCode::OK);
        let _ = stop.send(());
    });
    drop(rt);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let aside = |p: &str| {
        names
            .iter()
            .any(|n| n.starts_with(p) && n.contains(".corrupt-"))
    };
    assert!(aside("classes"), "{names:?}");
    assert!(aside("model.safetensors"), "{names:?}");
}

#[pagegen::route(path = "/annotated", mem = "16MiB")]
async fn annotated() -> String {
    hog(256).await.len().to_string()
}

#[pagegen::route(class = "stuck-on-first-call", timeout = "50ms")]
async fn bound_on_first_call() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

#[test]
fn route_annotations_register_before_the_first_request_or_bind_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new()
            .route("/annotated", get(annotated))
            .route("/first", get(bound_on_first_call));
        let (addr, stop) = start(app, vec![]).await;
        let e = engine();
        // `path` registered the class and its cap before any request.
        assert_eq!(
            e.registry()
                .spec(e.registry().id_of("/annotated").unwrap())
                .and_then(|s| s.route.mem),
            Some(16 << 20)
        );
        let (s, _, _) = get_once(addr, "/annotated").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        // No `path`: the annotation binds on the first call, and its timeout applies at once.
        assert!(e.registry().id_of("stuck-on-first-call").is_none());
        let (s, retry, _) = get_once(addr, "/first").await;
        assert_eq!(
            (s, retry.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        let id = e.registry().id_of("stuck-on-first-call").unwrap();
        assert_eq!(e.classify("GET", Some("/first")).0, id);
        let (s, _, _) = get_once(addr, "/first").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.decisions().class(id).get(Decision::CancelledDeadline), 1);
        let _ = stop.send(());
    });
}

#[test]
fn a_request_over_its_cpu_grant_is_demoted_to_the_bulk_pool_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route(
            "/render",
            get(|| async {
                // Polls of real CPU work (a fixed amount of computation, whatever the machine's
                // load), across yields, until a poll runs on a bulk worker: the CPU account passes
                // the 1 ms grant after a few polls, and the enforcer moves the request.
                let mut x = 1u64;
                for _ in 0..100_000 {
                    for _ in 0..200_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    if name.contains("-bulk-") {
                        return name;
                    }
                    pagegen::task::yield_now().await;
                }
                format!("never demoted ({x})")
            }),
        );
        let routes = vec![Route::new("/render").cpu(Duration::from_millis(1))];
        let (addr, stop) = start(app, routes).await;
        let (s, _, body) = get_once(addr, "/render").await;
        assert_eq!(s, StatusCode::OK, "CPU over the grant never cancels");
        assert!(
            String::from_utf8_lossy(&body).contains("-bulk-"),
            "the last polls ran on a bulk worker: {}",
            String::from_utf8_lossy(&body)
        );
        let e = engine();
        let class = e.classify("GET", Some("/render")).0;
        assert_eq!(e.decisions().class(class).get(Decision::Demoted), 1);
        let _ = stop.send(());
    });
}

#[test]
fn declared_bodies_over_the_limit_are_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |c| c.body_limit = 1024);
    rt.block_on(async {
        let app = Router::new().route("/upload", axum::routing::post(|b: Bytes| async move { b.len().to_string() }));
        let (addr, stop) = start(app, vec![]).await;
        for (len, want) in [(1024usize, "200"), (1025, "413")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&vec![b'a'; len]).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(&got[9..12], want.as_bytes(), "{}", String::from_utf8_lossy(&got));
        }
        let _ = stop.send(());
    });
}

#[test]
fn http2_requests_are_served_through_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let app = Router::new().route(
            "/h2",
            get(|req: axum::extract::Request| async move { format!("{:?}", req.version()) }),
        );
        let (addr, stop) = start(app, vec![]).await;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(pagegen::rt::HyperExecutor, TokioIo::new(stream))
                .await
                .unwrap();
        drop(pagegen::spawn(conn));
        for _ in 0..3 {
            let res = tx
                .send_request(
                    Request::get("http://x/h2")
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"HTTP/2.0");
        }
        let e = engine();
        let class = e.classify("GET", Some("/h2")).0;
        assert_eq!(e.decisions().class(class).get(Decision::Completed), 3);
        let _ = stop.send(());
    });
}

#[test]
fn serve_with_runs_a_plain_tower_service_under_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let svc = tower::service_fn(|req: axum::extract::Request| async move {
            Ok::<_, std::convert::Infallible>(format!("plain {}", req.uri().path()))
        });
        let classifier =
            |_: &axum::http::Method, uri: &axum::http::Uri, _: &axum::http::HeaderMap| {
                Some(if uri.path().starts_with("/api") {
                    "/api".to_owned()
                } else {
                    "/".to_owned()
                })
            };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            pagegen::http::serve_with(listener, svc, classifier).with_graceful_shutdown(async {
                let _ = rx.await;
            });
        drop(pagegen::spawn(async move { server.await.unwrap() }));
        for p in ["/api/a", "/api/b", "/x"] {
            let (s, _, body) = get_once(addr, p).await;
            assert_eq!(
                (s, body),
                (StatusCode::OK, Bytes::from(format!("plain {p}")))
            );
        }
        let e = engine();
        assert_eq!(
            e.decisions()
                .class(e.registry().id_of("GET /api").unwrap())
                .get(Decision::Completed),
            2
        );
        let _ = tx.send(());
    });
}

#[pagegen::test(workers = 2)]
async fn test_runtimes_have_every_hook_of_a_real_one() {
    let ctx = pagegen::RequestCtx::new(
        pagegen::core::RequestId(7),
        pagegen::Grant::unlimited(pagegen::ClassId::from_raw(3)),
        1,
    );
    let handle = pagegen::runtime::Handle::current();
    let held = handle
        .spawn_with_ctx(ctx.clone(), async {
            let v = vec![7u8; 3 * MIB];
            pagegen::task::yield_now().await;
            v.len()
        })
        .await
        .unwrap();
    assert_eq!(held, 3 * MIB);
    let u = ctx.usage(2);
    assert!(
        u.mem.peak_net_bytes >= 3 * MIB as i64,
        "allocator hook: {:?}",
        u.mem
    );
    assert!(
        u.cpu.polls >= 2 && u.cpu.cpu_ns > 0,
        "profiler hook: {:?}",
        u.cpu
    );
    assert!(
        Engine::current().is_some(),
        "the engine is current in #[pagegen::test]"
    );
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight_then_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |_| {});
    rt.block_on(async {
        let gate = Gate::new();
        let app = Router::new().route("/slow", get(gate.handler("finished")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = pagegen::http::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        let server = pagegen::spawn(async move { server.await });
        let in_flight = pagegen::spawn(async move { get_once(addr, "/slow").await });
        gate.entered(1).await;
        tx.send(()).unwrap();
        gate.open(1);
        let (s, _, body) = in_flight.await.unwrap();
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"finished"[..]));
        server.await.unwrap().unwrap();
        let refused = tokio::net::TcpStream::connect(addr).await;
        assert!(refused.is_err(), "the listener is closed after shutdown");
    });
}

#[test]
fn a_peer_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |c| {
        c.header_read_timeout = Duration::from_millis(100)
    });
    rt.block_on(async {
        let app = Router::new().route("/", get(|| async { "hi" }));
        let (addr, stop) = start(app, vec![]).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        // The server closes the connection (the bound only keeps a broken build from hanging).
        let mut got = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "the half-sent request is still open");
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        // Others are served meanwhile.
        assert_eq!(get_once(addr, "/").await.0, StatusCode::OK);
        let _ = stop.send(());
    });
}

#[test]
fn a_request_growing_past_its_prediction_is_extended_at_a_checkpoint_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), |c| c.mem_floor = 4 << 20);
    let class = rt.block_on(async {
        let app = Router::new().route(
            "/grow/{mib}",
            get(|Path(mib): Path<usize>| async move {
                let v = hog(mib).await;
                format!("{}", v.len())
            }),
        );
        let (addr, stop) = start(app, vec![]).await;
        // Teach the class that it holds 2 MiB: budgets of ~4 MiB (the floor).
        for _ in 0..20 {
            let (s, _, _) = get_once(addr, "/grow/2").await;
            assert_eq!(s, StatusCode::OK);
        }
        let e = engine();
        e.sync_records();
        let (class, spec) = e.classify("GET", Some("/grow/{mib}"));
        let f = pagegen::model::features::extract(class, "/grow/12", None, 0, 1);
        let hard = e.grant_for(class, &spec, &f).mem_hard;
        assert!(hard < 12 * MIB as u64, "granted {hard}: 12 MiB is past it");
        // 12 MiB: past the soft limit early, extended at checkpoints (at most 4× its budget) → 200.
        let (s, _, body) = get_once(addr, "/grow/12").await;
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"12"[..]));
        let d = e.decisions().class(class);
        assert!(d.get(Decision::Extended) >= 1, "{d:?}");
        assert_eq!(d.get(Decision::CancelledMemory), 0);
        // 200 MiB: past every bound → refused, then cancelled at its hard limit with a 503.
        let (s, _, _) = get_once(addr, "/grow/200").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let d = e.decisions().class(class);
        assert_eq!(d.get(Decision::CancelledMemory), 1);
        assert!(d.get(Decision::ExtensionRefused) >= 1, "{d:?}");
        assert_eq!(e.checkpoints().extended_bytes(), 0, "extensions released");
        assert_eq!(e.admission().memory().reserved(), 0);
        e.sync_records();
        let _ = stop.send(());
        class
    });
    // Dropping the runtime releases the state directory (nothing of it outlives the drop).
    drop(rt);
    // Both decisions are in the requests' profiles.
    let records = stored_records(dir.path());
    let ours: Vec<_> = records.iter().filter(|r| r.class == class).collect();
    assert_eq!(ours.len(), 22);
    let extended = ours
        .iter()
        .find(|r| r.usage.mem.peak_net_bytes >= 12 * MIB as i64)
        .expect("the 12 MiB request's record");
    assert!(extended
        .checkpoints
        .extended(pagegen::core::Resource::Memory));
    assert_eq!(extended.outcome, pagegen::core::Outcome::Completed);
    assert!(extended.grant.unwrap().mem_hard >= 12 * MIB as u64);
    let refused = ours
        .iter()
        .find(|r| matches!(r.outcome, pagegen::core::Outcome::Cancelled(_)))
        .expect("the cancelled request's record");
    assert!(refused.checkpoints.refused(pagegen::core::Resource::Memory));
}
