//! The example shop, shared by its three binaries (`site`, `site_jemalloc`, `site_system`: one per
//! global allocator) and by `tests/site.rs`, which include this file with `#[path]`.
//!
//! | module | holds |
//! |---|---|
//! | `data` | the deterministic generator of the shop's database and files, and the catalog loader |
//! | `db` | SQLite connections and the queries |
//! | `platform` | the runtime shim: blocking calls, file reads and yields on pagegen or tokio |
//! | `pages` | the routes, their `#[pagegen::route]` budgets and their askama templates |
//! | `search`, `report`, `synthetic` | the work behind `/search`, `/report/{year}`, `/synthetic` |
//! | `server` | the runtime variants and `run` |
//!
//! `main` parses the command line, prints where it serves (the first line is always
//! `listening on http://127.0.0.1:PORT`) and serves until SIGTERM or ctrl-c.
#![allow(dead_code)] // Each binary and the test use a different part of the shared modules.

#[path = "data.rs"]
pub mod data;
#[path = "db.rs"]
pub mod db;
#[path = "pages.rs"]
pub mod pages;
#[path = "platform.rs"]
pub mod platform;
#[path = "report.rs"]
pub mod report;
#[path = "search.rs"]
pub mod search;
#[path = "server.rs"]
pub mod server;
#[path = "synthetic.rs"]
pub mod synthetic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

pub use server::{Allocator, Options, Ready, Variant, VARIANTS};

/// `--port` when none is given.
pub const DEFAULT_PORT: u16 = 3000;
/// `--workers` when none is given.
pub const DEFAULT_WORKERS: usize = 2;
/// `--state-dir` when none is given.
pub const DEFAULT_STATE_DIR: &str = "./.pagegen-site";
/// `--products` when none is given: enough that a search scores real work (a few ms).
pub const DEFAULT_PRODUCTS: u32 = 2000;

fn usage(alloc: Allocator) -> String {
    let runtimes: Vec<&str> = VARIANTS
        .iter()
        .filter(|v| v.allocator() == alloc)
        .map(|v| v.name())
        .collect();
    format!(
        "usage: {bin} [--runtime NAME] [--port N] [--workers N] [--state-dir DIR] [--products N] [--metrics ADDR|off]

  --runtime NAME    {runtimes} (default {default}); other runtimes run from the binary of
                    their allocator: pagegen, pagegen-ewma, pagegen-static: site;
                    tokio, tokio-limits: site_jemalloc; tokio-system: site_system
  --port N          port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)
  --workers N       worker threads (default {DEFAULT_WORKERS}; on pagegen as many again in its bulk pool)
  --state-dir DIR   generated shop data, and pagegen's learned state (default {DEFAULT_STATE_DIR})
  --products N      catalog size (default {DEFAULT_PRODUCTS}); another size regenerates the data
  --metrics ADDR    pagegen's Prometheus endpoint (default 127.0.0.1:0, a free port; off to disable)

tokio-limits' per-route limits: {limits}",
        bin = alloc.binary(),
        runtimes = runtimes.join(", "),
        default = runtimes[0],
        limits = server::LIMITS,
    )
}

/// Parses the command line; `Err` holds what to print and the exit code.
pub fn parse(alloc: Allocator, args: &[String]) -> Result<Options, (String, u8)> {
    let bad = |msg: String| Err((format!("{msg}\n\n{}", usage(alloc)), 2));
    let mut opts = Options {
        variant: VARIANTS
            .into_iter()
            .find(|v| v.allocator() == alloc)
            .expect("every allocator has a variant"),
        port: DEFAULT_PORT,
        workers: DEFAULT_WORKERS,
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        products: DEFAULT_PRODUCTS,
        metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err((usage(alloc), 0));
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            return bad(format!("{flag} needs a value"));
        };
        match flag {
            "--runtime" => match Variant::from_name(&value) {
                Some(v) => opts.variant = v,
                None => return bad(format!("unknown runtime {value:?}")),
            },
            "--port" => match value.parse() {
                Ok(p) => opts.port = p,
                Err(_) => return bad(format!("--port {value:?}: expected 0 to 65535")),
            },
            "--workers" => match value.parse() {
                Ok(n) if n > 0 => opts.workers = n,
                _ => return bad(format!("--workers {value:?}: expected a number ≥ 1")),
            },
            "--state-dir" => opts.state_dir = PathBuf::from(value),
            "--products" => match value.parse() {
                Ok(n) if n > 0 => opts.products = n,
                _ => return bad(format!("--products {value:?}: expected a number ≥ 1")),
            },
            "--metrics" => {
                opts.metrics = match value.as_str() {
                    "off" => None,
                    v => match v.parse::<SocketAddr>() {
                        Ok(a) => Some(a),
                        Err(_) => return bad(format!("--metrics {v:?}: expected IP:PORT or off")),
                    },
                }
            }
            _ => return bad(format!("unknown option {flag:?}")),
        }
    }
    if opts.variant.allocator() != alloc {
        return Err((
            format!(
                "--runtime {name} is measured on the {wanted} allocator, and this binary has {have}: run\n  cargo run --release --example {bin} -- --runtime {name}",
                name = opts.variant.name(),
                wanted = opts.variant.allocator().describe(),
                have = alloc.describe(),
                bin = opts.variant.allocator().binary(),
            ),
            2,
        ));
    }
    Ok(opts)
}

/// SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// What `main` prints once the site serves; the first line is the one the load harness reads.
pub fn banner(opts: &Options, alloc: Allocator, r: &Ready) -> String {
    let base = format!("http://{}", r.addr);
    let mut out = format!("listening on {base}\n");
    let runtime = match r.knobs {
        Some((predictor, shares)) => format!(
            "{} (predictor {predictor}, shares {shares}), {w} latency + {w} bulk workers",
            opts.variant.name(),
            w = opts.workers
        ),
        None => format!("{}, {} workers", opts.variant.name(), opts.workers),
    };
    out += &format!("runtime: {runtime}; allocator: {}\n", alloc.describe());
    if let Some(s) = &r.serving {
        out += &format!("serving: {s}\n");
    }
    out += &format!(
        "data: {} ({} products, {})\n",
        opts.state_dir.join("site").display(),
        r.products,
        match r.generated {
            Some(t) => format!("generated in {:.1} s", t.as_secs_f64()),
            None => "reused".to_owned(),
        }
    );
    out += &match r.metrics {
        Some(m) => format!("metrics: http://{m}/metrics\n"),
        None => "metrics: off\n".to_owned(),
    };
    out += "routes:\n";
    for (path, what) in pages::ROUTES {
        out += &format!("  GET {base}{path:<28} {what}\n");
    }
    if opts.variant == Variant::TokioLimits {
        out += &format!("limits: {}\n", server::LIMITS);
    }
    out
}

/// The binaries' `main`: `alloc` is the global allocator the binary installed.
pub fn main(alloc: Allocator) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(alloc, &args) {
        Ok(o) => o,
        Err((msg, code)) => {
            if code == 0 {
                println!("{msg}");
            } else {
                eprintln!("{msg}");
            }
            return ExitCode::from(code);
        }
    };
    // candle's kernels (pagegen's model) use rayon; one thread, not one per core on top of the
    // workers (what `#[pagegen::main]` does; set before any thread starts).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let ready = |r: &Ready| print!("{}", banner(&opts, alloc, r));
    match server::run(&opts, ready, shutdown_signal()) {
        Ok(()) => {
            eprintln!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("site: {e:#}");
            ExitCode::FAILURE
        }
    }
}
