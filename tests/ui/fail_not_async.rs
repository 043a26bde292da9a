#[pagegen::main]
fn main() {}
