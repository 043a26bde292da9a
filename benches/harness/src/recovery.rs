//! Recovery after an overload: how long after the load falls back does the light class's tail
//! return within its objective, as an operator's dashboard would show it.
//!
//! The light class's requests are placed at their *intended* send times. The rolling p99 at time
//! τ is the p99 of the requests intended in `(τ − window, τ]` (a causal window, the "p99 over the
//! last second" of a monitoring panel), sampled every `every` seconds. A request that got no 2xx
//! (an error, a 503, never sent) counts as infinitely slow: shedding light pages is not recovery.
//! The server has recovered at the first sample, from the step down on, that starts `hold`
//! seconds of samples all within the objective; the recovery time is that sample's distance from
//! the step, or `None` when no such stretch fits before the end of the run.
//!
//! Why a hold and not "within the objective to the end of the run": a mix whose heavy classes
//! burst at the normal load too (the `bursts` mix) lifts the rolling p99 near the objective at
//! every burst, overload or not. "For good" then measured the last normal burst, not the end of
//! the overload (on the first run, every runtime "recovered" 19.4–19.8 s into a 20 s tail, or
//! never). A sustained return — two seconds, two whole windows — says the overload's backlog
//! has drained; the timeline keeps every later excursion visible.

use serde::{Deserialize, Serialize};

/// The measured recovery of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    /// When the load stepped down, seconds from the start of the measured window.
    pub step_s: f64,
    /// Length of the measured window, s.
    pub end_s: f64,
    /// Rolling window, s.
    pub window_s: f64,
    /// How long the rolling p99 must stay within the objective to count as recovered, s.
    pub hold_s: f64,
    /// The objective, light p99 ms.
    pub slo_ms: f64,
    /// Light p99 of the requests intended before the step (the overload), ms.
    pub over_light_p99_ms: f64,
    /// Light p99 of the requests intended after the step, ms.
    pub after_light_p99_ms: f64,
    /// Seconds from the step until the rolling light p99 is back within the objective for
    /// `hold_s`; `None`: no such stretch before the end of the run.
    pub seconds: Option<f64>,
    /// Rolling light p99 over time: (seconds from the start of the measured window, ms);
    /// infinite where a request in the window got no 2xx, NaN where the window was empty.
    pub timeline: Vec<(f64, f64)>,
}

/// The rolling window and the recovery rule.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Length of the rolling window, s.
    pub window_s: f64,
    /// How often the rolling p99 is sampled, s.
    pub every_s: f64,
    /// How long it must stay within the objective, s.
    pub hold_s: f64,
}

/// One-second windows every 100 ms; recovered after two seconds within the objective.
pub const DEFAULT_WINDOW: Window = Window {
    window_s: 1.0,
    every_s: 0.1,
    hold_s: 2.0,
};

/// Nearest-rank p99 of `v`, sorted ascending (NaN when empty).
fn p99(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (0.99 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn p99_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    p99(&v)
}

/// Analyses the light class's `samples` — (intended time in s from the start of the measured
/// window, latency in ms, `f64::INFINITY` for no 2xx) in any order — of a run whose load stepped
/// down at `step_s` and whose window ended at `end_s`.
pub fn analyse(
    samples: &[(f64, f64)],
    step_s: f64,
    end_s: f64,
    window: Window,
    slo_ms: f64,
) -> Recovery {
    let Window {
        window_s,
        every_s,
        hold_s,
    } = window;
    assert!(window_s > 0.0 && every_s > 0.0, "positive window and step");
    let mut by_time: Vec<(f64, f64)> = samples.to_vec();
    by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
    let over = p99_of(
        by_time
            .iter()
            .filter(|s| s.0 < step_s)
            .map(|s| s.1)
            .collect(),
    );
    let after = p99_of(
        by_time
            .iter()
            .filter(|s| s.0 >= step_s)
            .map(|s| s.1)
            .collect(),
    );
    let mut timeline = Vec::new();
    // Sample times are whole multiples of `every_s`, so runs line up on one chart.
    let steps = (end_s / every_s + 1e-9).floor() as usize;
    for i in 1..=steps {
        let tau = i as f64 * every_s;
        let lo = by_time.partition_point(|s| s.0 <= tau - window_s);
        let hi = by_time.partition_point(|s| s.0 <= tau);
        timeline.push((tau, p99_of(by_time[lo..hi].iter().map(|s| s.1).collect())));
    }
    // An empty window (no light arrivals) shows nothing to miss the objective with.
    let misses = |p: f64| !p.is_nan() && p > slo_ms;
    // Sample times are multiples of `every_s`: compare with a tolerance of a hundredth of it.
    let eps = every_s / 100.0;
    let seconds = (0..timeline.len())
        .filter(|&i| timeline[i].0 >= step_s - eps && timeline[i].0 + hold_s <= end_s + eps)
        .find(|&i| {
            let until = timeline[i].0 + hold_s + eps;
            timeline[i..]
                .iter()
                .take_while(|(tau, _)| *tau <= until)
                .all(|&(_, p)| !misses(p))
        })
        .map(|i| (timeline[i].0 - step_s).max(0.0));
    Recovery {
        step_s,
        end_s,
        window_s,
        hold_s,
        slo_ms,
        over_light_p99_ms: over,
        after_light_p99_ms: after,
        seconds,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = DEFAULT_WINDOW;

    /// One light request every 10 ms over `[from, to)` s, each taking `ms`.
    fn steady(from: f64, to: f64, ms: f64) -> Vec<(f64, f64)> {
        let n = ((to - from) * 100.0).round() as usize;
        (0..n).map(|i| (from + i as f64 * 0.01, ms)).collect()
    }

    #[test]
    fn recovery_is_where_the_first_sustained_return_begins() {
        // Overload 0–10 s at 50 ms; after the step, a backlog drains: 40 ms until 12.5 s, then
        // 2 ms. The last window holding a slow request is the one ending at 13.4 s (it reaches back
        // to the 12.49 s request), so the first good-for-ever sample is 13.5 s: 3.5 s after the step.
        let mut s = steady(0.0, 10.0, 50.0);
        s.extend(steady(10.0, 12.5, 40.0));
        s.extend(steady(12.5, 30.0, 2.0));
        let r = analyse(&s, 10.0, 30.0, W, 10.0);
        let secs = r.seconds.expect("recovered");
        assert!((secs - 3.5).abs() < 1e-6, "{secs}");
        assert_eq!(r.over_light_p99_ms, 50.0);
        assert_eq!(r.after_light_p99_ms, 40.0);
        assert_eq!(r.timeline.len(), 300);
        assert_eq!(r.timeline.last().unwrap().1, 2.0);
    }

    #[test]
    fn a_server_that_never_missed_recovers_at_once() {
        let s = steady(0.0, 20.0, 3.0);
        let r = analyse(&s, 10.0, 20.0, W, 10.0);
        assert_eq!(r.seconds, Some(0.0));
    }

    #[test]
    fn still_missing_at_the_end_is_not_recovered() {
        let mut s = steady(0.0, 10.0, 3.0);
        s.extend(steady(10.0, 20.0, 30.0));
        let r = analyse(&s, 10.0, 20.0, W, 10.0);
        assert_eq!(r.seconds, None);
        // Back within it with less than the hold left: not confirmed, so not recovered.
        let mut s = steady(0.0, 18.5, 30.0);
        s.extend(steady(18.5, 20.0, 1.0));
        assert_eq!(analyse(&s, 10.0, 20.0, W, 10.0).seconds, None);
    }

    #[test]
    fn failed_light_requests_hold_their_windows_outside_the_objective() {
        // Overload until 10 s, fast after it, but five light pages at 11 s got a 503 — 5 % of
        // their window, more than the 1 % a p99 forgives: every window holding them misses, so
        // the first stretch within the objective starts with the window ending at 12.0 s.
        let mut s = steady(0.0, 10.0, 50.0);
        s.extend(steady(10.0, 20.0, 1.0));
        s.extend([(11.0, f64::INFINITY); 5]);
        let r = analyse(&s, 10.0, 20.0, W, 10.0);
        let secs = r.seconds.expect("recovered");
        assert!((secs - 2.0).abs() < 1e-6, "{secs}");
        assert!(
            r.after_light_p99_ms.is_finite(),
            "5 of 1,005 are under the 1 %"
        );
    }

    #[test]
    fn a_return_shorter_than_the_hold_is_not_recovery_and_a_later_blip_does_not_undo_one() {
        // Overload until 10 s; fast for 1.5 s; a second slow half-second; fast again. The first
        // return (windows ending in [11.0, 11.5)) lasts 0.5 s < the 2 s hold; the windows holding
        // the slow half-second miss until 12.99 s, so recovery is at 13.0 s. A slow blip at 17 s,
        // after the server held the objective for 2 s, does not undo it.
        let mut s = steady(0.0, 10.0, 50.0);
        s.extend(steady(10.0, 11.5, 1.0));
        s.extend(steady(11.5, 12.0, 50.0));
        s.extend(steady(12.0, 17.0, 1.0));
        s.extend(steady(17.0, 17.2, 50.0));
        s.extend(steady(17.2, 20.0, 1.0));
        let r = analyse(&s, 10.0, 20.0, W, 10.0);
        let secs = r.seconds.expect("recovered");
        assert!((secs - 3.0).abs() < 1e-6, "{secs}");
        assert!(r.timeline.iter().any(|&(t, p)| t > 17.0 && p > 10.0));
    }

    #[test]
    fn order_of_samples_does_not_matter() {
        let mut s = steady(0.0, 10.0, 50.0);
        s.extend(steady(10.0, 20.0, 1.0));
        let a = analyse(&s, 10.0, 20.0, W, 10.0);
        s.reverse();
        let b = analyse(&s, 10.0, 20.0, W, 10.0);
        assert_eq!(a.seconds, b.seconds);
        assert_eq!(a.timeline.len(), b.timeline.len());
        // The 50 ms requests leave the window 1 s after the step.
        assert!((a.seconds.unwrap() - 1.0).abs() < 1e-6, "{:?}", a.seconds);
    }

    #[test]
    fn p99_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p99(&v), 99.0);
        assert_eq!(p99(&[7.0]), 7.0);
        assert!(p99(&[]).is_nan());
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(p99(&v), 990.0);
    }
}
