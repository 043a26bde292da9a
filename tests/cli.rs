//! The `pagegen` binary on real state directories: missing, written by a real run over loopback
//! HTTP, with a corrupt class registry, and an export → import round trip.

use std::path::Path;
use std::process::{Command, Output};

use axum::routing::get;
use axum::Router;
use hyper::StatusCode;
use pagegen::runtime::{Builder, Config};

mod support;

use support::{get_once, start};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

fn pagegen(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pagegen"))
        .args(args)
        .env_remove("PAGEGEN_STATE_DIR")
        .output()
        .expect("the pagegen binary runs");
    eprintln!(
        "pagegen {args:?}: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Serves two routes on a runtime over `dir`, 12 requests to one and 8 to the other, and shuts it
/// down (records flushed, lock released).
fn real_run(dir: &Path) {
    let rt = Builder::with_config(Config {
        state_dir: dir.to_path_buf(),
        trainer: false,
        workers: 1,
        bulk_workers: 1,
        ..Config::default()
    })
    .build()
    .unwrap();
    rt.block_on(async {
        let app = Router::new()
            .route(
                "/hello",
                get(|| async {
                    // Two traced calls per request: the function-call profile.
                    tracing::info_span!("greet").in_scope(|| {});
                    tracing::info_span!("greet").in_scope(|| {});
                    "hello"
                }),
            )
            .route(
                "/heap",
                get(|| async {
                    vec![7u8; 1 << 20]
                        .iter()
                        .map(|&b| b as usize)
                        .sum::<usize>()
                        .to_string()
                }),
            );
        let (addr, stop) = start(app, vec![]).await;
        for _ in 0..12 {
            assert_eq!(get_once(addr, "/hello").await.0, StatusCode::OK);
        }
        for _ in 0..8 {
            assert_eq!(get_once(addr, "/heap").await.0, StatusCode::OK);
        }
        pagegen::engine::Engine::current().unwrap().sync_records();
        let _ = stop.send(());
    });
    drop(rt);
}

#[test]
fn a_missing_state_directory_is_an_empty_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never-ran");
    let d = dir.to_str().unwrap();
    let out = pagegen(&["profile", "--state-dir", d]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nothing learned"));
    let out = pagegen(&["profile", "--state-dir", d, "--json"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(r#""classes":[]"#));
    assert!(!dir.exists(), "profile creates nothing");
}

/// The `"name":"…"` object of `json`'s classes array, as text up to its last field (the
/// `behaviour` object).
fn class_json<'a>(json: &'a str, name: &str) -> &'a str {
    let start = json
        .find(&format!(r#""name":"{name}""#))
        .unwrap_or_else(|| panic!("class {name} in {json}"));
    let end = json[start..].find("\"extension_refused\"").unwrap() + start;
    &json[start..end]
}

#[test]
fn the_profile_of_a_real_run_counts_each_route() {
    let tmp = tempfile::tempdir().unwrap();
    real_run(tmp.path());
    let d = tmp.path().to_str().unwrap();
    let listing = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    let before = (listing(tmp.path()), listing(&tmp.path().join("profiles")));

    let out = pagegen(&["profile", "--state-dir", d, "--json"]);
    assert!(out.status.success());
    let json = text(&out.stdout);
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
    let hello = class_json(&json, "GET /hello");
    assert!(hello.contains(r#""requests":12,"#), "{hello}");
    assert!(hello.contains(r#""completed":12,"#), "{hello}");
    // Every request was granted, and a light route starts on the latency workers.
    assert!(
        hello.contains(r#""granted":12,"started_bulk":0,"#),
        "{hello}"
    );
    assert!(
        hello.contains(r#""behaviour":{"spans":{"p50":2,"p99":2}"#),
        "{hello}"
    );
    // Its connection's traffic: each request received its head and sent its response.
    let socket_p50 = |field: &str| -> u64 {
        let key = format!(r#""{field}":{{"p50":"#);
        let at = hello
            .find(&key)
            .unwrap_or_else(|| panic!("{key} in {hello}"))
            + key.len();
        let digits: String = hello[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    assert!(socket_p50("socket_bytes_in") > 0, "{hello}");
    assert!(
        socket_p50("socket_bytes_out") > "hello".len() as u64,
        "{hello}"
    );
    // A fresh state directory has no model yet: the EWMA predicted every request.
    assert!(
        hello.contains(r#""by_predictor":[{"predictor":"ewma","requests":12,"#),
        "{hello}"
    );
    let heap = class_json(&json, "GET /heap");
    assert!(heap.contains(r#""requests":8,"#), "{heap}");
    assert!(heap.contains(r#""spans":{"p50":0,"p99":0}"#), "{heap}");

    // Per request: one JSON line each, with its class, predictor, grant and usage.
    let out = pagegen(&["profile", "--state-dir", d, "--records"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let stored = {
        let at = json.find(r#""records":"#).unwrap() + r#""records":"#.len();
        let digits: String = json[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().unwrap()
    };
    assert_eq!(lines.len(), stored, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')));
    let of = |class: &str| -> Vec<&str> {
        let key = format!(r#""class":"{class}""#);
        lines.iter().copied().filter(|l| l.contains(&key)).collect()
    };
    let hello = of("GET /hello");
    assert_eq!(hello.len(), 12, "{stdout}");
    for l in &hello {
        assert!(l.contains(r#""outcome":"completed""#), "{l}");
        assert!(l.contains(r#""predictor":"ewma""#), "{l}");
        assert!(l.contains(r#""grant":{"pool":"latency""#), "{l}");
        assert!(l.contains(r#""used":{"cpu_ns":"#), "{l}");
    }
    assert_eq!(of("GET /heap").len(), 8, "{stdout}");

    // Beside a live holder of the directory's lock, as beside a running server.
    let held = pagegen::model::StateDir::open(tmp.path()).unwrap();
    let out = pagegen(&["profile", "--state-dir", d]);
    drop(held);
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.contains("GET /hello") && table.contains("GET /heap"));
    assert!(table.contains("LAST RECORDED grant") && table.contains("in bulk"));
    assert!(table.contains("spans/req") && table.contains("extended"));
    assert!(table.contains("socket in") && table.contains("socket out"));
    assert!(table.contains("by predictor") && table.contains("ewma"));

    let after = (listing(tmp.path()), listing(&tmp.path().join("profiles")));
    assert_eq!(
        before, after,
        "profile changes nothing in the state directory"
    );
}

#[test]
fn a_corrupt_registry_is_reported_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = tmp.path().join("classes");
    let junk = b"pagegen-classes 1\n1\tGET /a\n1\tGET /again\n";
    std::fs::write(&classes, junk).unwrap();
    let out = pagegen(&["profile", "--state-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(classes.to_str().unwrap()));
    assert_eq!(std::fs::read(&classes).unwrap(), junk);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "nothing moved aside"
    );
}

#[test]
fn export_then_import_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    let file = tmp.path().join("model.safetensors");
    let f = file.to_str().unwrap();
    let out = pagegen(&["export", f, "--state-dir", a.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(file.exists());
    let out = pagegen(&["import", f, "--state-dir", b.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(b.join("model.safetensors").exists());

    // A directory in use is refused, and says why.
    let held = pagegen::model::StateDir::open(&b).unwrap();
    let out = pagegen(&["import", f, "--state-dir", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("in use"));
    drop(held);

    // A bad file changes nothing.
    std::fs::write(&file, b"junk").unwrap();
    let out = pagegen(&["import", f, "--state-dir", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

/// Writes `n` records of two classes whose CPU and memory follow a query parameter into `dir`'s
/// profile store, as a runtime's completions would.
fn recorded(dir: &Path, n: u64) {
    use pagegen::core::{ClassId, ProfileRecord, RealClock, Usage};
    let model = pagegen::model::ModelRuntime::open(
        pagegen::model::StateDir::open(dir).unwrap(),
        std::sync::Arc::new(RealClock::new()),
        pagegen::model::ModelConfig::default(),
    )
    .unwrap();
    for i in 0..n {
        let class = ClassId::from_raw(1 + (i % 2) as u32);
        let pages = 1 + (i * 7919) % 50;
        let mut u = Usage::default();
        u.cpu.cpu_ns = 10_000 * pages * (1 + 2 * (i % 2));
        u.mem.peak_net_bytes = 4096 * pages as i64;
        let mut r = ProfileRecord::new(i, class, u);
        r.started_unix_ms = i * 10;
        r.features = pagegen::model::features::extract(
            class,
            "/list",
            Some(&format!("pages={pages}")),
            0,
            2,
        );
        model.record(&r);
    }
    model.flush().unwrap();
}

#[test]
fn train_checkpoints_a_promoted_model_and_says_when_it_cannot_train() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("never-ran");
    let out = pagegen(&["train", "--state-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no state directory"));

    // A real run's 20 records are too few for a round: nothing is written.
    let small = tmp.path().join("small");
    real_run(&small);
    let out = pagegen(&["train", "--state-dir", small.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("round 1: too few records to train"));
    assert!(text(&out.stdout).contains("serves the EWMA"));
    assert!(!small.join("model.safetensors").exists());

    // Records whose demand follows a feature: the trained model beats the per-class baselines and
    // is checkpointed, so a runtime opened there starts on it.
    let dir = tmp.path().join("trained");
    recorded(&dir, 1200);
    let d = dir.to_str().unwrap();
    let held = pagegen::model::StateDir::open(&dir).unwrap();
    let out = pagegen(&["train", "--state-dir", d]);
    assert_eq!(out.status.code(), Some(1), "a directory in use is refused");
    assert!(text(&out.stderr).contains("in use"));
    drop(held);
    let out = pagegen(&["train", "--rounds", "2", "--state-dir", d]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("training rows").count(), 2, "{stdout}");
    assert!(stdout.contains("round 1: ") && stdout.contains("→ promoted; serves recurrent"));
    assert!(stdout.contains("checkpoint written"));
    let model = pagegen::model::ModelRuntime::open(
        pagegen::model::StateDir::open(&dir).unwrap(),
        std::sync::Arc::new(pagegen::core::RealClock::new()),
        pagegen::model::ModelConfig::default(),
    )
    .unwrap();
    assert_eq!(model.start, pagegen::model::checkpoint::Start::Loaded);
    assert_eq!(
        model.predictor().serving(),
        pagegen::model::Serving::Recurrent
    );
}
