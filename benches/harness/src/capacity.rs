//! Capacity search: the highest Poisson rate at which a server still meets its objective.
//!
//! The search is a plain state machine (ask for the next rate, report whether it passed), so the
//! caller can run each probe against a real server and the tests can run it against a function.
//! First it brackets the capacity — halving from the start rate until a probe passes, or doubling
//! until one fails — then bisects the bracket geometrically (rates span orders of magnitude, so
//! the midpoint is `sqrt(lo * hi)`) for a fixed number of steps.

use serde::Serialize;

/// The objective a rate must meet: light-class p99 and overall goodput.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Objective {
    /// Light-class p99 limit, ms (issue 15: 10 ms).
    pub light_p99_ms: f64,
    /// Lowest goodput, fraction of scheduled requests answered 2xx within their deadline (0.99).
    pub min_goodput: f64,
}

impl Objective {
    /// Whether one probe's figures meet the objective.
    pub fn met(&self, light_p99_ms: f64, goodput: f64) -> bool {
        light_p99_ms <= self.light_p99_ms && goodput >= self.min_goodput
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Looking for a bracket: `lo` is the highest pass so far, `hi` the lowest fail.
    Bracket,
    Bisect {
        left: usize,
    },
    Done,
}

/// One probe and its verdict.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct Probe {
    /// Offered rate, requests per second.
    pub rate: f64,
    /// Whether the objective was met.
    pub pass: bool,
}

/// The bracketing-then-bisection search.
#[derive(Debug, Clone)]
pub struct Search {
    lo: Option<f64>,
    hi: Option<f64>,
    next: f64,
    min_rate: f64,
    max_rate: f64,
    phase: Phase,
    steps: usize,
    probes: Vec<Probe>,
}

impl Search {
    /// A search starting at `start` requests/s, never probing below `min_rate` or above
    /// `max_rate`, with `steps` bisection steps once bracketed (each halves the bracket's log width).
    pub fn new(start: f64, min_rate: f64, max_rate: f64, steps: usize) -> Self {
        Self {
            lo: None,
            hi: None,
            next: start.clamp(min_rate, max_rate),
            min_rate,
            max_rate,
            phase: Phase::Bracket,
            steps,
            probes: Vec::new(),
        }
    }

    /// The rate to probe next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        (self.phase != Phase::Done).then_some(self.next)
    }

    /// Reports the verdict for the rate [`Search::next_rate`] returned.
    pub fn report(&mut self, pass: bool) {
        let rate = self.next;
        self.probes.push(Probe { rate, pass });
        if pass {
            self.lo = Some(self.lo.map_or(rate, |lo: f64| lo.max(rate)));
        } else {
            self.hi = Some(self.hi.map_or(rate, |hi: f64| hi.min(rate)));
        }
        match self.phase {
            Phase::Bracket => match (self.lo, self.hi) {
                (Some(_), Some(_)) => self.start_bisect(),
                (Some(lo), None) => {
                    if lo >= self.max_rate {
                        self.phase = Phase::Done;
                    } else {
                        self.next = (lo * 2.0).min(self.max_rate);
                    }
                }
                (None, Some(hi)) => {
                    if hi <= self.min_rate {
                        self.phase = Phase::Done;
                    } else {
                        self.next = (hi / 2.0).max(self.min_rate);
                    }
                }
                (None, None) => unreachable!("a probe was just recorded"),
            },
            Phase::Bisect { left } => {
                if left <= 1 {
                    self.phase = Phase::Done;
                } else {
                    self.phase = Phase::Bisect { left: left - 1 };
                    self.set_midpoint();
                }
            }
            Phase::Done => {}
        }
    }

    fn start_bisect(&mut self) {
        if self.steps == 0 {
            self.phase = Phase::Done;
        } else {
            self.phase = Phase::Bisect { left: self.steps };
            self.set_midpoint();
        }
    }

    fn set_midpoint(&mut self) {
        let (lo, hi) = (
            self.lo.unwrap_or(self.min_rate),
            self.hi.unwrap_or(self.max_rate),
        );
        self.next = (lo * hi).sqrt();
    }

    /// The highest rate that passed (0 when none did).
    pub fn capacity(&self) -> f64 {
        self.lo.unwrap_or(0.0)
    }

    /// Every probe so far, in order.
    #[cfg(test)]
    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut s: Search, capacity: f64) -> Search {
        let mut guard = 0;
        while let Some(rate) = s.next_rate() {
            s.report(rate <= capacity);
            guard += 1;
            assert!(guard < 100, "search does not end");
        }
        s
    }

    #[test]
    fn finds_a_capacity_above_the_start() {
        let s = run(Search::new(100.0, 10.0, 100_000.0, 8), 1234.0);
        let c = s.capacity();
        // Bracket [800, 1600] (log width ln 2), 8 halvings: within 2^(1/256) ≈ 0.3 % below.
        assert!(c <= 1234.0 && c > 1234.0 * 0.99, "capacity {c}");
        // 100, 200, 400, 800, 1600 to bracket, then 8 bisection steps.
        assert_eq!(s.probes().len(), 5 + 8);
    }

    #[test]
    fn finds_a_capacity_below_the_start() {
        let s = run(Search::new(1000.0, 10.0, 100_000.0, 6), 77.0);
        let c = s.capacity();
        assert!(c <= 77.0 && c > 77.0 * 0.97, "capacity {c}");
    }

    #[test]
    fn never_passing_gives_zero_and_stops_at_the_floor() {
        let s = run(Search::new(100.0, 10.0, 1000.0, 6), 1.0);
        assert_eq!(s.capacity(), 0.0);
        assert_eq!(s.probes().last().unwrap().rate, 10.0);
    }

    #[test]
    fn always_passing_stops_at_the_ceiling() {
        let s = run(Search::new(100.0, 10.0, 1000.0, 6), f64::INFINITY);
        assert_eq!(s.capacity(), 1000.0);
    }

    #[test]
    fn each_probe_stays_inside_the_bracket() {
        let s = run(Search::new(300.0, 10.0, 100_000.0, 10), 5000.0);
        let probes = s.probes();
        let mut lo = 0.0f64;
        let mut hi = f64::INFINITY;
        for p in probes {
            if lo > 0.0 && hi.is_finite() {
                assert!(p.rate > lo && p.rate < hi, "{p:?} outside ({lo}, {hi})");
            }
            if p.pass {
                lo = lo.max(p.rate);
            } else {
                hi = hi.min(p.rate);
            }
        }
    }

    #[test]
    fn objective_checks_both_limits() {
        let o = Objective {
            light_p99_ms: 10.0,
            min_goodput: 0.99,
        };
        assert!(o.met(9.9, 0.995));
        assert!(!o.met(10.1, 0.995));
        assert!(!o.met(5.0, 0.98));
    }
}
