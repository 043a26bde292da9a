//! The smallest pagegen program: register a site's route classes in a persisted registry, admit one
//! request under a grant, account for it, and encode its profile record.
//!
//! Run: `cargo run --release --example hello`
use std::time::Duration;

use pagegen::core::{
    ClassRegistry, ClassSpec, Clock, Grant, ProfileRecord, RealClock, RequestCtx, RequestId,
    RouteSpec, Shares,
};

fn main() -> anyhow::Result<()> {
    let state = std::env::var("PAGEGEN_STATE_DIR").unwrap_or_else(|_| ".pagegen".into());
    let registry = ClassRegistry::open(std::path::Path::new(&state).join("classes"))?;
    let home = registry.register(ClassSpec::new("GET /"))?;
    let search = registry.register(
        ClassSpec::new("GET /search")
            .with_shares(Shares::new(50).expect("1..=1000"))
            .with_route(RouteSpec {
                cpu: Some(Duration::from_millis(30)),
                ..RouteSpec::default()
            }),
    )?;
    println!("classes (ids are stable across runs, see {state}/classes):");
    for (id, spec) in registry.classes() {
        println!("  {id}: {} shares={}", spec.name, spec.shares.get());
    }

    let clock = RealClock::new();
    let mut grant = Grant::unlimited(search);
    grant.mem_hard = 64 << 20;
    let ctx = RequestCtx::new(RequestId(1), grant, clock.now());
    ctx.cpu.record_poll(1_200_000, 1_300_000, 4_000);
    let record = ProfileRecord::new(1, ctx.class(), ctx.usage(clock.now()));
    let bytes = record.to_bytes();
    assert_eq!(ProfileRecord::decode(&bytes)?, record);
    println!(
        "request {} in {} used {} µs CPU; its profile record is {} bytes (home page is {home})",
        ctx.id(),
        ctx.class(),
        record.usage.cpu.cpu_ns / 1000,
        bytes.len()
    );
    Ok(())
}
