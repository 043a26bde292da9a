//! Page render with glibc malloc as the global allocator (see `benches/alloc_render.sh`).

#[path = "common/render.rs"]
mod render;

#[global_allocator]
static A: pagegen_alloc::baseline::GlibcMalloc = pagegen_alloc::baseline::GlibcMalloc;

fn main() {
    render::drive("system", render::render_page);
}
