//! Accepting at the file-descriptor limit: the accept fails with `EMFILE`, the listener stays
//! usable, and the connections waiting in the backlog are accepted once descriptors are free.
//!
//! A binary of its own, with one test: it lowers `RLIMIT_NOFILE` for the whole process.

mod common;

use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};

use common::{nofile, set_nofile, socket_runtimes};
use pagegen_executor::Builder;
use pagegen_io::net::TcpListener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Opens descriptors until every number below the highest open one is taken; returns them (kept
/// open by the caller) and the lowest free number, so that a limit of `free + k` leaves exactly
/// `k` descriptors to allocate.
fn plug_holes() -> (Vec<std::fs::File>, u64) {
    let mut plugs = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: F_GETFD takes no pointer; it only asks whether the number is open.
        let next_open = unsafe { libc::fcntl(fd + 1, libc::F_GETFD) } >= 0;
        let highest = (fd + 1..fd + 1024)
            // SAFETY: as above.
            .all(|n| unsafe { libc::fcntl(n, libc::F_GETFD) } < 0);
        plugs.push(f);
        if !next_open && highest {
            return (plugs, fd as u64 + 1);
        }
    }
}

/// A TCP socket, not yet connected.
fn socket() -> OwnedFd {
    // SAFETY: takes no pointers; a non-negative return is a fresh fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by socket and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects `fd` to `addr` (a blocking connect: done once the listener's backlog holds it).
fn connect(fd: OwnedFd, addr: SocketAddrV4) -> std::net::TcpStream {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a pointer to a live local sockaddr_in and its size.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    std::net::TcpStream::from(fd)
}

#[derive(Debug, PartialEq)]
enum Event {
    Accepted,
    Failed(i32),
}

#[test]
fn accept_at_the_descriptor_limit_fails_and_the_server_continues() {
    const CLIENTS: usize = 10;
    const ROOM: u64 = 3;
    let original = nofile();
    for io in socket_runtimes() {
        let rt = Builder::new()
            .workers(1)
            .tokio_compat(false)
            .driver(Arc::new(io.clone()))
            .build()
            .unwrap();
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let l = TcpListener::from_std_on(&io, std).unwrap();
        let (tx, rx) = mpsc::channel();
        let release = Arc::new(Notify::new());
        let go_on = Arc::clone(&release);
        let h = rt.handle();
        let start = Arc::new(Notify::new());
        let started = Arc::clone(&start);
        // The worker has run a task: its ring or readiness set exists, so that the limit below
        // only meets accepts.
        rt.block_on(rt.spawn(async {})).unwrap();
        rt.spawn(async move {
            // io_uring reads the limit when an accept is submitted, so the first accept waits
            // until the limit is in place.
            started.notified().await;
            let mut held = Vec::new();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        held.push(s);
                        tx.send(Event::Accepted).unwrap();
                    }
                    Err(e) => {
                        tx.send(Event::Failed(e.raw_os_error().unwrap_or(0)))
                            .unwrap();
                        go_on.notified().await;
                        // Answer and close what we hold: descriptors come free.
                        for mut s in held.drain(..) {
                            h.spawn(async move {
                                s.write_all(b"ok").await.unwrap();
                                s.shutdown().await.unwrap();
                                let mut rest = Vec::new();
                                s.read_to_end(&mut rest).await.unwrap();
                            });
                        }
                    }
                }
            }
        });
        // The clients' sockets exist before the limit is lowered (they live in this process too)
        // and connect after it, so that only the server's accepts meet the limit (a multishot
        // accept in flight takes a connection the moment it arrives).
        let clients: Vec<_> = (0..CLIENTS).map(|_| socket()).collect();
        let (plugs, free) = plug_holes();
        set_nofile(libc::rlimit {
            rlim_cur: free + ROOM,
            rlim_max: original.rlim_max,
        });
        let SocketAddr::V4(v4) = addr else {
            unreachable!("bound on 127.0.0.1")
        };
        let clients: Vec<_> = clients.into_iter().map(|fd| connect(fd, v4)).collect();
        start.notify_one();
        for _ in 0..ROOM {
            assert_eq!(rx.recv().unwrap(), Event::Accepted, "{}", io.backend());
        }
        assert_eq!(
            rx.recv().unwrap(),
            Event::Failed(libc::EMFILE),
            "{}",
            io.backend()
        );
        set_nofile(original);
        drop(plugs);
        release.notify_one();
        // Every connection still waiting in the backlog is accepted now.
        for _ in ROOM as usize..CLIENTS {
            assert_eq!(rx.recv().unwrap(), Event::Accepted, "{}", io.backend());
        }
        // The held ones were answered once the server went on.
        for mut c in clients.into_iter().take(ROOM as usize) {
            let mut got = [0u8; 2];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ok");
        }
        drop(rt);
    }
}
