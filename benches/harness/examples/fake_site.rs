//! A stand-in for the example site, speaking the agreed interface, so the harness can be run and
//! tested without building the real site (and CI's smoke run has a server that always builds):
//!
//! `fake_site --port 0 --state-dir DIR --workers N` prints `listening on http://127.0.0.1:PORT`
//! first, serves the site's routes on a plain tokio multi-thread runtime with handlers that do
//! their work inline (as a naive tokio service does), and exits on SIGTERM.
//!
//! Routes: `/`, `/fortunes`, `/product/{id}`, `/search?q=&limit=` (≈ 20 µs of CPU per result),
//! `/report/{year}` (allocates and touches ~6.4 MiB per year up to 2025), `/feed` (40 small file reads),
//! `/synthetic?cpu_us=&mem_kb=` (holds `mem_kb` while spinning `cpu_us`); anything else is 404.

use std::{
    convert::Infallible,
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn spin(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..64u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

fn hold(kb: u64, cpu: Duration) -> u64 {
    let mut v = vec![0u8; (kb * 1024) as usize];
    // Touch every page so the memory is resident, not just reserved.
    for i in (0..v.len()).step_by(4096) {
        v[i] = i as u8;
    }
    let x = spin(cpu);
    black_box(&v);
    x ^ v.len() as u64
}

fn query(uri: &hyper::Uri, key: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn page(title: &str, body: &str) -> String {
    format!("<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>")
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: PathBuf,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let uri = req.uri().clone();
    let path = uri.path();
    let (status, body) = if path == "/" {
        (StatusCode::OK, page("home", "<h1>Welcome</h1>"))
    } else if path == "/fortunes" {
        (
            StatusCode::OK,
            page(
                "Fortunes",
                "<table><tr><td>1</td><td>fortune: No such file or directory</td></tr></table>",
            ),
        )
    } else if let Some(id) = path.strip_prefix("/product/") {
        let x = spin(Duration::from_micros(50));
        (
            StatusCode::OK,
            page("product", &format!("<p>product {id} ({})</p>", x % 97)),
        )
    } else if path == "/search" {
        let limit = query(&uri, "limit").unwrap_or(10).min(1000);
        let x = spin(Duration::from_micros(20 * limit));
        (
            StatusCode::OK,
            page("search", &format!("<p>{limit} results ({})</p>", x % 7)),
        )
    } else if let Some(year) = path.strip_prefix("/report/") {
        // As the site: ~6.4 MiB per year from `year` to 2025.
        let mb = 2026u64
            .saturating_sub(year.parse::<u64>().unwrap_or(2025))
            .clamp(1, 36)
            * 64
            / 10;
        let x = hold(mb * 1024, Duration::from_millis(2));
        (
            StatusCode::OK,
            page(
                "report",
                &format!("<p>report {year}: {mb} MiB ({})</p>", x % 3),
            ),
        )
    } else if path == "/feed" {
        let mut n = 0;
        for i in 0..40 {
            n += std::fs::read(state.join(format!("feed-{i}.txt"))).map_or(0, |b| b.len());
        }
        (StatusCode::OK, page("feed", &format!("<p>{n} bytes</p>")))
    } else if path == "/synthetic" {
        let cpu = query(&uri, "cpu_us").unwrap_or(0).min(1_000_000);
        let kb = query(&uri, "mem_kb").unwrap_or(0).min(4 * 1024 * 1024);
        let x = hold(kb, Duration::from_micros(cpu));
        (
            StatusCode::OK,
            page(
                "synthetic",
                &format!("<p>{cpu} µs, {kb} KiB ({})</p>", x % 5),
            ),
        )
    } else {
        (StatusCode::NOT_FOUND, page("404", "not found"))
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut workers = 2usize;
    let mut state = std::env::temp_dir().join("fake_site");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--port" => port = v()?.parse()?,
            "--workers" => workers = v()?.parse()?,
            "--state-dir" => state = v()?.into(),
            // The site's runtime choice; the stand-in always runs plain tokio.
            "--runtime" => {
                v()?;
            }
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    std::fs::create_dir_all(&state)?;
    for i in 0..40 {
        std::fs::write(
            state.join(format!("feed-{i}.txt")),
            format!("item {i}\n").repeat(20),
        )?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(req, state.clone()));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
                _ = term.recv() => break,
            }
        }
        eprintln!("fake_site: SIGTERM, exiting");
        anyhow::Ok(())
    })?;
    // Open connections are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
