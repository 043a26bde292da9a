#[pagegen::route(cpu = "20ms")]
fn search() -> &'static str {
    "results"
}

#[pagegen::route(cpu = "20ms")]
struct NotAHandler;

fn main() {
    let _ = search();
    let _ = NotAHandler;
}
