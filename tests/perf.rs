//! The instruction mix in request profiles: present where the kernel has hardware counters,
//! absent (never zero) where it has none — this machine's case when it is a VM without a PMU.

use axum::routing::get;
use axum::Router;
use hyper::StatusCode;
use pagegen::runtime::{Builder, Config};

mod support;

use support::{engine, get_once, start, stored_records};

#[test]
fn requests_carry_hardware_counters_where_the_kernel_has_them_and_none_where_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        workers: 1,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.path().to_path_buf(),
        // Every poll measured, so even a one-poll request has counts.
        perf_sample_every: 1,
        ..Config::default()
    };
    let rt = Builder::with_config(cfg).build().unwrap();
    let class = rt.block_on(async {
        let app = Router::new().route(
            "/sum",
            get(|| async {
                let s: u64 = (0..200_000u64).map(std::hint::black_box).sum();
                s.to_string()
            }),
        );
        let (addr, stop) = start(app, vec![]).await;
        for _ in 0..3 {
            let (s, _, body) = get_once(addr, "/sum").await;
            assert_eq!((s, &body[..]), (StatusCode::OK, &b"19999900000"[..]));
        }
        let e = engine();
        e.sync_records();
        let _ = stop.send(());
        e.classify("GET", Some("/sum")).0
    });
    let supported = pagegen::profile::perf::supported();
    drop(rt);
    let records = stored_records(dir.path());
    let ours: Vec<_> = records.iter().filter(|r| r.class == class).collect();
    assert_eq!(ours.len(), 3);
    match supported {
        Some(true) => {
            for r in &ours {
                let c = r.usage.counters.expect("counted on every poll");
                assert!(c.instructions >= 200_000, "{c:?}");
                assert!(c.cycles > 0, "{c:?}");
            }
        }
        Some(false) => {
            eprintln!(
                "skipped the supported path: this machine has no hardware counters \
                 (the unsupported path was checked instead)"
            );
            assert!(ours.iter().all(|r| r.usage.counters.is_none()));
            assert!(pagegen::profile::perf::open_for_thread().is_err());
        }
        None => panic!("the workers never tried to open counters"),
    }
}
