//! The example shop (`examples/site`) on tokio with the system allocator: `--runtime
//! tokio-system`.
//!
//! Run: `cargo run --release --example site_system`

#[path = "site/app.rs"]
mod app;

#[global_allocator]
static ALLOC: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    app::main(app::Allocator::System)
}
