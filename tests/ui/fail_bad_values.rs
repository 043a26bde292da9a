#[pagegen::main(workers = 0, allocator = "no")]
async fn main() {}

#[pagegen::test(workers = "two")]
async fn t() {}
