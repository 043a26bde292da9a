//! Page render with plain jemalloc as the global allocator (see `benches/alloc_render.sh`).

#[path = "common/render.rs"]
mod render;

#[global_allocator]
static A: pagegen_alloc::baseline::Jemalloc = pagegen_alloc::baseline::Jemalloc;

fn main() {
    render::drive("jemalloc", render::render_page);
}
