//! The example shop (`examples/site`) on tokio with plain jemalloc: `--runtime tokio` (the
//! default) or `tokio-limits`.
//!
//! Run: `cargo run --release --example site_jemalloc -- --runtime tokio-limits`
//!
//! jemalloc comes through `pagegen::alloc::baseline::Jemalloc` (the tikv-jemallocator allocator
//! pagegen's benchmarks compare against) rather than a dependency of the example's own: only
//! `pagegen-alloc` names the jemalloc crates.

#[path = "site/app.rs"]
mod app;

#[global_allocator]
static ALLOC: pagegen::alloc::baseline::Jemalloc = pagegen::alloc::baseline::Jemalloc;

fn main() -> std::process::ExitCode {
    app::main(app::Allocator::Jemalloc)
}
