//! `PAGEGEN_IO=blocking` forces the fallback. Its own test binary: it sets a process-wide variable.

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
