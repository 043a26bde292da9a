#[pagegen::main(threads = 4)]
async fn main() {
    let _: () = pagegen::spawn(async {}).await.unwrap();
}
