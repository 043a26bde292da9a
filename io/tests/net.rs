//! `pagegen_io::net` on both backends, served by pagegen's executor with the io runtime as its
//! driver (so sockets run on the workers' own rings or readiness sets), with plain blocking std
//! clients on other threads. Every test asserts bytes and counts; none sleeps to synchronise.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;

use common::{counting_waker, nofile, poll_once, set_nofile, socket_runtimes};
use pagegen_core::{ClassId, Grant, RequestCtx, RequestId};
use pagegen_executor::{Builder, Runtime};
use pagegen_io::net::{TcpListener, TcpStream};
use pagegen_io::{Io, SocketPath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime(io: &Io, workers: usize) -> Runtime {
    Builder::new()
        .workers(workers)
        .tokio_compat(false)
        .driver(Arc::new(io.clone()))
        .build()
        .unwrap()
}

fn listener(io: &Io) -> (TcpListener, SocketAddr) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std.local_addr().unwrap();
    (TcpListener::from_std_on(io, std).unwrap(), addr)
}

/// Echoes until end of stream, then shuts its write half down.
async fn echo(mut s: TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            s.shutdown().await?;
            return Ok(total);
        }
        s.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Accepts forever, one echo task per connection; counts connections.
fn spawn_echo_server(rt: &Runtime, l: TcpListener) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let h = rt.handle();
    rt.spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            h.spawn(echo(s));
        }
    });
    accepted
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn echo_round_trip_on_both_backends() {
    for io in socket_runtimes() {
        let rt = runtime(&io, 2);
        let (l, addr) = listener(&io);
        let accepted = spawn_echo_server(&rt, l);
        // Larger than one receive and one send (MAX_RECV/MAX_SEND), so pieces and partial sends
        // are exercised; written from a second thread so neither side's buffers fill up.
        let data = pattern(1_000_003, 7);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), data.len(), "{}", io.backend());
        assert!(back == data, "{}: echoed bytes differ", io.backend());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}

async fn page(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<hyper::body::Bytes>>, Infallible> {
    let body = format!("<html><body>{}</body></html>", req.uri().path());
    Ok(hyper::Response::new(body.into()))
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns (head, body).
fn read_response(c: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn hyper_keep_alive_round_trips_are_charged_to_the_request() {
    for io in socket_runtimes() {
        let rt = runtime(&io, 2);
        let (l, addr) = listener(&io);
        let ctx = RequestCtx::new(RequestId(1), Grant::unlimited(ClassId::DEFAULT), 0);
        let served = rt.handle().spawn_with_ctx(Arc::clone(&ctx), async move {
            let (s, _) = l.accept().await.unwrap();
            hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(s),
                    hyper::service::service_fn(page),
                )
                .await
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let (mut sent, mut received) = (0u64, 0u64);
        for path in ["/", "/search", "/feed"] {
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            c.write_all(req.as_bytes()).unwrap();
            sent += req.len() as u64;
            let (head, body) = read_response(&mut c);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, format!("<html><body>{path}</body></html>").as_bytes());
            received += (head.len() + body.len()) as u64;
        }
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let r = rt.block_on(served).unwrap();
        assert!(r.is_ok(), "{}: {r:?}", io.backend());
        let u = ctx.net.socket();
        assert_eq!(
            u.bytes_in,
            sent,
            "{}: every request byte charged",
            io.backend()
        );
        assert_eq!(
            u.bytes_out,
            received,
            "{}: every response byte charged",
            io.backend()
        );
        // Three requests plus the end of stream: at least four receives; three responses.
        assert!(u.recv_ops >= 4, "{}: {u:?}", io.backend());
        assert!(u.send_ops >= 3, "{}: {u:?}", io.backend());
        assert!(u.recv_ns > 0 && u.send_ns > 0, "{u:?}");
        assert_eq!(ctx.net.snapshot().requests, 0, "not outgoing requests");
    }
}

#[test]
fn thousands_of_short_connections() {
    const CLIENTS: usize = 4;
    const EACH: usize = 500;
    for io in socket_runtimes() {
        let rt = runtime(&io, 2);
        let (l, addr) = listener(&io);
        let accepted = spawn_echo_server(&rt, l);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let msg = format!("client {t} connection {i}");
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        c.write_all(msg.as_bytes()).unwrap();
                        c.shutdown(Shutdown::Write).unwrap();
                        let mut back = String::new();
                        c.read_to_string(&mut back).unwrap();
                        assert_eq!(back, msg);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            CLIENTS * EACH,
            "{}",
            io.backend()
        );
    }
}

/// More open connections than one worker's readiness set takes (its share, 128), so later ones
/// wait in the other worker's set while the accepting worker runs their first poll: every one
/// must keep answering, round after round.
#[test]
fn hundreds_of_open_connections_past_one_workers_share_all_answer() {
    const CONNS: usize = 300;
    raise_fd_limit(4 * CONNS as u64);
    for io in socket_runtimes() {
        let rt = runtime(&io, 2);
        let (l, addr) = listener(&io);
        let accepted = spawn_echo_server(&rt, l);
        let mut conns: Vec<_> = (0..CONNS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for round in 0..3 {
            for (i, c) in conns.iter_mut().enumerate() {
                c.write_all(format!("{round}:{i};").as_bytes()).unwrap();
            }
            for (i, c) in conns.iter_mut().enumerate() {
                let want = format!("{round}:{i};");
                let mut back = vec![0u8; want.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, want.as_bytes(), "{}", io.backend());
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), CONNS, "{}", io.backend());
    }
}

/// Raises the soft descriptor limit to at least `want` (within the hard limit).
fn raise_fd_limit(want: u64) {
    let r = nofile();
    if r.rlim_cur < want {
        set_nofile(libc::rlimit {
            rlim_cur: want.min(r.rlim_max),
            ..r
        });
    }
}

#[test]
fn half_closed_connections_keep_the_other_direction() {
    for io in socket_runtimes() {
        let rt = runtime(&io, 1);
        let (l, addr) = listener(&io);
        let server = rt.spawn(async move {
            // Connection 1: the client closes its half first; the server still answers.
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(b"got ").await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
            // Connection 2: the server closes its half first and keeps reading.
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"ready").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "got hello");

        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "ready", "the server's end of stream arrived");
        c.write_all(b"still listening").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(rt.block_on(server).unwrap(), b"still listening");
    }
}

/// Closes with a reset (`SO_LINGER` 0) instead of a FIN.
fn reset(c: std::net::TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a pointer to a live local `linger` and its size.
    let r = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    drop(c);
}

#[test]
fn a_peer_that_resets_mid_body_is_an_error_and_the_server_goes_on() {
    for io in socket_runtimes() {
        let rt = runtime(&io, 1);
        let (l, addr) = listener(&io);
        let (tx, rx) = mpsc::channel();
        let server = rt.spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut body = vec![0u8; 1000];
            // Tell the client we are reading, then read a body it will never finish.
            s.write_all(b"go").await.unwrap();
            let err = s.read_exact(&mut body).await.unwrap_err();
            tx.send(err.kind()).unwrap();
            let (s, _) = l.accept().await.unwrap();
            echo(s).await.unwrap()
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let mut go = [0u8; 2];
        c.read_exact(&mut go).unwrap();
        c.write_all(&[1u8; 100]).unwrap();
        reset(c);
        assert_eq!(
            rx.recv().unwrap(),
            std::io::ErrorKind::ConnectionReset,
            "{}",
            io.backend()
        );

        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"after").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "after");
        assert_eq!(rt.block_on(server).unwrap(), 5);
    }
}

#[test]
fn a_slow_reader_does_not_stall_other_connections() {
    // Far more than loopback's socket buffers hold, so the writer must wait for the reader.
    const BIG: u64 = 64 << 20;
    for io in socket_runtimes() {
        // One worker: a writer that blocked its thread would stall everybody.
        let rt = runtime(&io, 1);
        let (l, addr) = listener(&io);
        let written = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&written);
        let h = rt.handle();
        rt.spawn(async move {
            let (mut slow, _) = l.accept().await.unwrap();
            h.spawn(async move {
                let chunk = vec![b's'; 256 * 1024];
                while w.load(Ordering::SeqCst) < BIG {
                    slow.write_all(&chunk).await.unwrap();
                    w.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                slow.shutdown().await.unwrap();
            });
            loop {
                let (s, _) = l.accept().await.unwrap();
                h.spawn(echo(s));
            }
        });
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        // The slow connection's first bytes prove its writer is running (and then stuck).
        let mut first = [0u8; 1];
        slow.read_exact(&mut first).unwrap();
        for i in 0..50 {
            let msg = format!("round trip {i}");
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(msg.as_bytes()).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut back = String::new();
            c.read_to_string(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        assert!(
            written.load(Ordering::SeqCst) < BIG,
            "{}: the writer is still held by its reader",
            io.backend()
        );
        let mut total = 1u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = slow.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == b's'));
            total += n as u64;
        }
        assert_eq!(total, BIG, "{}", io.backend());
    }
}

/// A connected pair: (server side on `io`, client side std).
fn pair(io: &Io) -> (TcpStream, std::net::TcpStream) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(std.local_addr().unwrap()).unwrap();
    let (s, _) = std.accept().unwrap();
    (TcpStream::from_std_on(io, s).unwrap(), c)
}

#[test]
fn a_dropped_read_future_leaves_the_receive_owned_and_loses_nothing() {
    for io in socket_runtimes() {
        let base = io.live_ops();
        let (mut s, mut c) = pair(&io);
        let (_, waker) = counting_waker();
        let mut buf = [0u8; 16];
        {
            let mut read = pin!(s.read(&mut buf));
            assert!(poll_once(read.as_mut(), &waker).is_pending());
        }
        if io.socket_path() == SocketPath::Ring {
            assert_eq!(
                io.live_ops(),
                base + 1,
                "the receive and its buffer outlive the future"
            );
        }
        c.write_all(b"kept").unwrap();
        let n = io.block_on(s.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"kept");
        assert_eq!(io.live_ops(), base);
    }
}

#[test]
fn dropping_a_stream_with_a_receive_in_the_kernel_cancels_it_and_frees_the_buffer_after() {
    for io in socket_runtimes() {
        let base = io.live_ops();
        let (s, mut c) = pair(&io);
        let io2 = io.clone();
        io2.block_on(async move {
            let mut s = s;
            let mut buf = [0u8; 16];
            let (_, waker) = counting_waker();
            {
                let mut read = pin!(s.read(&mut buf));
                assert!(poll_once(read.as_mut(), &waker).is_pending());
            }
            drop(s);
            if io.socket_path() == SocketPath::Ring {
                assert_eq!(io.live_ops(), base + 1, "the kernel still owns the buffer");
            }
            // Each yield lets this thread's driver submit the cancel and reap its completion.
            while io.live_ops() > base {
                yield_now().await;
            }
        });
        // The peer sees the close.
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
    }
}

#[test]
fn dropping_a_stream_with_a_send_in_the_kernel_keeps_its_buffer_until_the_completion() {
    for io in socket_runtimes() {
        let base = io.live_ops();
        let (s, mut c) = pair(&io);
        let backend = io.backend();
        let io2 = io.clone();
        let accepted = io2.block_on(async move {
            let mut s = s;
            let chunk = vec![b'x'; 256 * 1024];
            let (_, waker) = counting_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            // The peer never reads: the socket fills, and the ring gets the rest (uring), or the
            // write waits for room (readiness).
            let mut accepted = 0u64;
            loop {
                match tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut s), &mut cx, &chunk)
                {
                    Poll::Ready(Ok(n)) => accepted += n as u64,
                    Poll::Ready(Err(e)) => panic!("{e}"),
                    Poll::Pending => break,
                }
            }
            if io.socket_path() == SocketPath::Ring {
                assert_eq!(io.live_ops(), base + 1, "a send is in the kernel");
            }
            drop(s);
            if io.socket_path() == SocketPath::Ring {
                assert_eq!(
                    io.live_ops(),
                    base + 1,
                    "its buffer is the kernel's until it completes"
                );
            }
            while io.live_ops() > base {
                yield_now().await;
            }
            accepted
        });
        // The peer reads what the socket took, then the end of the connection.
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&b| b == b'x'));
                    got += n as u64;
                }
            }
        }
        assert!(got > 0 && got <= accepted, "{backend}: {got} of {accepted}");
    }
}

#[test]
fn a_dropped_accept_future_keeps_the_connection_for_the_next_accept() {
    for io in socket_runtimes() {
        let base = io.live_ops();
        let (l, addr) = listener(&io);
        io.block_on(async {
            let (_, waker) = counting_waker();
            {
                let mut accept = pin!(l.accept());
                assert!(poll_once(accept.as_mut(), &waker).is_pending());
            }
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let (mut s, peer) = l.accept().await.unwrap();
            assert_eq!(peer, c.local_addr().unwrap());
            s.write_all(b"accepted").await.unwrap();
            s.flush().await.unwrap();
            let mut got = [0u8; 8];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"accepted");
        });
        drop(l);
        // The listener's multishot accept is cancelled; its op is freed once the kernel is done.
        io.block_on(async {
            while io.live_ops() > base {
                yield_now().await;
            }
        });
        assert_eq!(io.live_ops(), base);
    }
}

#[test]
fn a_dropped_listener_refuses_connections_at_once() {
    for io in socket_runtimes() {
        let rt = runtime(&io, 1);
        let (l, addr) = listener(&io);
        let backend = io.backend();
        let refused = rt.block_on(rt.spawn(async move {
            // An accept in flight on this worker's ring (the multishot accept, whose final
            // completion holds the socket until the ring reaps it).
            let c = std::net::TcpStream::connect(addr).unwrap();
            let (_s, _) = l.accept().await.unwrap();
            drop(c);
            drop(l);
            // Still inside this task's poll: the worker has not reaped anything since the drop.
            std::net::TcpStream::connect(addr).is_err()
        }));
        assert!(
            refused.unwrap(),
            "{backend}: a dropped listener still accepted"
        );
    }
}

#[test]
fn priority_and_tos_are_set_on_the_socket() {
    for io in socket_runtimes() {
        let (s, _c) = pair(&io);
        s.set_priority(5).unwrap();
        assert_eq!(s.priority().unwrap(), 5);
        assert_eq!(
            s.set_priority(7).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        s.set_tos(0x28).unwrap();
        assert_eq!(s.tos().unwrap(), 0x28);
        s.set_nodelay(true).unwrap();
        assert!(s.nodelay().unwrap());
    }
}

#[test]
fn converts_from_tokio_and_std_sockets() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    for io in socket_runtimes() {
        let _g = io.enter();
        let (tl, tc) = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            (l, c)
        });
        let l = TcpListener::try_from(tl).unwrap();
        let client = TcpStream::try_from(tc).unwrap();
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_addr = std_l.local_addr().unwrap();
        let std_l = TcpListener::try_from(std_l).unwrap();
        let std_c = TcpStream::try_from(std::net::TcpStream::connect(std_addr).unwrap()).unwrap();
        io.block_on(async {
            for (l, mut c) in [(l, client), (std_l, std_c)] {
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(b"from pagegen").await.unwrap();
                s.shutdown().await.unwrap();
                let mut got = String::new();
                c.read_to_string(&mut got).await.unwrap();
                assert_eq!(got, "from pagegen", "{}", io.backend());
            }
        });
    }
}

/// Yields once (the task is woken at once), so a `block_on` loop runs its driver.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[test]
fn vectored_writes_send_every_slice_in_order_past_a_full_send_buffer() {
    for io in socket_runtimes() {
        let (s, mut c) = pair(&io);
        assert!(tokio::io::AsyncWrite::is_write_vectored(&s));
        // A head, a body far larger than a socket's send buffer grows to (4 MiB by default), so
        // the socket fills and on the ring path the rest goes to the kernel as owned sends, and a
        // tail.
        let parts = [
            pattern(100, 1),
            pattern(32 << 20, 2),
            pattern(7, 3),
            Vec::new(),
        ];
        let expected: Vec<u8> = parts.concat();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        let calls = io.block_on(async move {
            let mut s = s;
            let mut slices: Vec<std::io::IoSlice<'_>> =
                parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
            let mut left = &mut slices[..];
            let mut calls = 0;
            while !left.is_empty() {
                let n = s.write_vectored(left).await.unwrap();
                assert!(n > 0 || left.iter().all(|b| b.is_empty()));
                if calls == 0 {
                    // An empty send buffer takes more than the head: one call spans slices.
                    assert!(n > 100, "the first call sent {n} bytes, the head alone");
                }
                calls += 1;
                std::io::IoSlice::advance_slices(&mut left, n);
            }
            s.shutdown().await.unwrap();
            calls
        });
        let got = reader.join().unwrap();
        assert_eq!(got.len(), expected.len(), "{}", io.backend());
        assert!(
            got == expected,
            "{}: bytes differ or out of order",
            io.backend()
        );
        assert!(calls >= 2, "a 32 MiB body cannot leave in one call");
    }
}
