//! The example shop (`examples/site`) end to end: started in-process on 127.0.0.1:0 on pagegen and
//! on tokio, every route requested over real loopback HTTP, and the answers checked against the
//! generated data (status codes, content types and bytes; never durations).
//!
//! The site's modules are included as they are (`#[path]`), with pagegen's global allocator as
//! the `site` binary installs it, so pagegen can account and cap each request's memory.

#[path = "../examples/site/app.rs"]
mod app;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use app::{Allocator, Options, Variant};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

/// A small catalog: the pages do the same kind of work, faster in a debug build.
const PRODUCTS: u32 = 300;

/// A site running on a thread of its own until dropped.
struct Running {
    addr: SocketAddr,
    state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(variant: Variant) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let opts = Options {
            variant,
            port: 0,
            workers: 2,
            state_dir: state_dir.clone(),
            products: PRODUCTS,
            metrics: None,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            app::server::run(&opts, |r| ready_tx.send(r.addr).unwrap(), async {
                let _ = stopped.await;
            })
        });
        let addr = match ready_rx.recv() {
            Ok(addr) => addr,
            // The sender dropped without a word: `run` failed; say why.
            Err(_) => panic!("the site did not start: {:?}", thread.join()),
        };
        Running {
            addr,
            state_dir,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }

    fn data(&self) -> PathBuf {
        self.state_dir.join("site")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.expect("the site thread panicked")
                    .expect("the site stopped with an error");
            }
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
    fn html(&self) -> &str {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        self.text()
    }
}

/// One GET over a fresh HTTP/1.1 connection, read to its end.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    // Only a guard against a hung test; never an assertion.
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// HTML escaping as askama does it (numeric character references).
fn escape(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// What TechEmpower's verifier does to a Fortunes page before comparing it: whitespace-only text
/// between tags dropped, the doctype lower-cased, character references in one spelling.
fn normalize(html: &str) -> String {
    let html = html
        .replace("<!DOCTYPE", "<!doctype")
        .replace("&#60;", "&lt;")
        .replace("&#62;", "&gt;")
        .replace("&#34;", "&quot;")
        .replace("&#39;", "&apos;")
        .replace("&#38;", "&amp;");
    let mut out = String::new();
    let mut pending = String::new();
    for c in html.chars() {
        if c.is_whitespace() && (out.ends_with('>') || !pending.is_empty()) {
            pending.push(c);
            continue;
        }
        if c != '<' {
            out.push_str(&pending);
        }
        pending.clear();
        out.push(c);
    }
    out
}

/// The verifier's expected Fortunes page (TechEmpower FrameworkBenchmarks, `valid_fortune` of
/// `toolset/test_types/fortune/fortune_html_parser.py`, BSD-3-Clause), in its normalized form.
const EXPECTED_FORTUNES: &str = "<!doctype html><html>
<head><title>Fortunes</title></head>
<body><table>
<tr><th>id</th><th>message</th></tr>
<tr><td>11</td><td>&lt;script&gt;alert(&quot;This should not be displayed in a browser alert box.&quot;);&lt;/script&gt;</td></tr>
<tr><td>4</td><td>A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1</td></tr>
<tr><td>5</td><td>A computer program does what you tell it to do, not what you want it to do.</td></tr>
<tr><td>2</td><td>A computer scientist is someone who fixes things that aren&apos;t broken.</td></tr>
<tr><td>8</td><td>A list is only as strong as its weakest link. — Donald Knuth</td></tr>
<tr><td>0</td><td>Additional fortune added at request time.</td></tr>
<tr><td>3</td><td>After enough decimal places, nobody gives a damn.</td></tr>
<tr><td>7</td><td>Any program that runs right is obsolete.</td></tr>
<tr><td>10</td><td>Computers make very fast, very accurate mistakes.</td></tr>
<tr><td>6</td><td>Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen</td></tr>
<tr><td>9</td><td>Feature: A bug with seniority.</td></tr>
<tr><td>1</td><td>fortune: No such file or directory</td></tr>
<tr><td>12</td><td>フレームワークのベンチマーク</td></tr>
</table></body></html>";

/// The verifier's file, where the shared data sits beside the repository.
fn expected_fortunes_file() -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/tfb-fortunes/expected_fortunes_normalized.html");
    std::fs::read_to_string(p).ok()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The number in `prefix<number>`.
fn number_after(haystack: &str, prefix: &str) -> u64 {
    let at = haystack
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?}"))
        + prefix.len();
    haystack[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The routes both runtimes answer alike.
fn check_common_routes(site: &Running) {
    // `/`: light, from the in-memory catalog.
    let r = site.get("/");
    assert!(
        r.html()
            .contains(&format!("{PRODUCTS} products in 12 categories.")),
        "{}",
        r.text()
    );

    // `/product/{id}`: the database row and the description file.
    let id = 7;
    let db = rusqlite::Connection::open(site.data().join("shop.db")).unwrap();
    let (name, price_cents, stock): (String, i64, i64) = db
        .query_row(
            "SELECT name, price_cents, stock FROM product WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let description =
        std::fs::read_to_string(site.data().join(format!("products/{id}.txt"))).unwrap();
    let r = site.get(&format!("/product/{id}"));
    let page = r.html();
    assert!(
        page.contains(&format!("<h1>{}</h1>", escape(&name))),
        "{page}"
    );
    assert!(page.contains(&format!(
        "<p class=\"price\">${}.{:02}</p>",
        price_cents / 100,
        price_cents % 100
    )));
    assert!(page.contains(&format!("<dd class=\"stock\">{stock}</dd>")));
    assert!(page.contains(&format!(
        "<div class=\"description\">{}</div>",
        escape(&description)
    )));
    assert!(page.contains("<svg"), "the picture is inlined");
    assert_eq!(site.get("/product/0").status, 404);
    assert_eq!(site.get(&format!("/product/{}", PRODUCTS + 1)).status, 404);

    // `/search`: as many results as the limit allows.
    let hits = |limit: usize| {
        let r = site.get(&format!("/search?q=steel+kettle&limit={limit}"));
        let page = r.html().to_owned();
        let summary = &page[page.find("<p class=\"count\">").unwrap()..];
        (
            count(&page, "<li class=\"hit\">"),
            number_after(summary, " of ") as usize,
        )
    };
    let (five, matched) = hits(5);
    let (fifteen, _) = hits(15);
    let (all, _) = hits(1000);
    assert!(matched > 15, "{matched} products match");
    assert_eq!((five, fifteen, all), (5, 15, matched));
    let r = site.get("/search?q=%3Cscript%3E");
    assert!(
        r.html().contains("value=\"&#60;script&#62;\""),
        "the query is escaped"
    );

    // `/report/{year}`: one line per category and year, more years more bytes.
    let report = |year: u32| {
        let r = site.get(&format!("/report/{year}"));
        let page = r.html().to_owned();
        assert_eq!(
            count(&page, "<tr><td>") as u32,
            12 * (2025 - year + 1),
            "{page}"
        );
        page.len()
    };
    // The longer span first: on pagegen the first report is granted its annotation's 160 MiB and
    // later ones what was learned from the earlier, so this order does not depend on a checkpoint
    // extending a budget learned from a shorter span.
    let six = report(2020);
    let two = report(2024);
    assert!(six > two, "{six} bytes for six years, {two} for two");
    assert_eq!(site.get("/report/1989").status, 404);

    // `/feed`: forty products, each teaser the first sentence of its file.
    let r = site.get("/feed");
    let page = r.html();
    assert_eq!(count(page, "<li class=\"item\">"), 40);
    let first_id = number_after(page, "<li class=\"item\"><a href=\"/product/");
    let text =
        std::fs::read_to_string(site.data().join(format!("products/{first_id}.txt"))).unwrap();
    let teaser = &text[..=text.find(". ").unwrap_or(text.len() - 1)];
    assert!(page.contains(&escape(teaser)), "{page}");

    // `/fortunes`: TechEmpower's page, exactly.
    let r = site.get("/fortunes");
    assert_eq!(normalize(r.html()), normalize(EXPECTED_FORTUNES));

    // `/synthetic`: at least the CPU asked for, the memory asked for, held across a yield.
    let r = site.get("/synthetic?cpu_us=3000&mem_kb=2048");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(number_after(body, "cpu_us=") >= 3000, "{body}");
    assert_eq!(number_after(body, "mem_kb="), 2048, "{body}");
    assert!(number_after(body, "yields=") >= 1, "{body}");
    assert_eq!(site.get("/synthetic?mem_kb=99999999").status, 400);
    assert_eq!(site.get("/no/such/page").status, 404);
}

#[test]
fn pagegen_serves_every_route_and_cancels_a_report_over_its_budget() {
    let site = Running::start(Variant::Pagegen);
    check_common_routes(&site);
    // From 1990 a report holds ~230 MiB of cubes, over its 160 MiB cap: cancelled, 503.
    let r = site.get("/report/1990");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // And the site goes on serving.
    assert_eq!(site.get("/").status, 200);
}

#[test]
fn tokio_serves_the_same_pages_without_a_cap() {
    let site = Running::start(Variant::Tokio);
    check_common_routes(&site);
    // No memory cap on tokio: the whole span is computed.
    let r = site.get("/report/1990");
    assert_eq!(count(r.html(), "<tr><td>"), 12 * 36);
}

#[test]
fn tokio_limits_serves_within_its_limits() {
    let site = Running::start(Variant::TokioLimits);
    for path in [
        "/",
        "/product/3",
        "/search?q=oak",
        "/report/2025",
        "/feed",
        "/fortunes",
    ] {
        assert_eq!(site.get(path).status, 200, "{path}");
    }
    assert_eq!(app::server::limit("/search", 2), Some(4));
    assert_eq!(app::server::limit("/", 2), None);
}

#[test]
fn pinned_pagegen_variants_serve_and_still_cap_the_report() {
    for variant in [Variant::PagegenEwma, Variant::PagegenStatic] {
        let site = Running::start(variant);
        for path in ["/", "/product/3", "/search?q=oak", "/feed", "/fortunes"] {
            assert_eq!(site.get(path).status, 200, "{variant:?} {path}");
        }
        assert_eq!(site.get("/report/1990").status, 503, "{variant:?}");
    }
}

#[test]
fn the_fortunes_expected_here_are_techempowers() {
    if let Some(file) = expected_fortunes_file() {
        assert_eq!(normalize(&file), normalize(EXPECTED_FORTUNES));
    }
    // The escaping the test assumes is askama's.
    assert_eq!(
        escape("<a href=\"x\">it's</a>"),
        "&#60;a href=&#34;x&#34;&#62;it&#39;s&#60;/a&#62;"
    );
}

#[test]
fn each_binary_runs_the_runtimes_of_its_allocator() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = app::parse(Allocator::Pagegen, &args(&[])).unwrap();
    assert_eq!((o.variant, o.port, o.workers), (Variant::Pagegen, 3000, 2));
    let o = app::parse(
        Allocator::Pagegen,
        &args(&["--runtime", "pagegen-static", "--port=0", "--workers", "4"]),
    )
    .unwrap();
    assert_eq!(
        (o.variant, o.port, o.workers),
        (Variant::PagegenStatic, 0, 4)
    );
    assert_eq!(
        app::parse(Allocator::Jemalloc, &args(&[])).unwrap().variant,
        Variant::Tokio
    );
    let (msg, code) = app::parse(Allocator::Pagegen, &args(&["--runtime", "tokio"])).unwrap_err();
    assert_eq!(code, 2);
    assert!(
        msg.contains("cargo run --release --example site_jemalloc -- --runtime tokio"),
        "{msg}"
    );
    let (_, code) = app::parse(Allocator::System, &args(&["--bogus", "1"])).unwrap_err();
    assert_eq!(code, 2);

    let ready = app::Ready {
        addr: "127.0.0.1:4321".parse().unwrap(),
        metrics: None,
        products: 5,
        generated: None,
        knobs: Some(("model", "outstanding")),
        serving: Some("recurrent (trained checkpoint loaded)".into()),
    };
    let o = app::parse(Allocator::Pagegen, &args(&[])).unwrap();
    let banner = app::banner(&o, Allocator::Pagegen, &ready);
    assert_eq!(
        banner.lines().next(),
        Some("listening on http://127.0.0.1:4321")
    );
    assert!(banner.contains("\nserving: recurrent (trained checkpoint loaded)\n"));
}
