//! The smallest pagegen service: a hyper server on 127.0.0.1 that renders a page, moved from
//! `#[tokio::main]` by renaming only (`tokio::spawn` → `pagegen::spawn`, `TokioExecutor` →
//! `HyperExecutor`). It then sends itself a few requests with hyper's client and exits.
//!
//! Run: `cargo run --release --example hello`
use std::convert::Infallible;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use pagegen::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: usize = 5;

async fn render(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let page = format!(
        "<html><body><h1>hello from pagegen</h1><p>{} {}</p></body></html>",
        req.method(),
        req.uri().path()
    );
    Ok(Response::new(Full::new(Bytes::from(page))))
}

#[pagegen::main(workers = 2)]
async fn main() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");

    // The accept loop, as one would write it on tokio, with pagegen::spawn per connection.
    let server = pagegen::spawn(async move {
        for _ in 0..REQUESTS {
            let (stream, _) = listener.accept().await?;
            pagegen::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(render));
                if let Err(e) = conn.await {
                    eprintln!("connection error: {e}");
                }
            });
        }
        anyhow::Ok(())
    });

    for i in 0..REQUESTS {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        pagegen::spawn(conn);
        let req = Request::get(format!("/page/{i}")).body(Empty::<Bytes>::new())?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!("GET /page/{i} -> {status}, {} bytes", body.len());
        anyhow::ensure!(status.is_success(), "request {i} failed");
    }
    server.await??;
    println!("served {REQUESTS} requests");
    Ok(())
}
