//! One request's profile holds every signal: CPU and scheduling, memory, file I/O, backend calls,
//! `tracing` spans, `spawn_blocking` time, checkpoints — and hardware counters where the kernel has
//! them (absent, with the reason said once, where it does not). Real work over real loopback HTTP.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use pagegen::core::{CheckpointLevel, Outcome, Resource};
use pagegen::http::Client;
use pagegen::runtime::{Builder, Config};
use tracing::Instrument;

mod support;

use support::{engine, get_once, start, stored_records};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

#[test]
fn one_page_request_carries_every_signal_of_the_behavioural_profile() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    for i in 0..4 {
        std::fs::write(
            files.path().join(format!("part{i}.html")),
            vec![b'a' + i; 8192],
        )
        .unwrap();
    }
    let rt = Builder::with_config(Config {
        workers: 2,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.path().to_path_buf(),
        perf_sample_every: 1,
        ..Config::default()
    })
    .build()
    .unwrap();
    let parts = Arc::new(files.path().to_path_buf());
    let class = rt.block_on(async move {
        let backend = Router::new().route("/price", get(|| async { "42.00" }));
        let (backend_addr, stop_backend) = start(backend, vec![]).await;
        let client: Client<Empty<Bytes>> = Client::<Empty<Bytes>>::builder().build();
        let page = move || {
            let (client, parts) = (client.clone(), parts.clone());
            async move {
                // Memory: a 4 MiB working set held across awaits.
                let mut scratch = vec![0u8; 4 << 20];
                // Files: four template parts through pagegen::fs.
                let mut html = Vec::new();
                for i in 0..4 {
                    let part = pagegen::fs::read(parts.join(format!("part{i}.html")))
                        .await
                        .unwrap();
                    html.extend_from_slice(&part[..16]);
                }
                // A backend call on loopback.
                let req = Request::get(format!("http://{backend_addr}/price"))
                    .body(Empty::new())
                    .unwrap();
                let res = client.request(req).await.unwrap();
                let price = res.into_body().collect().await.unwrap().to_bytes();
                // Blocking work (a database driver would be here).
                let sum = pagegen::spawn_blocking(|| (0..100_000u64).sum::<u64>())
                    .await
                    .unwrap();
                scratch[0] = sum as u8;
                let _escape = tracing::info_span!("escape").in_scope(|| html.len());
                format!(
                    "{} {} {}",
                    html.len(),
                    String::from_utf8_lossy(&price),
                    scratch[0]
                )
            }
            .instrument(tracing::info_span!("render"))
        };
        let app = Router::new().route("/page", get(page));
        let (addr, stop) = start(app, vec![]).await;
        let (s, _, body) = get_once(addr, "/page").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, format!("64 42.00 {}", 4_999_950_000u64 as u8));
        let e = engine();
        e.sync_records();
        let _ = (stop.send(()), stop_backend.send(()));
        e.classify("GET", Some("/page")).0
    });
    let counters = pagegen::profile::perf::supported();
    drop(rt);

    let records = stored_records(dir.path());
    let r = records
        .iter()
        .find(|r| r.class == class)
        .expect("its record");
    let u = &r.usage;
    assert_eq!(r.outcome, Outcome::Completed);
    assert!(r.predicted.is_some() && r.grant.is_some());
    // CPU and scheduling.
    assert!(u.cpu.cpu_ns > 0 && u.cpu.polls >= 2, "{:?}", u.cpu);
    assert!(u.cpu.wall_ns >= u.cpu.busy_ns);
    // Memory: the 4 MiB working set is in the peak.
    assert!(
        u.mem.peak_net_bytes >= 4 << 20,
        "{:?}",
        u.mem.peak_net_bytes
    );
    assert!(u.mem.allocs > 0);
    // Files: four reads of 8 KiB (opens and reads, per the file API's own ops).
    assert_eq!(u.io.read_bytes, 4 * 8192);
    assert!(u.io.total_ops() >= 4);
    assert_eq!(u.io.distinct_files, 4);
    // The backend call.
    assert_eq!((u.net.requests, u.net.bytes_in, u.net.bytes_out), (1, 5, 0));
    assert!(u.net.latency_ns > 0);
    // Spans: render and escape.
    assert_eq!(u.spans.spans, 2);
    // spawn_blocking.
    assert_eq!(u.cpu.blocking_calls, 1);
    assert!(u.cpu.blocking_ns > 0);
    // Checkpoints: the working set took the memory grant past half (the floor is 4 MiB × 1.5 of
    // a cold prediction, or more); whatever was reached is in the log, and the 4 MiB fit.
    let log = r.checkpoints;
    assert!(
        log.reached(Resource::Memory, CheckpointLevel::Half)
            || r.grant.unwrap().mem_hard >= 8 << 20,
        "{log:?} {:?}",
        r.grant
    );
    match counters {
        Some(true) => assert!(u.counters.unwrap().instructions > 0),
        Some(false) => {
            eprintln!("hardware counters: none on this machine (the record says so: absent)");
            assert_eq!(u.counters, None);
        }
        None => panic!("no worker tried to open counters"),
    }
}
