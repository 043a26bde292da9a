#[pagegen::main(workers = 1, allocator = false)]
async fn main() {
    let v = pagegen::spawn(async { 21 }).await.unwrap();
    assert_eq!(v * 2, 42);
    assert_eq!(std::env::var("RAYON_NUM_THREADS").as_deref(), Ok("1"));
}
