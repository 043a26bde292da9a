//! One open-loop run against one server: a dispatcher thread releases each request at its
//! intended time, the async side sends it on the pool and records it from that intended time.
//!
//! The dispatcher is a plain thread sleeping with the kernel's high-resolution timers (tokio's
//! timer wheel has 1 ms ticks, which would bunch arrivals and add up to a millisecond to every
//! latency); how late it hands each request over is measured and reported as the generator's
//! own lag, so a generator that falls behind is visible rather than silently lowering the rate.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use crate::{
    client::Pool,
    latency::{ClassRecorder, ClassSummary, Outcome},
    mix::Workload,
    schedule::{Episode, Rng},
    sys,
};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// Mean offered rate, requests per second.
    pub rate: f64,
    /// Run this long before recording (same rate; lets caches and learned state settle).
    pub warmup: Duration,
    /// Recorded window.
    pub measure: Duration,
    /// Seed of the arrival schedule and the request parameters.
    pub seed: u64,
    /// Most connections the pool may open.
    pub pool_cap: usize,
    /// An episode of the whole load (times from the start of the run, warm-up included); the
    /// light class's every request is then kept in [`RunResult::light_samples`].
    pub episode: Option<Episode>,
    /// Run the dispatcher thread at real-time priority ([`sys::raise_thread_to_realtime`]).
    pub realtime: bool,
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Offered mean rate, requests/s.
    pub rate: f64,
    /// Measured window, s.
    pub seconds: f64,
    /// Per class, in mix order.
    pub classes: Vec<ClassSummary>,
    /// Requests scheduled in the window, all classes.
    pub scheduled: u64,
    /// 2xx within deadline ÷ scheduled, all classes.
    pub goodput: f64,
    /// 503 ÷ scheduled, all classes.
    pub shed_rate: f64,
    /// Errors, unsent and timed out, all classes.
    pub failed: u64,
    /// p99 of the light class, ms.
    pub light_p99_ms: f64,
    /// How late the dispatcher handed requests over, p99, ms (the generator's own lag).
    pub dispatch_lag_p99_ms: f64,
    /// The generator's CPU time over the run ÷ wall time (1.0 = one core).
    pub generator_cpu: f64,
    /// Most connections open at once.
    pub peak_connections: usize,
    /// Connections opened.
    pub connections_opened: usize,
    /// With an episode: each measured light request's (intended time, s from the start of the
    /// measured window; latency, ms, infinite without a 2xx), in completion order.
    #[serde(skip)]
    pub light_samples: Vec<LightSample>,
}

/// A light request's intended time (s from the start of the measured window) and latency (ms,
/// infinite without a 2xx).
pub type LightSample = (f64, f64);

struct Job {
    intended: Instant,
    class: usize,
    path: String,
    measured: bool,
}

/// Runs `workload` at `spec.rate` against `addr`. `on_tick` is called about every 100 ms with
/// the fraction of the run done (for a progress bar).
pub async fn run(
    workload: &Workload,
    addr: SocketAddr,
    spec: RunSpec,
    mut on_tick: impl FnMut(f64),
) -> RunResult {
    let classes = &workload.mix.classes;
    let deadlines: Vec<Duration> = classes
        .iter()
        .map(|c| Duration::from_millis(c.deadline_ms))
        .collect();
    let max_deadline = deadlines.iter().max().copied().unwrap_or_default();
    // Answers still missing this long after the last arrival are recorded as timed out.
    let drain = max_deadline + Duration::from_secs(1);
    let total = spec.warmup + spec.measure;

    let cpu0 = sys::own_cpu_time();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let hard_deadline = start + total + drain;

    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let dispatcher = {
        let workload = workload.clone();
        let start_std = start.into_std();
        std::thread::Builder::new()
            .name("bench-dispatch".into())
            .spawn(move || {
                if spec.realtime {
                    // Refused only without CAP_SYS_NICE; the main thread already reported that.
                    let _ = sys::raise_thread_to_realtime();
                }
                let schedule = workload.schedule(spec.rate, spec.seed, spec.episode);
                let mut params = Rng::new(spec.seed ^ 0x5eed_0f9a_7a55);
                for a in schedule {
                    if a.at >= total {
                        break;
                    }
                    let path = workload.path(a.class, &mut params, a.at.as_secs_f64());
                    let due = start_std + a.at;
                    let now = std::time::Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let job = Job {
                        intended: Instant::from_std(due),
                        class: a.class,
                        path,
                        measured: a.at >= spec.warmup,
                    };
                    if tx.send(job).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the dispatcher thread")
    };

    let pool = Arc::new(Pool::new(addr, spec.pool_cap));
    let recorders: Arc<Mutex<Vec<ClassRecorder>>> =
        Arc::new(Mutex::new(vec![ClassRecorder::default(); classes.len()]));
    let light = workload.mix.light();
    let light_samples: Option<Arc<Mutex<Vec<LightSample>>>> =
        spec.episode.map(|_| Arc::new(Mutex::new(Vec::new())));
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut open = true;
    while open || !tasks.is_empty() {
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => {
                    let now = Instant::now();
                    if job.measured {
                        lag.saturating_record(
                            (now.saturating_duration_since(job.intended).as_micros() as u64).max(1),
                        );
                    }
                    let pool = Arc::clone(&pool);
                    let recorders = Arc::clone(&recorders);
                    let samples = light_samples.clone().filter(|_| job.class == light);
                    let deadline = deadlines[job.class];
                    tasks.spawn(async move {
                        let sent = pool
                            .get(&job.path, job.intended + deadline, hard_deadline)
                            .await;
                        if job.measured {
                            let done = Instant::now().min(hard_deadline);
                            let rel = |t: Instant| t.saturating_duration_since(measure_from);
                            recorders.lock().expect("recorder lock")[job.class].record(
                                rel(job.intended),
                                sent.at.map(rel),
                                rel(done),
                                sent.outcome,
                                deadline,
                            );
                            if let Some(samples) = samples {
                                let ms = match sent.outcome {
                                    Outcome::Status(s) if (200..300).contains(&s) => {
                                        done.saturating_duration_since(job.intended).as_secs_f64()
                                            * 1000.0
                                    }
                                    _ => f64::INFINITY,
                                };
                                samples
                                    .lock()
                                    .expect("sample lock")
                                    .push((rel(job.intended).as_secs_f64(), ms));
                            }
                        }
                    });
                }
                None => open = false,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tick.tick() => {
                let done = Instant::now().saturating_duration_since(start).as_secs_f64()
                    / total.as_secs_f64();
                on_tick(done.min(1.0));
            }
        }
    }
    dispatcher.join().expect("dispatcher thread panicked");
    let wall = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    let cpu = (sys::own_cpu_time().saturating_sub(cpu0)).as_secs_f64();

    let seconds = spec.measure.as_secs_f64();
    let recorders = recorders.lock().expect("recorder lock");
    let summaries: Vec<ClassSummary> = recorders
        .iter()
        .zip(classes)
        .map(|(r, c)| r.summary(&c.name, seconds))
        .collect();
    let scheduled: u64 = summaries.iter().map(|s| s.scheduled).sum();
    let good: u64 = summaries.iter().map(|s| s.good).sum();
    let shed: u64 = summaries.iter().map(|s| s.shed).sum();
    let failed: u64 = summaries
        .iter()
        .map(|s| s.errors + s.unsent + s.timed_out)
        .sum();
    let light_p99_ms = summaries[workload.mix.light()].p99_ms;
    RunResult {
        rate: spec.rate,
        seconds,
        scheduled,
        goodput: good as f64 / scheduled.max(1) as f64,
        shed_rate: shed as f64 / scheduled.max(1) as f64,
        failed,
        light_p99_ms,
        dispatch_lag_p99_ms: if lag.is_empty() {
            f64::NAN
        } else {
            lag.value_at_quantile(0.99) as f64 / 1000.0
        },
        generator_cpu: cpu / wall.max(1e-9),
        peak_connections: pool.peak(),
        connections_opened: pool.opened(),
        classes: summaries,
        light_samples: light_samples
            .map(|s| std::mem::take(&mut *s.lock().expect("sample lock")))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::{Mix, Workload};
    use std::path::Path;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    const MIX: &str = r#"
name = "t"
[[class]]
name = "light"
weight = 3
path = "/"
light = true
deadline_ms = 60
[[class]]
name = "other"
weight = 1
path = "/p/{id}"
params = { id = { uniform = [1, 9] } }
deadline_ms = 60
"#;

    /// A minimal HTTP/1.1 responder: answers every request on a connection with `status`, or
    /// never answers when `status` is `None`.
    async fn serve(listener: TcpListener, status: Option<u16>) {
        serve_with(listener, status, false).await
    }

    /// As [`serve`]; with `close`, each answer says `connection: close` and the connection ends.
    async fn serve_with(listener: TcpListener, status: Option<u16>, close: bool) {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let Some(code) = status else { continue };
                        let connection = if close { "connection: close\r\n" } else { "" };
                        let reply =
                            format!("HTTP/1.1 {code} X\r\n{connection}content-length: 2\r\n\r\nok");
                        if s.write_all(reply.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn spec(pool_cap: usize) -> RunSpec {
        RunSpec {
            rate: 400.0,
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(300),
            seed: 9,
            pool_cap,
            episode: None,
            realtime: false,
        }
    }

    /// Requests of the schedule that fall in the measured window, per class.
    fn expected(w: &Workload, s: RunSpec) -> Vec<u64> {
        let mut n = vec![0u64; w.mix.classes.len()];
        for a in w.schedule(s.rate, s.seed, s.episode) {
            if a.at >= s.warmup + s.measure {
                break;
            }
            if a.at >= s.warmup {
                n[a.class] += 1;
            }
        }
        n
    }

    #[test]
    fn every_scheduled_request_is_accounted_for() {
        let w = Workload::new(Mix::parse(MIX).unwrap(), Path::new("/x"), 1.0).unwrap();
        let s = spec(64);
        let result = runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, Some(200)));
            run(&w, addr, s, |_| {}).await
        });
        let want = expected(&w, s);
        let got: Vec<u64> = result.classes.iter().map(|c| c.scheduled).collect();
        assert_eq!(
            got, want,
            "the run records exactly the schedule's measured arrivals"
        );
        for c in &result.classes {
            assert_eq!(c.ok, c.scheduled, "{c:?}");
            assert_eq!(c.errors + c.unsent + c.timed_out + c.shed, 0);
        }
        assert_eq!(result.failed, 0);
        assert!(result.peak_connections >= 1 && result.peak_connections <= 64);
    }

    #[test]
    fn an_episode_keeps_every_light_request_as_a_sample() {
        let w = Workload::new(Mix::parse(MIX).unwrap(), Path::new("/x"), 1.0).unwrap();
        let s = RunSpec {
            episode: Some(Episode {
                factor: 3.0,
                from_s: 0.1,
                until_s: 0.2,
            }),
            ..spec(64)
        };
        for (status, answered) in [(200, true), (503, false)] {
            let result = runtime().block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(serve(listener, Some(status)));
                run(&w, addr, s, |_| {}).await
            });
            let light = w.mix.light();
            assert_eq!(
                result.light_samples.len() as u64,
                expected(&w, s)[light],
                "one sample per measured light request"
            );
            assert_eq!(result.classes[light].scheduled, expected(&w, s)[light]);
            for &(t, ms) in &result.light_samples {
                assert!((0.0..0.3).contains(&t), "intended time {t} in the window");
                // A 503 is no answer for recovery: infinitely slow.
                assert_eq!(ms.is_finite(), answered, "{status}: {ms}");
            }
        }
        // The episode triples the rate in the first 100 ms of the measured window.
        let times: Vec<f64> = w
            .schedule(s.rate, s.seed, s.episode)
            .map(|a| a.at.as_secs_f64())
            .take_while(|t| *t < 0.4)
            .collect();
        let inside = times.iter().filter(|t| (0.1..0.2).contains(*t)).count();
        let after = times.iter().filter(|t| (0.2..0.3).contains(*t)).count();
        assert!(inside > after, "{inside} vs {after}");
    }

    #[test]
    fn a_server_closing_every_connection_costs_no_errors() {
        let w = Workload::new(Mix::parse(MIX).unwrap(), Path::new("/x"), 1.0).unwrap();
        let s = spec(64);
        let result = runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve_with(listener, Some(200), true));
            run(&w, addr, s, |_| {}).await
        });
        let want: u64 = expected(&w, s).iter().sum();
        assert_eq!(result.scheduled, want);
        assert_eq!(result.failed, 0, "{:?}", result.classes);
        // One connection per request (warm-up included): none was reused.
        assert!(result.connections_opened as u64 > want);
    }

    #[test]
    fn statuses_are_counted_per_class() {
        let w = Workload::new(Mix::parse(MIX).unwrap(), Path::new("/x"), 1.0).unwrap();
        let s = spec(64);
        let result = runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, Some(503)));
            run(&w, addr, s, |_| {}).await
        });
        for c in &result.classes {
            assert_eq!(c.shed, c.scheduled);
            assert_eq!(c.good, 0);
        }
        assert_eq!(result.goodput, 0.0);
        assert_eq!(result.shed_rate, 1.0);
    }

    #[test]
    fn a_full_pool_counts_requests_it_could_not_send() {
        // A server that never answers and a pool of one connection: the first request holds it
        // until the drain limit; every later one waits for a connection past its 60 ms deadline
        // (the drain limit is a second later) and is counted as never sent, not silently dropped.
        let w = Workload::new(Mix::parse(MIX).unwrap(), Path::new("/x"), 1.0).unwrap();
        let s = RunSpec {
            warmup: Duration::ZERO,
            ..spec(1)
        };
        let result = runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, None));
            run(&w, addr, s, |_| {}).await
        });
        let total: u64 = expected(&w, s).iter().sum();
        let unsent: u64 = result.classes.iter().map(|c| c.unsent).sum();
        let timed_out: u64 = result.classes.iter().map(|c| c.timed_out).sum();
        assert_eq!(result.scheduled, total);
        assert_eq!(timed_out, 1);
        assert_eq!(unsent, total - 1);
        assert_eq!(result.peak_connections, 1);
    }
}
