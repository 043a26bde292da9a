//! # pagegen-macros
//!
//! `#[pagegen::main]` and `#[pagegen::test]`: drop-in replacements for `#[tokio::main]` and
//! `#[tokio::test]` that run the `async fn` on a pagegen runtime.
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod entry;

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
