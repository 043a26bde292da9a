#[pagegen::route(
    class = "search",
    cpu = "20ms",
    mem = "64MiB",
    io_ops = 4,
    io_depth = 8,
    io_bw = "50MiB/s",
    timeout = "2s",
    pool = "latency",
    path = "/search"
)]
async fn search() -> &'static str {
    "results"
}

#[pagegen::route(cpu = "1.5 ms", mem = "1GB", pool = "bulk")]
pub async fn report() -> &'static str {
    "report"
}

#[pagegen::route]
async fn about() -> &'static str {
    "about"
}

fn main() {
    let _ = (search(), report(), about());
}
