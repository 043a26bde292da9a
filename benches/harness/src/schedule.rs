//! Open-loop arrival schedules: when each request is *meant* to be sent, and of which class.
//!
//! Arrivals are a Poisson process (exponential gaps) at the target mean rate, fixed in advance by a
//! seeded RNG and independent of how fast the server answers: a slow server does not slow the
//! arrivals down, so queueing shows up in the latencies instead of hiding in a lower send rate
//! (Gil Tene's "coordinated omission", the idea behind wrk2's constant-throughput mode; here the
//! arrivals are Poisson rather than evenly spaced, as in Schroeder et al., "Open Versus Closed: A
//! Cautionary Tale", NSDI'06).
//!
//! Classes whose rate varies in time (bursts, a trace replay) are produced by thinning (Lewis and
//! Shedler, 1979): candidate arrivals at the highest total rate, each kept with probability
//! current rate ÷ highest rate, and given a class in proportion to the classes' current rates.

use std::time::Duration;

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
/// small, seedable and good enough to draw arrival gaps and parameters. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `-ln(u)` is finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// An exponential gap with mean `1 / rate` seconds (inverse transform of the CDF).
    pub fn exp_gap(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}

/// How a class's rate varies over time, as a multiplier of its mean rate (the mean over a long
/// window is 1).
pub trait RateShape: Send {
    /// The multiplier at `t` seconds after the start.
    fn at(&self, t: f64) -> f64;
    /// An upper bound of [`RateShape::at`] over the whole run (the thinning envelope).
    fn max(&self) -> f64;
}

/// A constant rate.
#[derive(Debug, Clone, Copy)]
pub struct Flat;

impl RateShape for Flat {
    fn at(&self, _t: f64) -> f64 {
        1.0
    }
    fn max(&self) -> f64 {
        1.0
    }
}

/// On/off bursts: for `on_s` of every `period_s` the class arrives `factor` times faster than
/// in between, scaled so that the mean over a period is still 1.
#[derive(Debug, Clone, Copy)]
pub struct Bursts {
    /// Length of one on/off cycle, seconds.
    pub period_s: f64,
    /// Length of the burst at the start of each cycle, seconds.
    pub on_s: f64,
    /// Rate during the burst ÷ rate outside it.
    pub factor: f64,
    /// Offset of the first burst, seconds (staggers classes that burst separately).
    pub phase_s: f64,
}

impl Bursts {
    fn base(&self) -> f64 {
        let f = (self.on_s / self.period_s).clamp(0.0, 1.0);
        1.0 / (f * self.factor + (1.0 - f))
    }
}

impl RateShape for Bursts {
    fn at(&self, t: f64) -> f64 {
        let x = (t - self.phase_s).rem_euclid(self.period_s);
        if x < self.on_s {
            self.base() * self.factor
        } else {
            self.base()
        }
    }
    fn max(&self) -> f64 {
        self.base() * self.factor.max(1.0)
    }
}

/// A piecewise-constant shape: `steps[i]` holds for `[i * step_s, (i + 1) * step_s)` and the last
/// step holds after that. Used to replay per-minute trace counts, time-compressed.
#[derive(Debug, Clone)]
pub struct Steps {
    /// Seconds per step.
    pub step_s: f64,
    /// Multipliers, normalised by [`Steps::normalised`] to mean 1.
    pub steps: Vec<f64>,
}

impl Steps {
    /// Steps scaled so that their mean is 1 (all-zero input gives a flat shape).
    pub fn normalised(step_s: f64, counts: &[f64]) -> Self {
        let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
        let steps = if mean > 0.0 {
            counts.iter().map(|c| c / mean).collect()
        } else {
            vec![1.0]
        };
        Self { step_s, steps }
    }

    /// The index of the step that holds at `t`.
    pub fn index(&self, t: f64) -> usize {
        ((t / self.step_s).max(0.0) as usize).min(self.steps.len() - 1)
    }
}

impl RateShape for Steps {
    fn at(&self, t: f64) -> f64 {
        self.steps[self.index(t)]
    }
    fn max(&self) -> f64 {
        self.steps.iter().cloned().fold(0.0, f64::max)
    }
}

/// An episode of the whole load: every class arrives `factor` times faster in
/// `[from_s, until_s)` than its shape says (an overload to recover from, when `factor` > 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// Rate inside the episode ÷ rate outside it.
    pub factor: f64,
    /// Start, seconds from the start of the run.
    pub from_s: f64,
    /// End (exclusive), seconds from the start of the run.
    pub until_s: f64,
}

/// A class's shape with an [`Episode`] on top.
pub struct WithEpisode {
    /// The class's own shape.
    pub inner: Box<dyn RateShape>,
    /// The episode.
    pub episode: Episode,
}

impl RateShape for WithEpisode {
    fn at(&self, t: f64) -> f64 {
        let e = &self.episode;
        let m = if (e.from_s..e.until_s).contains(&t) {
            e.factor
        } else {
            1.0
        };
        self.inner.at(t) * m
    }
    fn max(&self) -> f64 {
        self.inner.max() * self.episode.factor.max(1.0)
    }
}

/// One arrival: when it is meant to be sent (from the start of the run) and its class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Intended send time, from the start of the run.
    pub at: Duration,
    /// Index into the mix's classes.
    pub class: usize,
}

/// An endless, deterministic sequence of arrivals for classes with mean rates and shapes.
pub struct Schedule {
    rng: Rng,
    rates: Vec<f64>,
    shapes: Vec<Box<dyn RateShape>>,
    envelope: f64,
    t: f64,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("rates", &self.rates)
            .field("envelope", &self.envelope)
            .field("t", &self.t)
            .finish()
    }
}

impl Schedule {
    /// Classes arrive at `rates[i]` per second on average, shaped by `shapes[i]`.
    ///
    /// # Panics
    /// If the lengths differ, or no class has a positive rate.
    pub fn new(rates: Vec<f64>, shapes: Vec<Box<dyn RateShape>>, seed: u64) -> Self {
        assert_eq!(rates.len(), shapes.len(), "one shape per class");
        let envelope: f64 = rates.iter().zip(&shapes).map(|(r, s)| r * s.max()).sum();
        assert!(envelope > 0.0, "a schedule needs a positive rate");
        Self {
            rng: Rng::new(seed),
            rates,
            shapes,
            envelope,
            t: 0.0,
        }
    }

    /// A plain Poisson schedule of one class at `rate` per second.
    #[cfg(test)]
    pub fn poisson(rate: f64, seed: u64) -> Self {
        Self::new(vec![rate], vec![Box::new(Flat)], seed)
    }
}

impl Iterator for Schedule {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        loop {
            self.t += self.rng.exp_gap(self.envelope);
            let t = self.t;
            let total: f64 = self
                .rates
                .iter()
                .zip(&self.shapes)
                .map(|(r, s)| r * s.at(t))
                .sum();
            // Thinning: keep the candidate with probability total / envelope.
            let u = self.rng.unit() * self.envelope;
            if u > total {
                continue;
            }
            // `u` is uniform in (0, total] here: reuse it to pick the class.
            let mut acc = 0.0;
            let mut class = self.rates.len() - 1;
            for (i, (r, s)) in self.rates.iter().zip(&self.shapes).enumerate() {
                acc += r * s.at(t);
                if u <= acc {
                    class = i;
                    break;
                }
            }
            return Some(Arrival {
                at: Duration::from_secs_f64(t),
                class,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_mean_rate_matches_target() {
        for (rate, seed) in [(1000.0, 1), (37.5, 2), (20_000.0, 3)] {
            let n = 200_000;
            let last = Schedule::poisson(rate, seed).nth(n - 1).unwrap();
            let measured = n as f64 / last.at.as_secs_f64();
            // Relative sd of the mean of n exponentials is 1/sqrt(n) ≈ 0.22 %: 1 % is > 4 sd.
            assert!(
                (measured / rate - 1.0).abs() < 0.01,
                "rate {rate}: measured {measured}"
            );
        }
    }

    #[test]
    fn gaps_are_exponential() {
        // For an exponential distribution, P(gap > mean) = 1/e and the coefficient of variation is 1.
        let rate = 500.0;
        let mut prev = 0.0;
        let (mut n, mut above, mut sum, mut sum2) = (0usize, 0usize, 0.0, 0.0);
        for a in Schedule::poisson(rate, 7).take(100_000) {
            let gap = a.at.as_secs_f64() - prev;
            prev = a.at.as_secs_f64();
            n += 1;
            sum += gap;
            sum2 += gap * gap;
            if gap > 1.0 / rate {
                above += 1;
            }
        }
        let mean = sum / n as f64;
        let cv = (sum2 / n as f64 - mean * mean).sqrt() / mean;
        assert!((above as f64 / n as f64 - (-1.0f64).exp()).abs() < 0.01);
        assert!((cv - 1.0).abs() < 0.02, "cv {cv}");
    }

    #[test]
    fn same_seed_same_schedule() {
        let a: Vec<_> = Schedule::poisson(100.0, 42).take(50).collect();
        let b: Vec<_> = Schedule::poisson(100.0, 42).take(50).collect();
        let c: Vec<_> = Schedule::poisson(100.0, 43).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn class_shares_follow_rates() {
        let s = Schedule::new(vec![300.0, 100.0], vec![Box::new(Flat), Box::new(Flat)], 5);
        let n = 100_000;
        let first = s.take(n).filter(|a| a.class == 0).count();
        assert!((first as f64 / n as f64 - 0.75).abs() < 0.01);
    }

    #[test]
    fn bursts_keep_the_mean_and_concentrate_in_the_on_window() {
        let shape = Bursts {
            period_s: 10.0,
            on_s: 1.0,
            factor: 20.0,
            phase_s: 0.0,
        };
        let rate = 200.0;
        let s = Schedule::new(vec![rate], vec![Box::new(shape)], 9);
        let horizon = 1000.0;
        let arrivals: Vec<_> = s.take_while(|a| a.at.as_secs_f64() < horizon).collect();
        let measured = arrivals.len() as f64 / horizon;
        assert!((measured / rate - 1.0).abs() < 0.02, "rate {measured}");
        let on = arrivals
            .iter()
            .filter(|a| a.at.as_secs_f64().rem_euclid(10.0) < 1.0)
            .count();
        // 1 s at 20x against 9 s at 1x: 20 / 29 of the arrivals fall in the bursts.
        let expected = 20.0 / 29.0;
        assert!((on as f64 / arrivals.len() as f64 - expected).abs() < 0.02);
    }

    #[test]
    fn steps_replay_relative_counts() {
        let shape = Steps::normalised(1.0, &[1.0, 3.0]);
        assert_eq!(shape.steps, vec![0.5, 1.5]);
        let s = Schedule::new(vec![1000.0], vec![Box::new(shape)], 11);
        let arrivals: Vec<_> = s.take_while(|a| a.at.as_secs_f64() < 2.0).collect();
        let first = arrivals.iter().filter(|a| a.at.as_secs_f64() < 1.0).count();
        let ratio = (arrivals.len() - first) as f64 / first as f64;
        assert!((ratio - 3.0).abs() < 0.5, "ratio {ratio}");
    }

    #[test]
    fn an_episode_multiplies_the_rate_inside_it_only() {
        let episode = Episode {
            factor: 4.0,
            from_s: 10.0,
            until_s: 20.0,
        };
        let shape = WithEpisode {
            inner: Box::new(Flat),
            episode,
        };
        assert_eq!(shape.max(), 4.0);
        let s = Schedule::new(vec![500.0], vec![Box::new(shape)], 13);
        let arrivals: Vec<f64> = s
            .map(|a| a.at.as_secs_f64())
            .take_while(|t| *t < 30.0)
            .collect();
        let count = |lo: f64, hi: f64| arrivals.iter().filter(|t| (lo..hi).contains(*t)).count();
        // 5,000 expected before and after, 20,000 inside: 3 % is over 4 sd of a Poisson count.
        for (lo, hi, want) in [
            (0.0, 10.0, 5000.0),
            (10.0, 20.0, 20_000.0),
            (20.0, 30.0, 5000.0),
        ] {
            let n = count(lo, hi) as f64;
            assert!((n / want - 1.0).abs() < 0.03, "[{lo}, {hi}): {n}");
        }
        // A factor below 1 (a lull) keeps the envelope at the shape's own maximum.
        let lull = WithEpisode {
            inner: Box::new(Flat),
            episode: Episode {
                factor: 0.5,
                ..episode
            },
        };
        assert_eq!(lull.max(), 1.0);
        assert_eq!(lull.at(15.0), 0.5);
        assert_eq!(lull.at(25.0), 1.0);
    }

    #[test]
    fn range_is_inclusive() {
        let mut rng = Rng::new(3);
        let draws: Vec<u64> = (0..1000).map(|_| rng.range(1, 3)).collect();
        assert!(draws.iter().all(|d| (1..=3).contains(d)));
        assert!(draws.contains(&1) && draws.contains(&3));
    }
}
