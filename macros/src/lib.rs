//! # pagegen-macros
//!
//! `#[pagegen::main]` and `#[pagegen::test]`: drop-in replacements for `#[tokio::main]` and
//! `#[tokio::test]` that run the `async fn` on a pagegen runtime; `#[pagegen::route]`: a handler's
//! budget.
//!
//! ## `#[pagegen::main]`, `#[pagegen::test]`
//!
//! Arguments (`key = value`, comma-separated):
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `workers` (alias `worker_threads`) | integer ≥ 1 | worker threads (main: default = cores; test: 1) |
//! | `flavor` | `"multi_thread"` or `"current_thread"` | tokio's spelling; `current_thread` means one worker |
//! | `allocator` | `true` / `false` | main only: install pagegen's global allocator (default `true`) |
//!
//! Expansion contract with the facade (`pagegen::__private`, not public API):
//! `init_main_env()` runs first in `main` (before any thread starts), then
//! `runtime(workers).block_on(async { body })`; with `allocator` on, `main` is preceded by
//! `::pagegen::__private::global_allocator!();`, which the facade defines as empty until it has an
//! allocator to install.
//!
//! Errors: a bad argument becomes a `compile_error!` spanned at the offending token, and the function
//! is still expanded (with defaults) so the rest of the program keeps type-checking and IDEs keep
//! working — tokio-macros' `entry.rs` does the same.
//!
//! ## `#[pagegen::route]`
//!
//! On a free `async fn` axum handler. Arguments (`key = literal`, comma-separated, each optional
//! and at most once); quantities are `"<number><unit>"`, the number an integer or a decimal
//! (`"1.5ms"`), optionally a space before the unit (`"20 ms"`), and must come to a whole number
//! greater than zero of the base unit:
//!
//! | key | value | field of `RouteAnnotation` |
//! |---|---|---|
//! | `class` | non-empty string | `class` |
//! | `path` | string starting with `/`, as in the router | `path` |
//! | `cpu` | duration: `ns`, `us` (or `µs`), `ms`, `s` — `"20ms"` | `cpu_ns` (ns) |
//! | `timeout` | duration, as `cpu` — `"2s"` | `timeout_ns` (ns) |
//! | `mem` | size: `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), `KB`, `MB`, `GB` (powers of 1000) — `"64MiB"` | `mem_bytes` (bytes) |
//! | `io_bw` | size per second — `"50MiB/s"` | `io_bytes_per_sec` |
//! | `io_ops` | integer literal ≥ 1 | `io_ops` (`u32`) |
//! | `io_depth` | integer literal ≥ 1 | `io_depth` (`u32`) |
//! | `pool` | `"latency"` or `"bulk"` | `pool` (0 or 1) |
//!
//! Expansion contract with the facade (`pagegen::__private`): `async fn NAME` is preceded by
//! `static __PAGEGEN_ROUTE_NAME: RouteAnnotation = RouteAnnotation { handler: "NAME", .. }` (every
//! field spelled out, `None` where not given) and, only with `path`,
//! `inventory::submit! { RouteEntry(&__PAGEGEN_ROUTE_NAME) }`; its body starts with
//! `bind_route(&__PAGEGEN_ROUTE_NAME);`. The handler's attributes, visibility, generics and
//! `where` clause are kept; its `#[cfg]`s also apply to the `static` and the submission.
//!
//! Errors: each bad argument is a `compile_error!` at the offending token (the literal for a bad
//! value, the key for an unknown or repeated key) saying what to write instead; the function is
//! then emitted unchanged, without the annotation. A non-`async` fn, a method or an item that is
//! not a fn is an error too.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod entry;
mod route;

use proc_macro::TokenStream;

/// Runs `async fn main` on a pagegen runtime: `#[pagegen::main]`, `#[pagegen::main(workers = 4)]`,
/// `#[pagegen::main(allocator = false)]`.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Main).into()
}

/// Runs an `async fn` test on its own pagegen runtime (one worker unless `workers = N`), so tests
/// share no runtime state.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Test).into()
}

/// Annotates an axum handler (a free `async fn`) with its class and budget:
///
/// ```ignore
/// #[pagegen::route(class = "search", path = "/search", cpu = "20ms", mem = "64MiB",
///                  io_depth = 8, io_bw = "50MiB/s", timeout = "2s")]
/// async fn search(q: Query<Params>) -> Html<String> { /* ... */ }
/// ```
///
/// Every key is optional; see the crate docs for the keys, units and what the annotation expands
/// to. With `path` the annotation is registered before the first request; without it, it binds on
/// the handler's first call.
#[proc_macro_attribute]
pub fn route(args: TokenStream, item: TokenStream) -> TokenStream {
    route::expand(args.into(), item.into()).into()
}
