#[pagegen::route(class = "search", cpus = "20ms", class = "find")]
async fn search() -> &'static str {
    "results"
}

fn main() {
    let _ = search();
}
