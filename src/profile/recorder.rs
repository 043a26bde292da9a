//! [`Recorder`]: finished requests' records to the model, on a thread of their own.
//!
//! The request path only `try_send`s into a bounded queue ([`QUEUE`] records): it never blocks,
//! never wakes a thread, and never waits for the model's locks or the store's disk writes; the
//! recorder thread drains the queue every [`TICK`]. A full queue (the recorder thread
//! starved, or a burst far beyond what the store writes) drops the record and counts it
//! ([`Decision::RecordDropped`]). Dropping the recorder closes the queue; its thread records what is
//! left, flushes the store and exits, and the drop waits for it.

use std::sync::mpsc::{channel, sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use pagegen_core::ProfileRecord;
use pagegen_model::ModelRuntime;

use crate::policy::{Decision, Decisions};
use crate::profile::histograms::RequestHistograms;

/// Records queued for the recorder thread at most: ~1 KiB each, 16 MiB; at 100 000 requests/s, 0.16 s
/// of traffic (plucked from thin air; the store appends far faster than that).
pub const QUEUE: usize = 16_384;

#[derive(Debug)]
enum Msg {
    Record(Box<ProfileRecord>),
    Sync(std::sync::mpsc::Sender<()>),
}

/// How often the recorder thread drains its queue (100 per second: a record reaches the model
/// within 10 ms, and an idle recorder costs a hundred wake-ups per second).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// The recorder; see the module docs.
#[derive(Debug)]
pub struct Recorder {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    decisions: Arc<Decisions>,
}

impl Recorder {
    /// Starts the thread that hands records to `model`.
    ///
    /// # Errors
    /// The OS refused the thread.
    pub fn start(
        model: Arc<ModelRuntime>,
        decisions: Arc<Decisions>,
        histograms: Option<Arc<RequestHistograms>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let d = decisions.clone();
        let thread = std::thread::Builder::new()
            .name("pagegen-recorder".into())
            .spawn(move || {
                let flush = || {
                    if let Err(e) = model.flush() {
                        tracing::warn!(error = %e, "could not flush the profile store");
                    }
                };
                // The thread never parks on the queue (a sender would then pay a futex wake and
                // this thread a context switch per request, measured at ~5 % of a trivial page's
                // CPU): it drains what arrived, flushes once per batch — so a process killed
                // between batches (SIGKILL, an OOM kill) loses at most one tick of records — and
                // sleeps a tick.
                'run: loop {
                    let mut any = false;
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Record(r)) => {
                                any = true;
                                model.record(&r);
                                if let Some(h) = &histograms {
                                    h.observe(&r);
                                }
                                d.count(r.class, Decision::Recorded);
                            }
                            Ok(Msg::Sync(done)) => {
                                flush();
                                any = false;
                                let _ = done.send(());
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => break 'run,
                        }
                    }
                    if any {
                        flush();
                    }
                    // Parked, not slept: `sync` and shutdown unpark it at once.
                    std::thread::park_timeout(TICK);
                }
                flush();
            })?;
        Ok(Recorder {
            tx: Some(tx),
            thread: Some(thread),
            decisions,
        })
    }

    /// Queues `record`; never blocks.
    pub fn record(&self, record: ProfileRecord) {
        let Some(tx) = &self.tx else { return };
        let class = record.class;
        match tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.decisions.count(class, Decision::RecordDropped);
            }
        }
    }

    /// Blocks until every record queued before this call reached the model and the store was
    /// flushed (tests, tools and shutdown paths; never the request path).
    pub fn sync(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = channel();
        if tx.send(Msg::Sync(done_tx)).is_ok() {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
            let _ = done_rx.recv();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
