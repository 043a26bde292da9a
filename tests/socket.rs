//! Each request's profile holds its own socket traffic: the head and body it received and the
//! response it sent on its connection, not its neighbours' on the same keep-alive connection —
//! over real loopback HTTP, on both I/O backends (the readiness backend in a child process, since
//! the backend is chosen once per process).

use std::process::Command;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use pagegen::core::{Outcome, SocketUsage};
use pagegen::rt::TokioIo;
use pagegen::runtime::{Builder, Config};

mod support;

use support::{engine, start, stored_records};

const UPLOAD: usize = 100 * 1024;
const PAGE: usize = 200 * 1024;
/// Room for a request's or response's head (hyper's are under 200 bytes here).
const HEAD: u64 = 1024;

#[test]
fn each_request_is_charged_its_own_socket_traffic() {
    let forced = std::env::var_os(pagegen_io::ENV_VAR).is_some();
    if forced {
        assert_eq!(
            pagegen_io::Io::global().backend(),
            pagegen_io::Backend::Blocking
        );
    }
    eprintln!("backend: {}", pagegen_io::Io::global().backend());
    let dir = tempfile::tempdir().unwrap();
    let rt = Builder::with_config(Config {
        workers: 2,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .build()
    .unwrap();
    let (upload, page) = rt.block_on(async {
        let app = Router::new()
            .route(
                "/upload",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/page", get(|| async { "p".repeat(PAGE) }));
        let (addr, stop) = start(app, vec![]).await;
        // One keep-alive connection, two requests, one after the other.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = pagegen::spawn(conn);
        let req = Request::post("/upload")
            .header("host", addr.to_string())
            .body(Full::new(Bytes::from(vec![b'u'; UPLOAD])))
            .unwrap();
        let res = tx.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, UPLOAD.to_string());
        // hyper's client refuses a request until the connection has finished the last exchange
        // and asked for another; waiting for that is its documented use, not a workaround.
        tx.ready().await.unwrap();
        let req = Request::get("/page")
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = tx.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), PAGE);
        // Closing the connection ends the last response's accounting, if the server's next read
        // has not already.
        drop(tx);
        conn.await.unwrap().unwrap();
        let e = engine();
        e.sync_records();
        let _ = stop.send(());
        (
            e.classify("POST", Some("/upload")).0,
            e.classify("GET", Some("/page")).0,
        )
    });
    drop(rt);
    let records = stored_records(dir.path());
    let socket_of = |class| -> SocketUsage {
        let r = records
            .iter()
            .find(|r| r.class == class)
            .expect("its record");
        assert_eq!(r.outcome, Outcome::Completed);
        r.usage.socket
    };
    let up = socket_of(upload);
    let pg = socket_of(page);
    // The upload received its head and its 100 KiB body, and sent a short answer.
    assert!(
        up.bytes_in >= UPLOAD as u64 && up.bytes_in < UPLOAD as u64 + HEAD,
        "{up:?}"
    );
    assert!(up.recv_ops >= 1, "{up:?}");
    assert!(up.bytes_out > 0 && up.bytes_out < HEAD, "{up:?}");
    assert!(up.send_ops >= 1, "{up:?}");
    // The page received only its own head, and sent its 200 KiB.
    assert!(pg.bytes_in > 0 && pg.bytes_in < HEAD, "{pg:?}");
    assert!(
        pg.bytes_out >= PAGE as u64 && pg.bytes_out < PAGE as u64 + HEAD,
        "{pg:?}"
    );
    assert!(pg.send_ops >= 1, "{pg:?}");
}

#[test]
fn each_request_is_charged_its_own_socket_traffic_on_the_readiness_backend() {
    if std::env::var_os(pagegen_io::ENV_VAR).is_some() {
        return; // The child run of the test above.
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "each_request_is_charged_its_own_socket_traffic",
            "--test-threads=1",
        ])
        .env(pagegen_io::ENV_VAR, "blocking")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
