//! Per-class latency and outcome accounting.
//!
//! A request's latency is measured from its *intended* send time (its place in the open-loop
//! schedule), not from when the generator managed to send it: if the server (or the generator's
//! connection pool) stalls, every request scheduled during the stall is charged for the wait.
//! This is the coordinated-omission correction of wrk2 (Gil Tene), applied per request rather than
//! by back-filling a histogram. The time from the actual send is kept beside it (`service`) so
//! the difference — queueing before the request reached a socket — stays visible.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram holds, µs (longer values are clamped to it).
const MAX_US: u64 = 120_000_000;

/// What became of one scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// The connection failed (refused, reset, closed mid-response).
    Error,
    /// No connection became free before the request's deadline: it was never sent.
    Unsent,
    /// Sent, but no response before the run's drain limit.
    TimedOut,
}

/// Counts and histograms for one class.
#[derive(Debug, Clone)]
pub struct ClassRecorder {
    /// Intended send time → response, µs, every answered or timed-out request.
    pub latency: Histogram<u64>,
    /// Actual send time → response, µs.
    pub service: Histogram<u64>,
    /// Intended → actual send time, µs: how long the request waited in the generator (its
    /// dispatcher's lag, or a busy pool), every sent request.
    pub send_delay: Histogram<u64>,
    /// Scheduled requests recorded (every outcome).
    pub scheduled: u64,
    /// 2xx responses.
    pub ok: u64,
    /// 2xx responses within the class's deadline (goodput).
    pub good: u64,
    /// 503 responses (shed or cancelled by the server).
    pub shed: u64,
    /// Other non-2xx statuses.
    pub other_status: u64,
    /// Connection errors.
    pub errors: u64,
    /// Never sent: the pool had no free connection before the deadline.
    pub unsent: u64,
    /// No response before the drain limit.
    pub timed_out: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

impl Default for ClassRecorder {
    fn default() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            send_delay: histogram(),
            scheduled: 0,
            ok: 0,
            good: 0,
            shed: 0,
            other_status: 0,
            errors: 0,
            unsent: 0,
            timed_out: 0,
        }
    }
}

impl ClassRecorder {
    /// Records one request: `intended`, `sent` and `done` are offsets from the start of the run
    /// (`sent` is `None` when it never left the generator); `deadline` is the class's goodput limit.
    pub fn record(
        &mut self,
        intended: Duration,
        sent: Option<Duration>,
        done: Duration,
        outcome: Outcome,
        deadline: Duration,
    ) {
        self.scheduled += 1;
        let latency = done.saturating_sub(intended);
        match outcome {
            Outcome::Unsent => {
                self.unsent += 1;
                return;
            }
            Outcome::Error => {
                self.errors += 1;
                return;
            }
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Status(s) if (200..300).contains(&s) => {
                self.ok += 1;
                if latency <= deadline {
                    self.good += 1;
                }
            }
            Outcome::Status(503) => self.shed += 1,
            Outcome::Status(_) => self.other_status += 1,
        }
        // Answered and timed-out requests go into the latency histograms; a timed-out one with the
        // time it had waited when given up (a lower bound), so the slowest never vanish from the tail.
        self.latency.saturating_record(micros(latency));
        if let Some(sent) = sent {
            self.service
                .saturating_record(micros(done.saturating_sub(sent)));
            self.send_delay
                .saturating_record(micros(sent.saturating_sub(intended)));
        }
    }

    /// A summary for reports.
    pub fn summary(&self, name: &str, seconds: f64) -> ClassSummary {
        // No answered request: no latency to show (NaN, `null` in JSON, "–" in tables), not 0.
        let q = |h: &Histogram<u64>, p: f64| {
            if h.is_empty() {
                f64::NAN
            } else {
                h.value_at_quantile(p) as f64 / 1000.0
            }
        };
        let n = self.scheduled.max(1) as f64;
        ClassSummary {
            class: name.to_string(),
            scheduled: self.scheduled,
            ok: self.ok,
            good: self.good,
            shed: self.shed,
            other_status: self.other_status,
            errors: self.errors,
            unsent: self.unsent,
            timed_out: self.timed_out,
            goodput: self.good as f64 / n,
            shed_rate: self.shed as f64 / n,
            rate: self.scheduled as f64 / seconds.max(1e-9),
            p50_ms: q(&self.latency, 0.50),
            p90_ms: q(&self.latency, 0.90),
            p99_ms: q(&self.latency, 0.99),
            p999_ms: q(&self.latency, 0.999),
            max_ms: if self.latency.is_empty() {
                f64::NAN
            } else {
                self.latency.max() as f64 / 1000.0
            },
            service_p50_ms: q(&self.service, 0.50),
            service_p99_ms: q(&self.service, 0.99),
            send_delay_p99_ms: q(&self.send_delay, 0.99),
        }
    }
}

/// One class's figures for one run, in milliseconds and fractions of scheduled requests.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClassSummary {
    /// Class name from the mix.
    pub class: String,
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// 2xx responses.
    pub ok: u64,
    /// 2xx within the class's deadline.
    pub good: u64,
    /// 503 responses.
    pub shed: u64,
    /// Other non-2xx statuses.
    pub other_status: u64,
    /// Connection errors.
    pub errors: u64,
    /// Never sent (no free connection before the deadline).
    pub unsent: u64,
    /// No answer before the drain limit.
    pub timed_out: u64,
    /// good ÷ scheduled.
    pub goodput: f64,
    /// 503 ÷ scheduled.
    pub shed_rate: f64,
    /// Scheduled requests per second.
    pub rate: f64,
    /// Latency from the intended send time, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest recorded, ms.
    pub max_ms: f64,
    /// Latency from the actual send, median, ms.
    pub service_p50_ms: f64,
    /// Latency from the actual send, 99th percentile, ms.
    pub service_p99_ms: f64,
    /// Intended → actual send, 99th percentile, ms (time spent in the generator).
    pub send_delay_p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn latency_counts_from_the_intended_time() {
        // A request meant for t = 100 ms, held up by a stalled connection until 150 ms, answered
        // at 152 ms: 52 ms of latency, 2 ms of service.
        let mut r = ClassRecorder::default();
        r.record(
            ms(100),
            Some(ms(150)),
            ms(152),
            Outcome::Status(200),
            ms(1000),
        );
        assert_eq!(r.latency.len(), 1);
        let lat = r.latency.max();
        assert!((51_900..=52_100).contains(&lat), "latency {lat} µs");
        let svc = r.service.max();
        assert!((1_990..=2_010).contains(&svc), "service {svc} µs");
        let delay = r.send_delay.max();
        assert!((49_900..=50_100).contains(&delay), "send delay {delay} µs");
    }

    #[test]
    fn a_stall_is_charged_to_every_request_scheduled_during_it() {
        // Ten requests every 10 ms, all stuck behind a 100 ms stall and answered together at 100 ms:
        // a closed-loop generator would have sent one and recorded one slow sample; here each
        // request waits from its own intended time.
        let mut r = ClassRecorder::default();
        for i in 0..10 {
            r.record(
                ms(i * 10),
                Some(ms(99)),
                ms(100),
                Outcome::Status(200),
                ms(50),
            );
        }
        let s = r.summary("light", 1.0);
        assert_eq!(s.scheduled, 10);
        assert_eq!(s.ok, 10);
        // Latencies 100, 90, ..., 10 ms: the five from t >= 50 ms are within the 50 ms deadline.
        assert_eq!(s.good, 5);
        assert!((s.goodput - 0.5).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "p50 {}", s.p50_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1);
        assert!(s.service_p99_ms < 1.1);
    }

    #[test]
    fn outcomes_are_counted_apart() {
        let mut r = ClassRecorder::default();
        let d = ms(100);
        r.record(ms(0), Some(ms(0)), ms(5), Outcome::Status(200), d);
        r.record(ms(0), Some(ms(0)), ms(500), Outcome::Status(200), d);
        r.record(ms(0), Some(ms(0)), ms(1), Outcome::Status(503), d);
        r.record(ms(0), Some(ms(0)), ms(1), Outcome::Status(500), d);
        r.record(ms(0), Some(ms(0)), ms(1), Outcome::Error, d);
        r.record(ms(0), None, ms(100), Outcome::Unsent, d);
        r.record(ms(0), Some(ms(0)), ms(3000), Outcome::TimedOut, d);
        let s = r.summary("c", 1.0);
        assert_eq!(
            (
                s.scheduled,
                s.ok,
                s.good,
                s.shed,
                s.other_status,
                s.errors,
                s.unsent,
                s.timed_out
            ),
            (7, 2, 1, 1, 1, 1, 1, 1)
        );
        // Errors and unsent requests have no response time; the timed-out one is in the tail.
        assert_eq!(r.latency.len(), 5);
        assert!((s.max_ms - 3000.0).abs() < 3.0);
    }
}
