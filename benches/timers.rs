//! Timer lateness beside libraries that `tokio::spawn` (issue: "libraries that call `tokio::spawn`
//! must not stall the timers every pagegen task relies on").
//!
//! A task sleeps 1 ms with `tokio::time::sleep`, `SLEEPS` times in a row, and records how late each
//! wake-up was (elapsed − 1 ms). Two scenarios, each on pagegen (`Builder`, 2 workers) and on tokio
//! (multi-thread, 2 workers), same process, runs alternated:
//! - **idle**: nothing else runs;
//! - **spawned**: one `tokio::spawn`ed task computes 5 ms between yields the whole time (what a
//!   database pool's or an HTTP client's background task does at its worst).
//!
//! Reported: lateness p50/p99 per runtime and scenario (median over rounds) and pagegen/tokio.
//! `cargo bench --bench timers` (5 rounds × 300 sleeps); `-- --quick` for 1 round × 50.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spins for `d` of wall time (the machine may preempt; the point is 5 ms between yields).
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

async fn lateness(sleeps: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(sleeps);
    for _ in 0..sleeps {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        v.push(
            t.elapsed()
                .saturating_sub(Duration::from_millis(1))
                .as_micros() as u64,
        );
    }
    v
}

/// Runs the measurement with (or without) a spawned 5 ms-between-yields task beside it.
async fn scenario(sleeps: usize, spawned: bool) -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let bg = spawned.then(|| {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                spin(Duration::from_millis(5));
                tokio::task::yield_now().await;
            }
        })
    });
    let v = lateness(sleeps).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(bg) = bg {
        let _ = bg.await;
    }
    v
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn on_pagegen(sleeps: usize, spawned: bool) -> Vec<u64> {
    let rt = pagegen::runtime::Builder::new()
        .workers(2)
        .bulk_workers(1)
        .temporary_state()
        .trainer(false)
        .build()
        .expect("pagegen runtime");
    rt.block_on(async move { pagegen::spawn(scenario(sleeps, spawned)).await.unwrap() })
}

fn on_tokio(sleeps: usize, spawned: bool) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move { tokio::spawn(scenario(sleeps, spawned)).await.unwrap() })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("PAGEGEN_TIMERS_QUICK").is_some();
    let (rounds, sleeps) = if quick { (1, 50) } else { (5, 300) };
    println!("timer lateness (µs) of a 1 ms tokio::time::sleep, {rounds} rounds × {sleeps} sleeps, median over rounds");
    println!("| scenario | runtime | p50 | p99 |");
    println!("|---|---|---|---|");
    for spawned in [false, true] {
        let name = if spawned {
            "beside a tokio::spawn computing 5 ms/yield"
        } else {
            "idle"
        };
        let mut rows: Vec<(&str, Vec<u64>, Vec<u64>)> =
            vec![("pagegen", vec![], vec![]), ("tokio", vec![], vec![])];
        for _ in 0..rounds {
            for (i, run) in [on_pagegen as fn(usize, bool) -> Vec<u64>, on_tokio]
                .iter()
                .enumerate()
            {
                let mut v = run(sleeps, spawned);
                rows[i].1.push(pct(&mut v, 0.5));
                rows[i].2.push(pct(&mut v, 0.99));
            }
        }
        let meds: Vec<(u64, u64)> = rows
            .iter()
            .map(|(_, a, b)| (median(a.clone()), median(b.clone())))
            .collect();
        for ((rt, _, _), (p50, p99)) in rows.iter().zip(&meds) {
            println!("| {name} | {rt} | {p50} | {p99} |");
        }
        let r = |a: u64, b: u64| a as f64 / b.max(1) as f64;
        println!(
            "| {name} | pagegen/tokio | {:.2}× | {:.2}× |",
            r(meds[0].0 + 1000, meds[1].0 + 1000),
            r(meds[0].1 + 1000, meds[1].1 + 1000)
        );
    }
    println!("(ratios are of the whole wake-up time, 1 ms + lateness)");
}
