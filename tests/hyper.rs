//! A hyper server and client on pagegen: what moving a service from `#[tokio::main]` looks like.

use std::convert::Infallible;
use std::sync::mpsc;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::rt::Executor;
use hyper::{Request, Response};
use pagegen::core::{ClassId, Grant, RequestCtx, RequestId};
use pagegen::rt::{HyperExecutor, TokioIo};

async fn page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Handlers run inside pagegen tasks, with a request context current.
    let in_ctx = RequestCtx::with_current(|c| c.is_some());
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{} ctx={in_ctx}",
        req.uri().path()
    )))))
}

#[pagegen::test(workers = 2)]
async fn hyper_http1_round_trips_on_pagegen() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = pagegen::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            HyperExecutor.execute(async move {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(page))
                    .await
                    .unwrap();
            });
        }
    });
    for path in ["/", "/search"] {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        pagegen::spawn(conn);
        let res = tx
            .send_request(Request::get(path).body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert!(res.status().is_success());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], format!("{path} ctx=true").as_bytes());
    }
    server.await.unwrap();
}

#[test]
fn hyper_executor_spawns_on_pagegen_and_inherits_the_context() {
    let rt = pagegen::runtime::Builder::new()
        .temporary_state()
        .trainer(false)
        .workers(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let ctx = RequestCtx::new(RequestId(9), Grant::unlimited(ClassId::from_raw(2)), 0);
    rt.handle().spawn_with_ctx(ctx, async move {
        HyperExecutor::new().execute(async move {
            let on_worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("pagegen-latency"));
            tx.send((on_worker, RequestCtx::current().map(|c| c.id())))
                .unwrap();
        });
    });
    assert_eq!(rx.recv().unwrap(), (true, Some(RequestId(9))));
}
