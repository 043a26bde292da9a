//! Training data: records from the store turned into per-class sequences of network inputs.
//!
//! A window of the newest records (plus a replay of older records for classes the window lacks) is
//! split by time into three parts: **train** (oldest 70 %), **calibrate** (next 15 %) and **validate**
//! (newest 15 %). Each class's records, in time order, are folded through the same
//! [`ClassState`] arithmetic the serving path uses, so row `t` holds exactly the inputs the model sees
//! when it predicts the `t`-th request of the class from the `t − 1` before it.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use pagegen_core::{ClassId, ProfileRecord};

use crate::error::ModelError;
use crate::features::sanitize;
use crate::net::graph::Batch;
use crate::net::state::{GRU_IN, HEAD_IN, HIDDEN};
use crate::net::{ClassState, Step};
use crate::rng::SplitMix;
use crate::target::{targets, vacuous, Targets, RESOURCES};

const REST: usize = HEAD_IN - HIDDEN;
/// Steps of a mid-sequence window whose loss is ignored while the GRU state warms up from zero.
const BURN_IN: usize = 4;

/// Which part of the split a record falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Fit the weights.
    Train,
    /// Fit the upper-estimate calibration offsets.
    Calibrate,
    /// Score candidates against the champion and the baselines.
    Validate,
}

/// One row: what the model sees before request `t` of a class, and what the request used.
#[derive(Clone, Debug)]
pub struct Row {
    /// GRU input for folding this record.
    pub gru_in: [f32; GRU_IN],
    /// Head input without the GRU state.
    pub rest: [f32; REST],
    /// Targets.
    pub y: Targets,
    /// Class median before the record.
    pub center: Targets,
    /// Class statistics before the record.
    pub sd: Targets,
    /// Censored record.
    pub censored: bool,
    /// Split part.
    pub part: Part,
}

/// Per-class sequences.
#[derive(Debug, Default)]
pub struct Dataset {
    /// Rows per class, time order.
    pub sequences: Vec<(ClassId, Vec<Row>)>,
    /// The window's records in global time order, with their parts (for replay scoring).
    pub records: Vec<(ProfileRecord, Part)>,
}

/// Orders records by admission time, then request id.
pub fn time_order(records: &mut [ProfileRecord]) {
    records.sort_by_key(|r| (r.started_unix_ms, r.request_id));
}

impl Dataset {
    /// Builds the window (newest `window` records plus up to `replay_per_class` older records of each
    /// class absent from the window) and its sequences. `records` may be in any order.
    pub fn build(mut records: Vec<ProfileRecord>, window: usize, replay_per_class: usize) -> Self {
        time_order(&mut records);
        let split = records.len().saturating_sub(window);
        let (old, recent) = records.split_at(split);
        let mut in_window: HashMap<ClassId, ()> = recent.iter().map(|r| (r.class, ())).collect();
        let mut replay: Vec<ProfileRecord> = Vec::new();
        let mut taken: HashMap<ClassId, usize> = HashMap::new();
        for r in old.iter().rev() {
            if in_window.contains_key(&r.class) {
                continue;
            }
            let n = taken.entry(r.class).or_default();
            if *n < replay_per_class {
                *n += 1;
                replay.push(*r);
            }
        }
        in_window.clear();
        replay.reverse();
        // Replayed records are older than the window: they only ever train.
        let mut all: Vec<(ProfileRecord, Part)> =
            replay.into_iter().map(|r| (r, Part::Train)).collect();
        let n = recent.len();
        for (i, r) in recent.iter().enumerate() {
            let part = if i * 100 < n * 70 {
                Part::Train
            } else if i * 100 < n * 85 {
                Part::Calibrate
            } else {
                Part::Validate
            };
            all.push((*r, part));
        }
        let mut by_class: HashMap<ClassId, (ClassState, Vec<Row>)> = HashMap::new();
        for (r, part) in &all {
            let y = targets(r);
            if vacuous(r, &y) {
                continue; // As the serving predictors skip it (`target::vacuous`).
            }
            let (state, rows) = by_class.entry(r.class).or_default();
            let step = Step {
                y,
                censored: r.censored(),
                x: sanitize(&r.features),
            };
            let mut head = [0f32; HEAD_IN];
            state.head_input(&step.x, &mut head);
            let mut rest = [0f32; REST];
            rest.copy_from_slice(&head[HIDDEN..]);
            rows.push(Row {
                gru_in: state.gru_input(&step),
                rest,
                y: step.y,
                center: state.median,
                sd: state.spread(),
                censored: step.censored,
                part: *part,
            });
            state.update_stats(&step);
        }
        let mut sequences: Vec<(ClassId, Vec<Row>)> = by_class
            .into_iter()
            .map(|(c, (_, rows))| (c, rows))
            .collect();
        sequences.sort_by_key(|(c, _)| *c);
        Dataset {
            sequences,
            records: all,
        }
    }

    /// Number of training rows.
    pub fn train_rows(&self) -> usize {
        self.sequences
            .iter()
            .map(|(_, rows)| rows.iter().filter(|r| r.part == Part::Train).count())
            .sum()
    }

    /// A random batch of `batch` windows of `len` steps over training rows.
    pub fn batch(&self, rng: &mut SplitMix, batch: usize, len: usize) -> Result<Batch, ModelError> {
        let lens: Vec<usize> = self
            .sequences
            .iter()
            .map(|(_, rows)| rows.iter().take_while(|r| r.part == Part::Train).count())
            .collect();
        let total: usize = lens.iter().sum();
        if total == 0 {
            return Err(ModelError::Config("no training rows".into()));
        }
        let rows = len * batch;
        let mut gru_in = vec![0f32; rows * GRU_IN];
        let mut rest = vec![0f32; rows * REST];
        let mut y = vec![0f32; rows * RESOURCES];
        let mut center = vec![0f32; rows * RESOURCES];
        let mut sd = vec![0f32; rows * RESOURCES];
        let mut cens = vec![0f32; rows];
        let mut mask = vec![0f32; rows];
        for b in 0..batch {
            // A class with probability proportional to its training rows.
            let mut pick = rng.below(total);
            let mut seq = 0;
            while pick >= lens[seq] {
                pick -= lens[seq];
                seq += 1;
            }
            let n = lens[seq];
            let start = if rng.unit() < 0.25 { 0 } else { rng.below(n) };
            let class_rows = &self.sequences[seq].1;
            for t in 0..len {
                let i = start + t;
                if i >= n {
                    break;
                }
                let row = &class_rows[i];
                let k = t * batch + b;
                gru_in[k * GRU_IN..(k + 1) * GRU_IN].copy_from_slice(&row.gru_in);
                rest[k * REST..(k + 1) * REST].copy_from_slice(&row.rest);
                y[k * RESOURCES..(k + 1) * RESOURCES].copy_from_slice(&row.y);
                center[k * RESOURCES..(k + 1) * RESOURCES].copy_from_slice(&row.center);
                sd[k * RESOURCES..(k + 1) * RESOURCES].copy_from_slice(&row.sd);
                cens[k] = if row.censored { 1.0 } else { 0.0 };
                mask[k] = if start > 0 && t < BURN_IN { 0.0 } else { 1.0 };
            }
        }
        let dev = Device::Cpu;
        Ok(Batch {
            gru_in: Tensor::from_vec(gru_in, (len, batch, GRU_IN), &dev)?,
            head_rest: Tensor::from_vec(rest, (rows, REST), &dev)?,
            y: Tensor::from_vec(y, (rows, RESOURCES), &dev)?,
            center: Tensor::from_vec(center, (rows, RESOURCES), &dev)?,
            sd: Tensor::from_vec(sd, (rows, RESOURCES), &dev)?,
            censored: Tensor::from_vec(cens, (rows, 1), &dev)?,
            mask: Tensor::from_vec(mask, (rows, 1), &dev)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{Outcome, Usage};

    fn rec(i: u64, cpu_ns: u64, outcome: Outcome) -> ProfileRecord {
        let mut u = Usage::default();
        u.cpu.cpu_ns = cpu_ns;
        let mut r = ProfileRecord::new(i, ClassId::from_raw(2), u);
        r.started_unix_ms = i;
        r.outcome = outcome;
        r
    }

    #[test]
    fn requests_shed_before_they_ran_make_no_training_rows() {
        let mut records: Vec<_> = (0..40).map(|i| rec(i, 0, Outcome::Shed)).collect();
        records.extend((40..50).map(|i| rec(i, 1_000_000, Outcome::Completed)));
        // Shed by a checkpoint after 5 ms of CPU: a lower bound, which trains.
        records.push(rec(50, 5_000_000, Outcome::Shed));
        let d = Dataset::build(records, 1_000, 0);
        let rows: Vec<&Row> = d.sequences.iter().flat_map(|(_, r)| r).collect();
        assert_eq!(rows.len(), 11);
        assert_eq!(rows.iter().filter(|r| r.censored).count(), 1);
        // The class's statistics start from its first real observation, not from zero.
        assert!(rows[1].center[0] > 10.0, "{:?}", rows[1].center);
        // Replay scoring still sees every record.
        assert_eq!(d.records.len(), 51);
    }
}
