//! An axum app moved from tokio to pagegen: `#[tokio::main]` → `#[pagegen::main]`,
//! `axum::serve` → `pagegen::http::serve`, and `#[pagegen::route]` on the handlers whose budgets
//! the user knows. Every request is then classified by its route, predicted, granted, admitted,
//! run in its class and pool, enforced and recorded for the model.
//!
//! It serves itself a few rounds of three routes — a light page, a report that allocates, and a
//! report over its memory budget (cancelled with a 503) — prints what the loop decided and learned,
//! and exits. `PAGEGEN_STATE_DIR` (default `./.pagegen`) keeps class ids and profiles across runs.
//!
//! Run: `cargo run --release --example axum`

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use pagegen::policy::Decision;

/// The home page: light.
async fn home() -> &'static str {
    "<h1>shop</h1>"
}

/// A yearly report: allocates ~1 MiB per month of data, across awaits (a real report would await
/// its database between months).
#[pagegen::route(path = "/report/{year}", mem = "64MiB", timeout = "2s")]
async fn report(Path(year): Path<u32>) -> String {
    let months = if year >= 2000 { 12 } else { 120 };
    let mut rows = Vec::new();
    for m in 0..months {
        rows.push(vec![(year as u8).wrapping_add(m as u8); 1 << 20]);
        pagegen::task::yield_now().await;
    }
    format!(
        "report {year}: {} months, {} bytes",
        rows.len(),
        rows.len() << 20
    )
}

#[pagegen::main(workers = 2)]
async fn main() -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(home))
        .route("/report/{year}", get(report));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = pagegen::http::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let server = pagegen::spawn(std::future::IntoFuture::into_future(server));

    let client = hyper_util::client::legacy::Client::builder(pagegen::rt::HyperExecutor)
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    for round in 0..10 {
        for path in ["/", "/report/2024", "/report/1999"] {
            let res = client.get(format!("http://{addr}{path}").parse()?).await?;
            if round == 9 {
                println!("GET {path} -> {}", res.status());
            }
        }
    }
    let _ = stop_tx.send(());
    server.await??;

    let engine = pagegen::engine::Engine::current().expect("inside #[pagegen::main]");
    engine.sync_records();
    let d = engine.decisions().snapshot();
    println!(
        "decisions: {} completed, {} cancelled over their memory budget, {} shed, {} recorded",
        d.get(Decision::Completed),
        d.get(Decision::CancelledMemory),
        d.shed(),
        d.get(Decision::Recorded)
    );
    let (class, spec) = engine.classify("GET", Some("/report/{year}"));
    let f = pagegen::model::features::extract(class, "/report/2024", None, 0, 1);
    let demand = engine.predict(class, &f);
    let grant = engine.grant_for(class, &spec, &f);
    println!(
        "learned for /report/{{year}}: peak ~{} KiB (upper {} KiB); next grant {} KiB of memory, pool {}",
        demand.peak_bytes.central >> 10,
        demand.peak_bytes.upper >> 10,
        grant.mem_hard >> 10,
        grant.pool.0
    );
    Ok(())
}
