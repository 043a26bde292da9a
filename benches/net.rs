//! The network path, side by side: a hyper HTTP/1.1 server (one spawned task per connection, a
//! small rendered page) on tokio, on pagegen with `tokio::net` sockets (what pagegen served
//! through before `pagegen::net`), and on pagegen with `pagegen::net` on io_uring, on io_uring
//! with sockets on readiness (`PAGEGEN_IO_SOCKETS=readiness`: files on the ring, sockets in the
//! worker's epoll set, which the ring watches) and on the readiness fallback
//! (`PAGEGEN_IO=blocking`); 2 workers each.
//!
//! Each server runs in a child process of this binary (`--serve KIND`; the io backend is chosen
//! per process), the load generator in this one: one tokio thread writing a fixed request and
//! reading a response of known length per connection (see `load`), closed loop, over 1, 64 and
//! 1,024 keep-alive connections. Per run: requests/s and the p50/p99 latency of
//! every request in the measured window. Rounds interleave the servers; the report is the median
//! over rounds and the ratio to tokio.
//!
//! `cargo bench --bench net` (3 rounds of 2 s per server and connection count); `-- --quick` or
//! `PAGEGEN_NET_QUICK=1` for a smoke run (1 round of 0.3 s, 1 and 64 connections);
//! `PAGEGEN_NET_ONLY=Server:connections` for one 5 s run (for a profiler);
//! `PAGEGEN_NET_WORKERS=N` for N workers per server instead of 2;
//! `PAGEGEN_NET_PAGE_KB=N` adds N KiB of markup to each page (a real site's page size).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

/// Workers of each server: 2, or `PAGEGEN_NET_WORKERS` (on 2 cores shared with the load
/// generator, 1 worker each leaves one core to the server and one to the generator). A value
/// that is not a positive count stops the bench instead of silently measuring 2.
fn workers() -> usize {
    let Ok(v) = std::env::var("PAGEGEN_NET_WORKERS") else {
        return 2;
    };
    match v.parse() {
        Ok(n) if n > 0 => n,
        _ => panic!("PAGEGEN_NET_WORKERS={v:?}: expected a positive number of workers"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    /// tokio multi-thread, `tokio::net`.
    Tokio,
    /// pagegen's executor, `tokio::net` sockets (tokio's reactor on pagegen's driver thread).
    PagegenTokioNet,
    /// pagegen's executor, `pagegen::net` on io_uring.
    PagegenUring,
    /// pagegen's executor on io_uring, `pagegen::net` sockets on readiness.
    PagegenUringReadiness,
    /// pagegen's executor, `pagegen::net` on the readiness fallback.
    PagegenReady,
}

const SERVERS: [Server; 5] = [
    Server::Tokio,
    Server::PagegenTokioNet,
    Server::PagegenUring,
    Server::PagegenUringReadiness,
    Server::PagegenReady,
];

/// The markup `PAGEGEN_NET_PAGE_KB` adds to each page (none by default). The server is a child
/// process, so a bad value stops it before it prints its address.
fn padding() -> &'static str {
    static PAD: OnceLock<String> = OnceLock::new();
    PAD.get_or_init(|| {
        let kb = match std::env::var("PAGEGEN_NET_PAGE_KB") {
            Err(_) => 0,
            Ok(v) => v
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("PAGEGEN_NET_PAGE_KB={v:?}: expected a number of KiB")),
        };
        let mut pad = String::with_capacity(kb * 1024);
        while pad.len() + 32 <= kb * 1024 {
            pad.push_str("<p class=\"row\">pagegen row</p>\n");
        }
        pad
    })
}

/// A small rendered page (~1 KiB, plus [`padding`]): what a page-generation handler answers.
async fn page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let pad = padding();
    let mut html = String::with_capacity(1536 + pad.len());
    html.push_str("<!doctype html><html><head><title>pagegen</title></head><body><h1>");
    html.push_str(req.uri().path());
    html.push_str("</h1><ul>");
    for i in 0..24 {
        let _ = write!(
            html,
            "<li><a href=\"/item/{i}\">item {i}</a> {}</li>",
            i * 17
        );
    }
    html.push_str("</ul>");
    html.push_str(pad);
    html.push_str("</body></html>");
    Ok(Response::new(Full::new(Bytes::from(html))))
}

async fn conn<S>(s: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), hyper::service::service_fn(page))
        .await;
}

/// The child: serves `kind` on 127.0.0.1:0, prints the address, exits when stdin closes.
fn serve(kind: Server) -> ! {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let announce = |addr: SocketAddr| {
        println!("{addr}");
    };
    match kind {
        Server::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers())
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                announce(l.local_addr().unwrap());
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    s.set_nodelay(true).unwrap();
                    tokio::spawn(conn(s));
                }
            })
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let n = workers();
            let rt = pagegen::runtime::Builder::new()
                .workers(n)
                .bulk_workers(n)
                .state_dir(dir.path())
                .trainer(false)
                .build()
                .unwrap();
            rt.block_on(async move {
                // tokio's listener binds with a 1,024-connection backlog (std's is 128).
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                announce(l.local_addr().unwrap());
                // The accept loop is a task, so it runs on a worker (and its ring).
                let accept = pagegen::spawn(async move {
                    if kind == Server::PagegenTokioNet {
                        loop {
                            let (s, _) = l.accept().await.unwrap();
                            s.set_nodelay(true).unwrap();
                            drop(pagegen::spawn(conn(s)));
                        }
                    } else {
                        let l = pagegen::net::TcpListener::try_from(l).unwrap();
                        loop {
                            match l.accept().await {
                                Ok((s, _)) => {
                                    s.set_nodelay(true).unwrap();
                                    drop(pagegen::spawn(conn(s)));
                                }
                                Err(e) => eprintln!("accept: {e}"),
                            }
                        }
                    }
                });
                accept.await.unwrap()
            })
        }
    }
}

struct Running {
    child: Child,
    addr: SocketAddr,
}

fn start(kind: Server) -> Running {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--serve")
        .arg(format!("{kind:?}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    match kind {
        Server::PagegenReady => cmd.env("PAGEGEN_IO", "blocking"),
        _ => cmd.env_remove("PAGEGEN_IO"),
    };
    match kind {
        Server::PagegenUringReadiness => cmd.env("PAGEGEN_IO_SOCKETS", "readiness"),
        _ => cmd.env("PAGEGEN_IO_SOCKETS", "ring"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().parse().expect("the child prints its address");
    Running { child, addr }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

const REQUEST: &[u8] = b"GET /page HTTP/1.1\r\nhost: bench\r\n\r\n";

/// Sends one request and reads its whole response, learning its length (head + Content-Length
/// body). Every response to `REQUEST` has that length: same page, and a `date` header of fixed
/// width.
async fn first_response(s: &mut tokio::net::TcpStream) -> usize {
    s.write_all(REQUEST).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end])
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        let total = end + 4 + len;
        while buf.len() < total {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(buf.len(), total, "one response at a time");
        return total;
    }
}

/// Closed-loop load on `addr`: `conns` keep-alive connections (all connected and warmed with one
/// request first), each sending its next request when the last answer arrived, for `secs`. The
/// client writes a fixed request and reads a response of known length (checking its status line
/// and last bytes) instead of running hyper's client: on 2 shared cores a hyper client thread
/// saturated before the servers did, and every server measured the same.
fn load(addr: SocketAddr, conns: usize, secs: f64) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut streams = Vec::with_capacity(conns);
        for _ in 0..conns {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let len = first_response(&mut s).await;
            streams.push((s, len));
        }
        let start_gate = Arc::new(tokio::sync::Barrier::new(conns + 1));
        let until = Arc::new(std::sync::OnceLock::<Instant>::new());
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(mut s, len)| {
                let gate = Arc::clone(&start_gate);
                let until = Arc::clone(&until);
                tokio::spawn(async move {
                    gate.wait().await;
                    let until = *until.get().unwrap();
                    let mut lat = Vec::new();
                    let mut resp = vec![0u8; len];
                    while Instant::now() < until {
                        let t = Instant::now();
                        s.write_all(REQUEST).await.unwrap();
                        s.read_exact(&mut resp).await.unwrap();
                        assert!(resp.starts_with(b"HTTP/1.1 200") && resp.ends_with(b"</html>"));
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        let start = Instant::now();
        until.set(start + Duration::from_secs_f64(secs)).unwrap();
        start_gate.wait().await;
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e3;
        Run {
            rps: all.len() as f64 / elapsed,
            p50_us: q(0.50),
            p99_us: q(0.99),
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let kind = SERVERS
            .into_iter()
            .find(|k| Some(&format!("{k:?}")) == args.get(i + 1))
            .expect(
                "--serve Tokio|PagegenTokioNet|PagegenUring|PagegenUringReadiness|PagegenReady",
            );
        serve(kind);
    }
    // `PAGEGEN_NET_ONLY=PagegenUring:64` runs one server at one connection count for 5 s (for a
    // profiler).
    if let Ok(only) = std::env::var("PAGEGEN_NET_ONLY") {
        let (s, n) = only
            .split_once(':')
            .expect("PAGEGEN_NET_ONLY=Server:connections");
        let kind = SERVERS
            .into_iter()
            .find(|k| format!("{k:?}") == s)
            .expect("Tokio, PagegenTokioNet, PagegenUring, PagegenUringReadiness or PagegenReady");
        let child = start(kind);
        let r = load(child.addr, n.parse().unwrap(), 5.0);
        println!(
            "{s} x {n}: {:.0} req/s  p50 {:.1} us  p99 {:.1} us",
            r.rps, r.p50_us, r.p99_us
        );
        return;
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("PAGEGEN_NET_QUICK").is_some();
    let (rounds, secs, counts): (usize, f64, &[usize]) = if quick {
        (1, 0.3, &[1, 64])
    } else {
        (3, 2.0, &[1, 64, 1024])
    };
    println!(
        "net: {rounds} round(s) x {secs} s per server and connection count, {} workers, servers interleaved",
        workers()
    );
    for &conns in counts {
        let mut got: Vec<Vec<Run>> = SERVERS.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, s) in SERVERS.iter().enumerate() {
                let child = start(*s);
                got[i].push(load(child.addr, conns, secs));
            }
        }
        let m = |i: usize, f: fn(&Run) -> f64| median(got[i].iter().map(f).collect());
        let base = m(0, |r| r.rps);
        let base_p99 = m(0, |r| r.p99_us);
        println!("{conns} connection(s):");
        for (i, s) in SERVERS.iter().enumerate() {
            let (rps, p50, p99) = (m(i, |r| r.rps), m(i, |r| r.p50_us), m(i, |r| r.p99_us));
            println!(
                "  {:<21} {rps:>9.0} req/s  {:.2}x tokio   p50 {p50:>8.1} us  p99 {p99:>8.1} us  ({:.2}x tokio's p99)",
                format!("{s:?}"),
                rps / base,
                p99 / base_p99
            );
        }
    }
}
