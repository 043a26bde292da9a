#[pagegen::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), std::io::Error> {
    pagegen::task::yield_now().await;
    Ok(())
}
