//! An example shop served by pagegen: server-side rendered pages (askama templates), an embedded
//! SQLite database and files, with routes that differ the way a real site's do — a light home
//! page, a product page (a query and two file reads), a CPU-heavy search, a memory-heavy report,
//! an I/O-heavy feed, TechEmpower's Fortunes, and a synthetic route for trace replay.
//!
//! Run: `cargo run --release --example site` (then `-- --help`); `examples/site/README.md` has the
//! routes, the runtime variants and how to compare them.
//!
//! This binary installs pagegen's global allocator and runs the pagegen variants (`--runtime
//! pagegen`, `pagegen-ewma`, `pagegen-static`); `site_jemalloc` and `site_system` run the same
//! site on tokio.

mod app;

#[global_allocator]
static ALLOC: pagegen::alloc::PagegenAlloc = pagegen::alloc::PagegenAlloc::new();

fn main() -> std::process::ExitCode {
    app::main(app::Allocator::Pagegen)
}
