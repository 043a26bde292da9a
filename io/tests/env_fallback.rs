//! `PAGEGEN_IO=blocking` forces the fallback; `PAGEGEN_IO_SOCKETS` picks the socket path. Its own
//! test binary: it sets process-wide variables (the two tests touch different ones).

use pagegen_io::{Backend, BackendChoice, Io, ENV_VAR};

#[test]
fn the_environment_forces_the_blocking_pool_and_auto_otherwise_probes() {
    std::env::remove_var(ENV_VAR);
    let auto = Io::new(BackendChoice::Auto).unwrap();
    let expected = if pagegen_io::uring_available() {
        Backend::Uring
    } else {
        Backend::Blocking
    };
    assert_eq!(auto.backend(), expected, "Auto probes io_uring");
    std::env::set_var(ENV_VAR, "blocking");
    assert_eq!(
        Io::new(BackendChoice::Auto).unwrap().backend(),
        Backend::Blocking
    );
    // The forced pool serves the same API.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let io = Io::new(BackendChoice::Auto).unwrap();
    io.block_on(pagegen_io::fs::write(&p, b"forced")).unwrap();
    assert_eq!(io.block_on(pagegen_io::fs::read(&p)).unwrap(), b"forced");
    std::env::remove_var(ENV_VAR);
}

#[test]
fn the_socket_path_is_readiness_unless_the_environment_asks_for_the_ring() {
    use pagegen_io::{SocketPath, SOCKETS_ENV_VAR};
    // The blocking backend has one path whatever the variable says.
    std::env::set_var(SOCKETS_ENV_VAR, "ring");
    assert_eq!(
        SocketPath::for_backend(Backend::Blocking),
        SocketPath::Readiness
    );
    assert!(
        Io::with_sockets(BackendChoice::Blocking, SocketPath::Ring).is_err(),
        "the ring path needs io_uring"
    );
    // On io_uring: the variable's choice, readiness by default and for a value it does not know.
    assert_eq!(SocketPath::for_backend(Backend::Uring), SocketPath::Ring);
    for v in ["readiness", "", "rings"] {
        std::env::set_var(SOCKETS_ENV_VAR, v);
        assert_eq!(
            SocketPath::for_backend(Backend::Uring),
            SocketPath::Readiness,
            "{v:?}"
        );
    }
    std::env::remove_var(SOCKETS_ENV_VAR);
    assert_eq!(
        SocketPath::for_backend(Backend::Uring),
        SocketPath::Readiness
    );
}
