//! [`RecurrentPredictor`]: the recurrent model serving requests.
//!
//! Protocol (who touches what):
//! - **Readers** (`predict`, request path) load the current weights through an `ArcSwap` (lock-free,
//!   no allocation) and the class's *published* state (atomics, see [`crate::published`] for why a
//!   torn read is harmless), then run the plain-Rust head. No lock, no allocation.
//! - **Writers** (`observe`, completion path) push the finished record into the class's pending ring
//!   under the class mutex. At most once per `min_update_interval` per class (virtual-clock time), the
//!   pending records are folded into the state — one GRU step each, in arrival order, after adding
//!   the record's residuals to the class's cover window ([`crate::net::cover`]), its central-estimate
//!   choice ([`ClassState::update_choice`](crate::net::ClassState::update_choice)) and its bias
//!   offset ([`ClassState::update_bias`](crate::net::ClassState::update_bias)) — and the new
//!   state is published. At candle's ~35 µs per step an update per completion would eat a core at
//!   web request rates; the plain-Rust step costs ~1 µs and the rate limit bounds even that. A ring
//!   that overflows between updates keeps the newest records (a sample of a burst is enough).
//! - **The trainer** swaps weights with [`set_weights`](RecurrentPredictor::set_weights) and takes no
//!   class lock: it may run at `SCHED_IDLE`, and a lock holder the kernel starves would stall every
//!   completion of that class (priority inversion). A state built under other weights is rebuilt from
//!   the class's recent GRU inputs (kept in a history ring) by the completion path at the class's next
//!   fold (one rebuild per class per swap: [`HISTORY`] GRU steps, ~30 µs). Until then `predict` serves
//!   the class with the weights its published state was built under (the previous ones are kept for
//!   this; the published state carries its generation), so a state and the weights it is read with
//!   always match — except for a class that saw no completion across two swaps, which is read with the
//!   newest weights until its next fold. [`rebase_all`](RecurrentPredictor::rebase_all) rebuilds every
//!   class at once for callers that own the predictor (evaluation, import).
//! - [`flush`](RecurrentPredictor::flush) folds every pending record regardless of the rate limit
//!   (for an owner replaying records, or at shutdown; the trainer thread does not call it, see above:
//!   a class that went quiet keeps at most one rate-limit interval of records unfolded until its next
//!   completion).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pagegen_core::{ClassId, Clock, Demand, Features, ProfileRecord, FEATURE_WIDTH};

use crate::features::sanitize;
use crate::net::cover::CoverWindow;
use crate::net::rls::RLS_DIM;
use crate::net::state::{GRU_IN, HIDDEN};
use crate::net::{ClassState, NetWeights, Step};
use crate::predictor::Predictor;
use crate::published::Prior;
use crate::table::ClassTable;
use crate::target::{demand_from_log, targets, vacuous, Targets, RESOURCES};

/// Observations of a class before its residuals enter the cover window: the misses of a class's
/// first requests (no statistics, no fit yet) say nothing about its later ones, and in a window of
/// 512 they would set its upper estimates for the next 512 requests (see [`crate::net::cover`]).
const COVER_AFTER: u32 = crate::net::state::SPREAD_MIN_N;
/// Pending records kept per class between folds.
const PENDING: usize = 16;
/// GRU inputs kept per class to rebuild the state under new weights. 32 steps: the GRU's effective
/// memory is far shorter (the statistics carry the long-run level).
pub const HISTORY: usize = 32;
const PUB_LEN: usize = HIDDEN + 10 * RESOURCES + 2 + 2 * FEATURE_WIDTH + RESOURCES * RLS_DIM;

/// Serving settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentConfig {
    /// Least time between two folds of one class, ns. 10 ms (the figure): at most 100 state
    /// updates per class per second whatever the request rate.
    pub min_update_interval_ns: u64,
}

impl Default for RecurrentConfig {
    fn default() -> Self {
        RecurrentConfig {
            min_update_interval_ns: 10_000_000,
        }
    }
}

struct Writer {
    state: ClassState,
    pending: [Option<Step>; PENDING],
    next_pending: usize,
    last_fold_ns: Option<u64>,
    generation: u64,
    history: [[f32; GRU_IN]; HISTORY],
    history_len: usize,
    next_history: usize,
    cover: CoverWindow,
}

struct Slot {
    writer: Mutex<Writer>,
    published: [AtomicU32; PUB_LEN],
    /// Generation of the weights the published state was built under.
    published_generation: AtomicU64,
}

impl Slot {
    fn new(generation: u64) -> Self {
        Slot {
            writer: Mutex::new(Writer {
                state: ClassState::default(),
                pending: [None; PENDING],
                next_pending: 0,
                last_fold_ns: None,
                generation,
                history: [[0.0; GRU_IN]; HISTORY],
                history_len: 0,
                next_history: 0,
                cover: CoverWindow::default(),
            }),
            published: std::array::from_fn(|_| AtomicU32::new(0)),
            published_generation: AtomicU64::new(generation),
        }
    }

    fn publish(&self, s: &ClassState, generation: u64) {
        self.published_generation
            .store(generation, Ordering::Relaxed);
        let mut i = 0;
        let mut put = |v: f32| {
            self.published[i].store(v.to_bits(), Ordering::Relaxed);
            i += 1;
        };
        s.h.iter().for_each(|&v| put(v));
        s.mean.iter().for_each(|&v| put(v));
        s.var.iter().for_each(|&v| put(v));
        s.rvar.iter().for_each(|&v| put(v));
        s.median.iter().for_each(|&v| put(v));
        put(s.n as f32);
        put(s.measured as f32);
        s.xbar.iter().for_each(|&v| put(v));
        s.xvar.iter().for_each(|&v| put(v));
        s.rls.iter().flatten().for_each(|&v| put(v));
        s.cover.iter().for_each(|&v| put(v));
        s.bias.iter().for_each(|&v| put(v));
        s.choice.iter().flatten().for_each(|&v| put(v));
        s.slow_median.iter().for_each(|&v| put(v));
    }

    fn load(&self) -> ClassState {
        let mut s = ClassState::default();
        let mut i = 0;
        let mut get = || {
            let v = f32::from_bits(self.published[i].load(Ordering::Relaxed));
            i += 1;
            v
        };
        s.h.iter_mut().for_each(|v| *v = get());
        s.mean.iter_mut().for_each(|v| *v = get());
        s.var.iter_mut().for_each(|v| *v = get());
        s.rvar.iter_mut().for_each(|v| *v = get());
        s.median.iter_mut().for_each(|v| *v = get());
        s.n = get() as u32;
        s.measured = get() as u32;
        s.xbar.iter_mut().for_each(|v| *v = get());
        s.xvar.iter_mut().for_each(|v| *v = get());
        s.rls.iter_mut().flatten().for_each(|v| *v = get());
        s.cover.iter_mut().for_each(|v| *v = get());
        s.bias.iter_mut().for_each(|v| *v = get());
        s.choice.iter_mut().flatten().for_each(|v| *v = get());
        s.slow_median.iter_mut().for_each(|v| *v = get());
        s
    }
}

impl Writer {
    fn rebase(&mut self, w: &NetWeights) {
        let mut h = [0f32; HIDDEN];
        let start = (self.next_history + HISTORY - self.history_len) % HISTORY;
        for k in 0..self.history_len {
            w.gru_step(&mut h, &self.history[(start + k) % HISTORY]);
        }
        self.state.h = h;
        // The cover window keeps its residuals: they were against the previous weights, which a
        // challenger refines rather than replaces, and they leave the window within 256 requests.
        self.generation = w.generation;
    }

    fn fold_pending(&mut self, w: &NetWeights) -> bool {
        // A rebuild alone changes the state too (and its generation), so it is published as well.
        let mut any = self.generation != w.generation;
        if any {
            self.rebase(w);
        }
        for k in 0..PENDING {
            let idx = (self.next_pending + k) % PENDING;
            if let Some(step) = self.pending[idx].take() {
                if self.state.n > 0 {
                    let (central, _) = w.predict_log_raw(&self.state, &step.x);
                    let served: [f32; RESOURCES] =
                        std::array::from_fn(|r| central[r] + self.state.bias[r]);
                    if self.state.n >= COVER_AFTER {
                        let c = self.state.chosen_central(&served, &step.x);
                        self.cover.push(&step, &c, &self.state.cover);
                        self.state.cover = self.cover.cover();
                    }
                    self.state
                        .update_choice(&step.y, &served, &step.x, step.censored);
                    let resid: [f32; RESOURCES] = std::array::from_fn(|r| step.y[r] - central[r]);
                    self.state.update_bias(&resid, step.censored);
                }
                let input = w.fold(&mut self.state, &step);
                self.history[self.next_history] = input;
                self.next_history = (self.next_history + 1) % HISTORY;
                self.history_len = (self.history_len + 1).min(HISTORY);
                any = true;
            }
        }
        any
    }
}

/// The recurrent model as a [`Predictor`].
pub struct RecurrentPredictor {
    config: RecurrentConfig,
    prior: Prior,
    clock: Arc<dyn Clock>,
    weights: ArcSwap<NetWeights>,
    /// The weights before the last swap, for classes not yet rebuilt under the new ones.
    previous: ArcSwap<NetWeights>,
    classes: ClassTable<Slot>,
    /// Weight replacements so far.
    version: AtomicU64,
}

impl std::fmt::Debug for RecurrentPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecurrentPredictor")
            .field("config", &self.config)
            .field("generation", &self.weights.load().generation)
            .field("classes", &self.classes)
            .finish()
    }
}

impl RecurrentPredictor {
    /// A predictor serving `weights`, reading time from `clock`.
    pub fn new(
        config: RecurrentConfig,
        prior: Prior,
        clock: Arc<dyn Clock>,
        weights: Arc<NetWeights>,
    ) -> Self {
        RecurrentPredictor {
            config,
            prior,
            clock,
            previous: ArcSwap::new(weights.clone()),
            weights: ArcSwap::new(weights),
            classes: ClassTable::new(),
            version: AtomicU64::new(0),
        }
    }

    /// How many times the weights were replaced since this predictor was built (0: the weights it
    /// started with, loaded or fresh) — the model version the metrics report.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The weights now serving.
    pub fn weights(&self) -> Arc<NetWeights> {
        self.weights.load_full()
    }

    /// Atomically replaces the weights; readers never block. Class states are rebuilt lazily, at
    /// each class's next fold; meanwhile a class is read with the weights its state was built under
    /// (kept as the previous weights).
    pub fn set_weights(&self, weights: Arc<NetWeights>) {
        self.previous.store(self.weights.load_full());
        self.weights.store(weights);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Rebuilds every class state under the current weights now (trainer thread).
    pub fn rebase_all(&self) {
        let w = self.weights.load_full();
        for (_, slot) in self.classes.iter() {
            let mut wr = slot.writer.lock().unwrap_or_else(|e| e.into_inner());
            wr.rebase(&w);
            slot.publish(&wr.state, wr.generation);
        }
    }

    /// Folds every pending record now, ignoring the rate limit.
    pub fn flush(&self) {
        let w = self.weights.load_full();
        let now = self.clock.now();
        for (_, slot) in self.classes.iter() {
            let mut wr = slot.writer.lock().unwrap_or_else(|e| e.into_inner());
            if wr.fold_pending(&w) {
                wr.last_fold_ns = Some(now);
                slot.publish(&wr.state, wr.generation);
            }
        }
    }

    /// [`observe`](Predictor::observe) with the record's [`targets`] and the clock's reading
    /// already taken (by [`Deployed`](crate::Deployed), which shares both among its predictors).
    pub(crate) fn observe_at(&self, record: &ProfileRecord, y: &Targets, now: u64) {
        if vacuous(record, y) {
            return;
        }
        let generation = self.weights.load().generation;
        let Some(slot) = self
            .classes
            .get_or_init(record.class, || Slot::new(generation))
        else {
            return;
        };
        let step = Step {
            y: *y,
            censored: record.censored(),
            x: sanitize(&record.features),
        };
        let mut wr = slot.writer.lock().unwrap_or_else(|e| e.into_inner());
        let idx = wr.next_pending;
        wr.pending[idx] = Some(step);
        wr.next_pending = (idx + 1) % PENDING;
        let due = match wr.last_fold_ns {
            None => true,
            Some(t) => now.saturating_sub(t) >= self.config.min_update_interval_ns,
        };
        if due {
            let w = self.weights.load();
            if wr.fold_pending(&w) {
                wr.last_fold_ns = Some(now);
                slot.publish(&wr.state, wr.generation);
            }
        }
    }

    /// The published state of a class (for tests and reports).
    pub fn state(&self, class: ClassId) -> Option<ClassState> {
        self.classes.get(class).map(Slot::load)
    }
}

impl Predictor for RecurrentPredictor {
    fn name(&self) -> &'static str {
        "recurrent"
    }

    fn predict(&self, class: ClassId, features: &Features) -> Demand {
        let Some(slot) = self.classes.get(class) else {
            return self.prior.demand();
        };
        let state = slot.load();
        // A class seen only through censored records (every request shed, or cancelled before it
        // finished) has statistics built from lower bounds, zero for a shed request, and the
        // model reads them as a class that needs nothing: a memory hog whose requests were all
        // shed was predicted at 335 ns of CPU and granted the latency pool, where it held the
        // workers for seconds (benches/RESULTS.md, 2026-12-08). It gets the prior, as an
        // unknown class does, until one of its requests runs to the end.
        if state.measured == 0 {
            return self.prior.demand();
        }
        let x = sanitize(features);
        let built_under = slot.published_generation.load(Ordering::Relaxed);
        let mut w = self.weights.load();
        if w.generation != built_under {
            let p = self.previous.load();
            if p.generation == built_under {
                w = p;
            }
        }
        let (c, u) = w.predict_log(&state, &x);
        demand_from_log(&c, &u)
    }

    fn observe(&self, record: &ProfileRecord) {
        self.observe_at(record, &targets(record), self.clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{CancelReason, Outcome, Resource, Usage, VirtualClock};
    use std::time::Duration;

    fn rec(i: u64, cpu: u64) -> ProfileRecord {
        let mut u = Usage::default();
        u.cpu.cpu_ns = cpu;
        ProfileRecord::new(i, ClassId::from_raw(4), u)
    }

    #[test]
    fn state_updates_are_batched_and_rate_limited() {
        let clock = Arc::new(VirtualClock::new());
        let p = RecurrentPredictor::new(
            RecurrentConfig::default(),
            Prior::default(),
            clock.clone(),
            Arc::new(NetWeights::random(1)),
        );
        let c = ClassId::from_raw(4);
        assert_eq!(
            p.predict(c, &Features::default()),
            Prior::default().demand()
        );
        p.observe(&rec(0, 1000)); // first observation folds at once
        assert_eq!(p.state(c).unwrap().n, 1);
        for i in 1..10 {
            clock.advance(Duration::from_millis(1));
            p.observe(&rec(i, 1000));
        }
        assert_eq!(p.state(c).unwrap().n, 1, "within 10 ms nothing folds");
        clock.advance(Duration::from_millis(1));
        p.observe(&rec(10, 1000)); // 10 ms after the first fold: all ten pending fold in one batch
        assert_eq!(p.state(c).unwrap().n, 11);
        // More than the ring holds between two folds: the newest PENDING are kept.
        for i in 0..(PENDING as u64 + 5) {
            p.observe(&rec(100 + i, 1000));
        }
        p.flush();
        assert_eq!(p.state(c).unwrap().n, 11 + PENDING as u32);
    }

    #[test]
    fn after_a_swap_a_class_is_read_with_the_weights_its_state_was_built_under() {
        let clock = Arc::new(VirtualClock::new());
        let cfg = RecurrentConfig {
            min_update_interval_ns: 0,
        };
        let mut wb = NetWeights::random(2);
        wb.generation = 2;
        let (a, b) = (Arc::new(NetWeights::random(1)), Arc::new(wb));
        let p = RecurrentPredictor::new(cfg, Prior::default(), clock.clone(), a.clone());
        let q = RecurrentPredictor::new(cfg, Prior::default(), clock.clone(), a.clone());
        let only_a = RecurrentPredictor::new(cfg, Prior::default(), clock, a);
        for i in 0..40 {
            for r in [&p, &q, &only_a] {
                r.observe(&rec(i, 1000 + 10 * i));
            }
        }
        let (c, f) = (ClassId::from_raw(4), Features::default());
        p.set_weights(b.clone());
        // No completion since the swap: the state is still the old weights' and is read with them.
        assert_eq!(p.predict(c, &f), only_a.predict(c, &f));
        // The next completion rebuilds the state under the new weights from the kept history, as an
        // eager rebuild would have.
        q.set_weights(b);
        q.rebase_all();
        p.observe(&rec(40, 1400));
        q.observe(&rec(40, 1400));
        only_a.observe(&rec(40, 1400));
        assert_eq!(p.predict(c, &f), q.predict(c, &f));
        assert_ne!(p.predict(c, &f), only_a.predict(c, &f));
    }

    #[test]
    fn swapped_weights_rebuild_states_from_history() {
        let clock = Arc::new(VirtualClock::new());
        let cfg = RecurrentConfig {
            min_update_interval_ns: 0,
        };
        let a = Arc::new(NetWeights::random(1));
        let b = Arc::new(NetWeights::random(2));
        let p = RecurrentPredictor::new(cfg, Prior::default(), clock.clone(), a);
        let q = RecurrentPredictor::new(cfg, Prior::default(), clock, b.clone());
        for i in 0..(HISTORY as u64) {
            p.observe(&rec(i, 1000 + 10 * i));
            q.observe(&rec(i, 1000 + 10 * i));
        }
        let c = ClassId::from_raw(4);
        assert_ne!(p.state(c).unwrap().h, q.state(c).unwrap().h);
        p.set_weights(b);
        p.rebase_all();
        // Same weights over the same (fully kept) history: the same GRU state.
        let (hp, hq) = (p.state(c).unwrap().h, q.state(c).unwrap().h);
        for (x, y) in hp.iter().zip(&hq) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn a_class_seen_only_through_censored_records_is_served_the_prior() {
        let clock = Arc::new(VirtualClock::new());
        let cfg = RecurrentConfig {
            min_update_interval_ns: 0,
        };
        let p = RecurrentPredictor::new(
            cfg,
            Prior::default(),
            clock,
            Arc::new(NetWeights::random(3)),
        );
        let c = ClassId::from_raw(4);
        let prior = Prior::default().demand();
        // Every request shed (usage zero), then one cancelled for memory after 40 ms of CPU.
        crate::predictor::testing::shed_before_running(&p, c, 30);
        let mut cut = rec(30, 40_000_000);
        cut.outcome = Outcome::Cancelled(CancelReason::BudgetExceeded(Resource::Memory));
        p.observe(&cut);
        // The shed requests said nothing (`target::vacuous`): only the cancelled one is folded.
        let st = p.state(c).unwrap();
        assert_eq!((st.n, st.measured), (1, 0));
        assert_eq!(p.predict(c, &Features::default()), prior);
        // The first request that runs to the end: the class is predicted from its state.
        p.observe(&rec(31, 1_000));
        assert_eq!(p.state(c).unwrap().measured, 1);
        assert_ne!(p.predict(c, &Features::default()), prior);
    }
}
