//! The Prometheus endpoint end to end: a runtime with `metrics_addr = 127.0.0.1:0`, an axum router
//! served by `pagegen::http::serve` over loopback, a few requests (completed, shed, cancelled), then
//! a real HTTP scrape of `/metrics`, parsed as OpenMetrics text and checked against the counters.
//! Assertions are on status codes, parsed values and exact counts — never on durations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper::StatusCode;
use pagegen::engine::Engine;
use pagegen::policy::Decision;
use pagegen::route::Route;
use pagegen::runtime::{Builder, Config, Runtime};

mod support;

use support::{engine, start, Gate};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

const MIB: u64 = 1 << 20;

fn config(dir: &std::path::Path) -> Config {
    Config {
        workers: 2,
        bulk_workers: 1,
        trainer: false,
        state_dir: dir.to_path_buf(),
        // Two 32 MiB budgets fit, a third does not.
        memory_pool: Some(64 * MIB),
        mem_floor: 32 * MIB,
        admission_wait: Duration::ZERO,
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    }
}

fn runtime(dir: &std::path::Path) -> Runtime {
    Builder::with_config(config(dir))
        .thread_name("metrics-test")
        .build()
        .unwrap()
}

/// One request to the metrics endpoint (or any server): status, `Content-Type`, body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (StatusCode, Option<String>, String) {
    let (status, headers, body) = support::send(addr, method, path).await;
    let ctype = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_once(addr: SocketAddr, path: &str) -> StatusCode {
    support::get_once(addr, path).await.0
}

/// Checks that every answered request has given its memory budget back.
async fn until_idle(e: &Engine) {
    // The loop releases a request's reservation before its response is written, so once a client
    // holds the answer nothing of that request is reserved any more: no waiting needed.
    assert_eq!(
        e.admission().memory().reserved(),
        0,
        "every answered request released its budget"
    );
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses OpenMetrics text strictly enough to catch a malformed exposition: `# HELP`/`# TYPE`/
/// `# UNIT` lines name a metric, every other line is `name{labels} value` (labels `k="v"`, comma
/// separated, `\\`, `\"`, `\n` escapes), each sample belongs to a family declared before it, and the
/// text ends with `# EOF` and a newline, with nothing after.
fn parse(text: &str) -> Vec<Sample> {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("no trailing `# EOF`:\n{text}"));
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        assert!(!line.is_empty(), "empty line in:\n{text}");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("bad comment {line:?}"));
            assert!(is_name(name), "bad metric name in {line:?}");
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    let ty = arg.unwrap_or_else(|| panic!("TYPE without a type: {line:?}"));
                    assert!(
                        ["counter", "gauge", "info", "histogram", "unknown"].contains(&ty),
                        "{line:?}"
                    );
                    families.insert(name.to_owned(), ty.to_owned());
                }
                Some("UNIT") => assert!(arg.is_some_and(|u| name.ends_with(u)), "{line:?}"),
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(is_name(name), "bad metric name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(l) = rest.strip_prefix('{') {
            let at = |i: usize| *l.as_bytes().get(i).unwrap_or_else(|| panic!("{line:?}"));
            let mut i = 0;
            while at(i) != b'}' {
                let eq = l[i..].find("=\"").unwrap_or_else(|| panic!("{line:?}")) + i;
                let key = &l[i..eq];
                assert!(is_name(key), "bad label name {key:?} in {line:?}");
                i = eq + 2;
                let mut value = String::new();
                loop {
                    match at(i) {
                        b'\\' => {
                            value.push(match at(i + 1) {
                                b'n' => '\n',
                                b'\\' => '\\',
                                b'"' => '"',
                                c => panic!("bad escape {:?} in {line:?}", c as char),
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => {
                            let c = l[i..].chars().next().unwrap();
                            value.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
                labels.insert(key.to_owned(), value);
                if at(i) == b',' {
                    i += 1;
                }
            }
            rest = &l[i + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        let family = ["_total", "_info", "_bucket", "_sum", "_count", ""]
            .iter()
            .find_map(|s| {
                let f = name.strip_suffix(s)?;
                families.contains_key(f).then_some(f)
            })
            .unwrap_or_else(|| panic!("sample {line:?} of no declared family"));
        match families[family].as_str() {
            "counter" => assert!(name.ends_with("_total") && value >= 0.0, "{line:?}"),
            "info" => assert!(name.ends_with("_info") && value == 1.0, "{line:?}"),
            "histogram" => {
                assert!(
                    name.ends_with("_sum")
                        || name.ends_with("_count")
                        || (name.ends_with("_bucket") && labels.contains_key("le")),
                    "{line:?}"
                )
            }
            _ => {}
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The samples named `name` whose labels include `with`.
fn find<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one sample named `name` with labels `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, with);
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:?}");
    found[0].value
}

#[test]
fn the_endpoint_serves_the_request_loop_counters_as_valid_openmetrics() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let metrics = rt.metrics_addr().expect("metrics_addr was set");
    assert!(metrics.ip().is_loopback());
    assert_ne!(metrics.port(), 0, "port 0 is resolved to the bound port");
    rt.block_on(async {
        let gate = Gate::new();
        let app = Router::new()
            .route(
                "/hello",
                get(|| async {
                    // Two calls of a traced function per request: the function-call profile.
                    for _ in 0..2 {
                        tracing::info_span!("greet").in_scope(|| std::hint::black_box(1));
                    }
                    "hi"
                }),
            )
            .route(
                "/stuck",
                get(|| async {
                    std::future::pending::<()>().await;
                    "never"
                }),
            )
            .route("/slow", get(gate.handler("done")));
        // Every route capped at the 32 MiB floor, so each budget is exactly 32 MiB.
        let routes = vec![
            Route::new("/hello").mem(32 * MIB),
            Route::new("/stuck")
                .mem(32 * MIB)
                .timeout(Duration::from_millis(50)),
            Route::new("/slow").mem(32 * MIB),
        ];
        let (addr, stop) = start(app, routes).await;
        let e = engine();

        // Two /slow requests fill the pool; a third is shed (503).
        let held: Vec<_> = (0..2)
            .map(|_| pagegen::spawn(async move { get_once(addr, "/slow").await }))
            .collect();
        gate.entered(2).await;
        assert_eq!(
            get_once(addr, "/slow").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        gate.open(2);
        for h in held {
            assert_eq!(h.await.unwrap(), StatusCode::OK);
        }
        until_idle(&e).await;
        // One request parked past its 50 ms timeout: cancelled (503).
        assert_eq!(
            get_once(addr, "/stuck").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        until_idle(&e).await;
        for _ in 0..3 {
            assert_eq!(get_once(addr, "/hello").await, StatusCode::OK);
        }
        until_idle(&e).await;
        e.sync_records();

        let (status, ctype, text) = request(metrics, "GET", "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(ctype.as_deref(), Some(pagegen::metrics::CONTENT_TYPE));
        let samples = parse(&text);

        let class_name = |path: &str| {
            let (id, _) = e.classify("GET", Some(path));
            e.registry().spec(id).unwrap().name.to_string()
        };
        let count = |path: &str, d: Decision| {
            let class = class_name(path);
            let with = [("class", class.as_str()), ("decision", d.name())];
            value(&samples, "pagegen_decisions_total", &with)
        };
        let expect = [
            (
                "/slow",
                vec![
                    (Decision::Admitted, 2.0),
                    (Decision::ShedMemory, 1.0),
                    (Decision::Completed, 2.0),
                    (Decision::CancelledDeadline, 0.0),
                    (Decision::Recorded, 3.0),
                ],
            ),
            (
                "/stuck",
                vec![
                    (Decision::Admitted, 1.0),
                    (Decision::ShedMemory, 0.0),
                    (Decision::Completed, 0.0),
                    (Decision::CancelledDeadline, 1.0),
                    (Decision::Recorded, 1.0),
                ],
            ),
            (
                "/hello",
                vec![
                    (Decision::Admitted, 3.0),
                    (Decision::ShedMemory, 0.0),
                    (Decision::Completed, 3.0),
                    (Decision::Failed, 0.0),
                    (Decision::Recorded, 3.0),
                ],
            ),
        ];
        for (path, counts) in &expect {
            for &(d, n) in counts {
                assert_eq!(count(path, d), n, "{path} {}\n{text}", d.name());
            }
            // Every decision has a series for an active class, and each agrees with the counters.
            let class = class_name(path);
            let all = find(&samples, "pagegen_decisions_total", &[("class", &class)]);
            assert_eq!(all.len(), Decision::ALL.len(), "{path}");
            let (id, _) = e.classify("GET", Some(path));
            for d in Decision::ALL {
                assert_eq!(
                    count(path, d),
                    e.decisions().class(id).get(d) as f64,
                    "{path} {}",
                    d.name()
                );
            }
            let with = [("class", class.as_str())];
            assert_eq!(value(&samples, "pagegen_outstanding_requests", &with), 0.0);
        }
        // Classes with nothing counted have no series.
        let classes: std::collections::BTreeSet<_> = find(&samples, "pagegen_decisions_total", &[])
            .iter()
            .map(|s| s.labels["class"].clone())
            .collect();
        let want: std::collections::BTreeSet<_> =
            expect.iter().map(|(p, _)| class_name(p)).collect();
        assert_eq!(classes, want);

        // Predicted against actual, per class: one observation per finished request.
        let hello = class_name("/hello");
        for kind in ["actual", "predicted"] {
            let with = [("class", hello.as_str()), ("kind", kind)];
            let n = value(&samples, "pagegen_request_cpu_seconds_count", &with);
            assert_eq!(n, 3.0, "{kind}");
            let inf = [("class", hello.as_str()), ("kind", kind), ("le", "+Inf")];
            assert_eq!(
                value(&samples, "pagegen_request_memory_bytes_bucket", &inf),
                3.0
            );
        }
        let by_class = [("class", hello.as_str())];
        assert_eq!(
            value(&samples, "pagegen_grant_memory_bytes_count", &by_class),
            3.0
        );
        assert_eq!(
            value(
                &samples,
                "pagegen_request_queue_delay_seconds_count",
                &by_class
            ),
            3.0
        );
        assert_eq!(value(&samples, "pagegen_model_version", &[]), 0.0);

        // `serve` installed pagegen's span layer (this program set no subscriber of its own).
        let span = [("class", hello.as_str()), ("span", "greet")];
        assert_eq!(value(&samples, "pagegen_span_calls_total", &span), 6.0);
        assert!(value(&samples, "pagegen_span_seconds_total", &span) > 0.0);

        let gauge = |name: &str, with: &[(&str, &str)]| value(&samples, name, with);
        assert_eq!(
            gauge("pagegen_memory_pool_capacity_bytes", &[]),
            (64 * MIB) as f64
        );
        assert_eq!(gauge("pagegen_memory_pool_reserved_bytes", &[]), 0.0);
        // The default `mem_reserve`, 10 % of the pool.
        assert_eq!(
            gauge("pagegen_memory_pool_small_reserve_bytes", &[]),
            (64 * MIB / 10) as f64
        );
        for (pool, n) in [("latency", 2.0), ("bulk", 1.0)] {
            let p = [("pool", pool)];
            assert_eq!(gauge("pagegen_pool_configured_workers", &p), n);
            assert_eq!(gauge("pagegen_pool_active_workers", &p), n);
            assert_eq!(gauge("pagegen_pool_parked_workers", &p), 0.0);
            assert_eq!(gauge("pagegen_pool_predicted_queue_delay_seconds", &p), 0.0);
        }
        assert_eq!(gauge("pagegen_refused_connections_total", &[]), 0.0);
        let serving = find(&samples, "pagegen_predictor_serving", &[]);
        assert_eq!(serving.len(), 4);
        assert_eq!(serving.iter().map(|s| s.value).sum::<f64>(), 1.0);
        assert!(gauge("pagegen_polls_total", &[]) > 0.0, "{text}");
        assert!(gauge("pagegen_long_polls_total", &[]) >= 0.0);
        for q in ["0.5", "0.9", "0.99", "0.999", "1"] {
            let v = gauge("pagegen_poll_busy_seconds", &[("quantile", q)]);
            assert!(v.is_finite() && v >= 0.0);
        }
        assert_eq!(find(&samples, "pagegen_poll_clock_info", &[]).len(), 1);

        // Other paths and methods.
        let (s, _, _) = request(metrics, "GET", "/").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = request(metrics, "POST", "/metrics").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let _ = stop.send(());
    });
    drop(rt);
    // The endpoint stops with the runtime.
    assert!(std::net::TcpStream::connect(metrics).is_err());
}

#[test]
fn metrics_are_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Builder::with_config(Config {
        metrics_addr: None,
        ..config(dir.path())
    })
    .build()
    .unwrap();
    assert_eq!(Config::default().metrics_addr, None);
    assert_eq!(rt.metrics_addr(), None);
}

#[test]
fn the_knob_parses_and_a_bad_address_is_a_startup_error_naming_it() {
    let mut c = Config::default();
    c.apply_toml("metrics_addr = \"127.0.0.1:0\"").unwrap();
    assert_eq!(c.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
    c.apply_toml("metrics_addr = 9464").unwrap();
    assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    for bad in [
        "metrics_addr = \"metrics.example.com:9464\"",
        "metrics_addr = \"1.2.3\"",
    ] {
        let e = c.apply_toml(bad).unwrap_err();
        assert!(e.to_string().contains("`metrics_addr`"), "{bad}: {e}");
    }

    // An address that cannot be bound (taken) fails the build, naming the knob.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = Builder::with_config(config(dir.path()))
        .metrics_addr(taken.local_addr().unwrap())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("`metrics_addr`"), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}
