//! Page render with pagegen's allocator, each page rendered as one poll of a request of its class,
//! bracketed by the allocator's hook as the executor would (see `benches/alloc_render.sh`).
//! Argument `acct`: accounting only (default arena); `class` (default): the class's own arena.

#[path = "common/render.rs"]
mod render;

use pagegen_alloc::{AllocHook, ClassArenas, PagegenAlloc};
use pagegen_core::{ClassId, Grant, PollHook, PollStats, RequestCtx, RequestId};

#[global_allocator]
static A: PagegenAlloc = PagegenAlloc::new();

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "class".into());
    let hook = match mode.as_str() {
        "acct" => AllocHook::accounting_only(),
        "class" => AllocHook::new(),
        other => {
            eprintln!("unknown mode {other:?}: write `acct` or `class`");
            std::process::exit(2);
        }
    };
    let class = ClassId::from_raw(3);
    if let Err(e) = ClassArenas::new().ensure(class) {
        eprintln!("class arena unavailable ({e}); measuring the default arena");
    }
    let ctx = RequestCtx::new(RequestId(1), Grant::unlimited(class), 0);
    let name = format!("pagegen_{mode}");
    render::drive(&name, |seed| {
        hook.before_poll(&ctx);
        let n = render::render_page(seed);
        let _ = hook.after_poll(&ctx, &PollStats::default());
        n
    });
    assert!(
        ctx.mem.snapshot().allocs > 0,
        "the hook saw the allocations"
    );
}
