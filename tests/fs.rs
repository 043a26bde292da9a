//! `pagegen::fs` on pagegen's own runtime: operations run on the workers' I/O drivers (io_uring where
//! the kernel allows it, else the blocking pool) and land in the account of the request that made them.
use std::io::ErrorKind;

use pagegen::core::{ClassId, Grant, IoOpKind, RequestCtx, RequestId};
use pagegen::runtime::Handle;

#[pagegen::test]
async fn fs_round_trips_and_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("page.html");
    pagegen::fs::write(&path, b"<h1>home</h1>").await.unwrap();
    assert_eq!(pagegen::fs::read(&path).await.unwrap(), b"<h1>home</h1>");
    assert_eq!(
        pagegen::fs::read_to_string(&path).await.unwrap(),
        "<h1>home</h1>"
    );
    let err = pagegen::fs::read(dir.path().join("missing.html"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[pagegen::test(workers = 2)]
async fn a_requests_file_reads_are_charged_to_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        std::fs::write(dir.path().join(format!("row{i}")), vec![b'x'; 1000 + i]).unwrap();
    }
    let ctx = RequestCtx::new(RequestId(7), Grant::unlimited(ClassId::from_raw(3)), 0);
    let paths: Vec<_> = (0..4).map(|i| dir.path().join(format!("row{i}"))).collect();
    let total = Handle::current()
        .spawn_with_ctx(ctx.clone(), async move {
            let mut total = 0;
            for p in &paths {
                total += pagegen::fs::read(p).await.unwrap().len();
            }
            total
        })
        .await
        .unwrap();
    assert_eq!(total, 4006);
    let io = ctx.usage(0).io;
    // Per file: the data read and the 1-byte end probe of `fs::read`'s chain (on both backends);
    // one read where a ring cannot chain and `statx` sizes the file instead (kernels before 6.8).
    let reads = io.ops[IoOpKind::Read as usize];
    assert!(reads == 8 || reads == 4, "{io:?}");
    assert_eq!(io.ops[IoOpKind::Open as usize], 4, "{io:?}");
    assert_eq!(io.read_bytes, 4006);
    assert!(io.distinct_files >= 3, "{io:?}");
    // Work outside the request is not charged to it.
    pagegen::fs::read(dir.path().join("row0")).await.unwrap();
    assert_eq!(ctx.usage(0).io.read_bytes, 4006);
}
