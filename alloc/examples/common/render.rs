//! The page-render workload shared by the `render_*` binaries: 200 `format!` items joined into one
//! page, the allocation pattern of a server-side rendered list page.

use std::hint::black_box;
use std::time::Instant;

const NAMES: [&str; 7] = [
    "Espresso grinder",
    "Pour-over kettle",
    "Ceramic dripper",
    "Paper filters (100)",
    "Burr set",
    "Scale, 0.1 g",
    "Milk pitcher",
];

/// Renders one page; returns its length so nothing is optimised away.
pub fn render_page(seed: u64) -> usize {
    let items: Vec<String> = (0..200u64)
        .map(|i| {
            format!(
                "<li class=\"item\" data-id=\"{}\"><a href=\"/p/{}\">{}</a> <span>{:.2} €</span></li>",
                seed * 1000 + i,
                (seed + i) % 977,
                NAMES[(i % 7) as usize],
                i as f64 * 1.25 + seed as f64 * 0.01
            )
        })
        .collect();
    let body = items.join("\n");
    let page = format!("<!doctype html><html><body><ul>\n{body}\n</ul></body></html>");
    black_box(&page);
    page.len()
}

/// Renders pages in rounds and prints the median ns per page (`PAGEGEN_BENCH_SMOKE=1`: tiny run).
pub fn drive(name: &str, mut render: impl FnMut(u64) -> usize) {
    let smoke = std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1");
    let (rounds, pages) = if smoke { (3, 50) } else { (15, 1000) };
    let mut bytes = 0usize;
    for s in 0..pages / 4 {
        bytes += render(s as u64); // warm-up: caches, arenas, page faults
    }
    let mut per_page: Vec<f64> = (0..rounds)
        .map(|r| {
            let t = Instant::now();
            for p in 0..pages {
                bytes += render((r * pages + p) as u64);
            }
            t.elapsed().as_nanos() as f64 / pages as f64
        })
        .collect();
    per_page.sort_by(f64::total_cmp);
    let median = per_page[per_page.len() / 2];
    println!(
        "render name={name} ns_per_page={median:.0} rounds={rounds} pages={pages} bytes={bytes}"
    );
}
