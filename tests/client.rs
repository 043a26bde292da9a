//! Outgoing calls through `pagegen::http::Client`: accounted in the calling request's profile,
//! sent on sockets carrying its priority, and limited per class — over real loopback HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use pagegen::http::client::{dscp_for, Connector};
use pagegen::http::Client;
use pagegen::runtime::{Builder, Config, Runtime};
use tower::Service;

mod support;

use support::{engine, get_once, start, stored_records, Gate};

fn runtime(dir: &std::path::Path) -> Runtime {
    Builder::with_config(Config {
        workers: 2,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.to_path_buf(),
        ..Config::default()
    })
    .build()
    .unwrap()
}

#[test]
fn connections_carry_the_priority_and_dscp_they_were_made_for() {
    let rt = Builder::new()
        .temporary_state()
        .trainer(false)
        .workers(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        for (priority, dscp) in [(0u8, false), (4, true), (6, true), (9, false)] {
            let io = Connector::new(priority, dscp)
                .call(uri.clone())
                .await
                .unwrap();
            let sock = socket2::SockRef::from(io.inner());
            let want = priority.min(6);
            assert_eq!(sock.priority().unwrap(), u32::from(want), "SO_PRIORITY");
            let tos = sock.tos_v4().unwrap();
            if dscp {
                assert_eq!(tos, u32::from(dscp_for(want)) << 2, "IP_TOS");
            } else {
                assert_eq!(tos, 0);
            }
        }
    });
}

#[test]
fn a_pages_backend_calls_are_in_its_profile_and_each_class_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let (page_class, fan_class) = rt.block_on(async {
        // The backend: 1000 bytes of data, and a gated endpoint that counts who is inside.
        let gate = Gate::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let slow = {
            let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
            move || {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                async move {
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    let body = gate.handler("slow")().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    body
                }
            }
        };
        let backend = Router::new()
            .route("/data", get(|| async { "x".repeat(1000) }))
            .route("/slow", get(slow));
        let (backend_addr, stop_backend) = start(backend, vec![]).await;

        let client: Client<Empty<Bytes>> =
            Client::<Empty<Bytes>>::builder().per_class_limit(2).build();
        let fetch = move |client: Client<Empty<Bytes>>, path: &'static str| async move {
            let req = Request::get(format!("http://{backend_addr}{path}"))
                .body(Empty::new())
                .unwrap();
            let res = client.request(req).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes().len()
        };
        let (c1, c2) = (client.clone(), client.clone());
        let front = Router::new()
            .route(
                "/page",
                get(move || {
                    let c = c1.clone();
                    async move {
                        let a = fetch(c.clone(), "/data").await;
                        let b = fetch(c, "/data").await;
                        format!("{}", a + b)
                    }
                }),
            )
            .route(
                "/fan",
                get(move || {
                    let c = c2.clone();
                    async move {
                        let calls: Vec<_> = (0..5)
                            .map(|_| pagegen::spawn(fetch(c.clone(), "/slow")))
                            .collect();
                        let mut n = 0;
                        for call in calls {
                            n += call.await.unwrap();
                        }
                        format!("{n}")
                    }
                }),
            );
        let (front_addr, stop_front) = start(front, vec![]).await;

        let (s, _, body) = get_once(front_addr, "/page").await;
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"2000"[..]));

        // Five calls of one request's class, two at a time.
        let fan = pagegen::spawn(async move { get_once(front_addr, "/fan").await });
        gate.entered(2).await;
        let e = engine();
        let fan_class = e.classify("GET", Some("/fan")).0;
        assert_eq!(client.in_flight(fan_class), 2);
        gate.open(5);
        let (s, _, body) = fan.await.unwrap();
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"20"[..]));
        assert_eq!(most.load(Ordering::SeqCst), 2, "the class limit held");
        assert_eq!(client.in_flight(fan_class), 0);

        e.sync_records();
        let _ = stop_front.send(());
        let _ = stop_backend.send(());
        (e.classify("GET", Some("/page")).0, fan_class)
    });
    drop(rt);
    let records = stored_records(dir.path());
    let page = records.iter().find(|r| r.class == page_class).unwrap();
    assert_eq!(page.usage.net.requests, 2);
    assert_eq!(page.usage.net.bytes_in, 2000);
    assert_eq!(page.usage.net.bytes_out, 0);
    assert!(page.usage.net.latency_ns > 0);
    let fan = records.iter().find(|r| r.class == fan_class).unwrap();
    assert_eq!(fan.usage.net.requests, 5);
    assert_eq!(fan.usage.net.bytes_in, 20);
}
