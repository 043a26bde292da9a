//! Per class: distributions of what requests were predicted to use, what they used, and what they
//! were granted — the figures that show whether the model earns its place.
//!
//! Fed by the [`Recorder`](crate::profile::Recorder) thread with every finished request's record
//! (never the request path), read at scrape time by the metrics (`pagegen_request_*`,
//! `pagegen_grant_*`). Buckets are powers of 4, wide enough for a 10 µs page and a 10 s report,
//! a 4 KiB handler and a 4 GiB one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pagegen_core::{ClassId, Outcome, ProfileRecord};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// One class's histograms.
#[derive(Debug)]
pub struct ClassHistograms {
    /// CPU seconds used, per request that ran.
    pub cpu_actual: Histogram,
    /// CPU seconds predicted (central), per request with a prediction.
    pub cpu_predicted: Histogram,
    /// Peak bytes used.
    pub mem_actual: Histogram,
    /// Peak bytes predicted (central).
    pub mem_predicted: Histogram,
    /// File I/O bytes used.
    pub io_actual: Histogram,
    /// File I/O bytes predicted (central).
    pub io_predicted: Histogram,
    /// The CPU budget granted (limited grants only), seconds.
    pub grant_cpu: Histogram,
    /// The memory budget granted (hard limit; limited grants only), bytes.
    pub grant_mem: Histogram,
    /// Delay from admission to the handler's first poll, seconds (the request's queueing).
    pub queue_delay: Histogram,
}

fn seconds() -> Histogram {
    // 10 µs × 4^k: 10 µs … ~2.6 s, then +Inf.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

fn bytes() -> Histogram {
    // 4 KiB × 4^k: 4 KiB … 1 GiB.
    Histogram::new(exponential_buckets(4096.0, 4.0, 10))
}

impl Default for ClassHistograms {
    fn default() -> Self {
        ClassHistograms {
            cpu_actual: seconds(),
            cpu_predicted: seconds(),
            mem_actual: bytes(),
            mem_predicted: bytes(),
            io_actual: bytes(),
            io_predicted: bytes(),
            grant_cpu: seconds(),
            grant_mem: bytes(),
            queue_delay: seconds(),
        }
    }
}

/// Every class's histograms.
#[derive(Debug, Default)]
pub struct RequestHistograms {
    by: Mutex<HashMap<ClassId, Arc<ClassHistograms>>>,
}

impl RequestHistograms {
    /// Adds one finished request.
    pub fn observe(&self, r: &ProfileRecord) {
        let h = self
            .by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(r.class)
            .or_default()
            .clone();
        let s = |ns: u64| ns as f64 / 1e9;
        if let Some(d) = &r.predicted {
            h.cpu_predicted.observe(s(d.cpu_ns.central));
            h.mem_predicted.observe(d.peak_bytes.central as f64);
            h.io_predicted.observe(d.io_bytes.central as f64);
        }
        if let Some(g) = &r.grant {
            if g.cpu_ns != u64::MAX {
                h.grant_cpu.observe(s(g.cpu_ns));
            }
            if g.mem_hard != u64::MAX {
                h.grant_mem.observe(g.mem_hard as f64);
            }
        }
        if r.outcome != Outcome::Shed {
            let u = &r.usage;
            h.cpu_actual.observe(s(u.cpu.cpu_ns));
            h.mem_actual.observe(u.mem.peak_net_bytes.max(0) as f64);
            h.io_actual
                .observe((u.io.read_bytes + u.io.write_bytes) as f64);
            h.queue_delay.observe(s(u.cpu.first_poll_delay_ns));
        }
    }

    /// Every class with histograms, by id.
    pub fn snapshot(&self) -> Vec<(ClassId, Arc<ClassHistograms>)> {
        let mut v: Vec<_> = self
            .by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&c, h)| (c, h.clone()))
            .collect();
        v.sort_by_key(|(c, _)| *c);
        v
    }
}
