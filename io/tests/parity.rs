//! Fallback parity: the same script gives the same data, errors and profile on io_uring and on the
//! blocking pool.

mod common;

use std::io::ErrorKind;

use pagegen_core::{ClassId, Grant, IoUsage, RequestCtx, RequestId};
use pagegen_io::fs::{self, File};
use pagegen_io::Io;

#[derive(Debug, PartialEq)]
struct Outcome {
    data: Vec<Vec<u8>>,
    errors: Vec<ErrorKind>,
    profile: IoUsage,
}

fn script(io: &Io, dir: &std::path::Path) -> Outcome {
    let ctx = RequestCtx::new(RequestId(9), Grant::unlimited(ClassId::from_raw(3)), 0);
    let _g = RequestCtx::enter(&ctx);
    let (data, errors) = io.block_on(async {
        let mut data = Vec::new();
        let mut errors = Vec::new();
        let p = dir.join(format!("parity-{}", io.backend()));
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        fs::write(&p, &body).await.unwrap();
        data.push(fs::read(&p).await.unwrap());
        let f = File::open(&p).await.unwrap();
        for off in [0u64, 16384, 32768, 299_990, 400_000] {
            let (r, buf) = f.read_at(Vec::with_capacity(16384), off).await;
            r.unwrap();
            data.push(buf);
        }
        data.push(
            fs::read_to_string("/proc/self/cmdline")
                .await
                .map(|s| s.len().to_le_bytes().to_vec())
                .unwrap_or_default(),
        );
        for e in [
            fs::read(dir.join("missing")).await.err(),
            fs::metadata(dir.join("missing")).await.err(),
            File::create(dir.join("x/y")).await.err(),
            fs::read(dir).await.err(),
        ] {
            errors.push(e.map(|e| e.kind()).unwrap_or(ErrorKind::Other));
        }
        (data, errors)
    });
    let mut profile = ctx.io.snapshot();
    // Latencies differ by nature; everything else must match.
    profile.latency_ns = 0;
    profile.latency_log2 = [0; pagegen_core::LOG2_BUCKETS];
    Outcome {
        data,
        errors,
        profile,
    }
}

#[test]
fn both_backends_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ios = common::backends();
    // A ring that cannot chain fs::read (kernel before 6.8) reads unchained, with other ops than
    // the blocking pool's chain steps: then only data and errors can agree.
    let chained: Vec<bool> = ios
        .iter()
        .map(|io| common::chains(io, dir.path()))
        .collect();
    let same_ops = chained.iter().all(|&c| c == chained[0]);
    let runs: Vec<(pagegen_io::Backend, Outcome)> = ios
        .iter()
        .map(|io| {
            let mut o = script(io, dir.path());
            if !same_ops {
                o.profile = IoUsage::default();
            }
            (io.backend(), o)
        })
        .collect();
    let (_, first) = &runs[0];
    assert_eq!(first.errors[0], ErrorKind::NotFound);
    assert_eq!(first.data[5].len(), 0, "past the end");
    assert_eq!(first.data[4].len(), 10, "short at the end");
    for (backend, o) in &runs[1..] {
        assert_eq!(o, first, "{backend} differs from {}", runs[0].0);
    }
}
