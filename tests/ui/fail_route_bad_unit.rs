#[pagegen::route(cpu = "20mx", mem = "64mib", io_bw = "50MiB", timeout = "0s")]
async fn search() -> &'static str {
    "results"
}

fn main() {
    let _ = search();
}
