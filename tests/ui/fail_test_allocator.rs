#[pagegen::test(allocator = false)]
async fn t() {}

fn main() {}
