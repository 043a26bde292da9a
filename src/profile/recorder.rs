//! [`Recorder`]: finished requests' records to the model, on a thread of their own.
//!
//! The request path only `try_send`s into a bounded queue ([`QUEUE`] records): it never blocks and
//! never waits for the model's locks or the store's disk writes. A full queue (the recorder thread
//! starved, or a burst far beyond what the store writes) drops the record and counts it
//! ([`Decision::RecordDropped`]). Dropping the recorder closes the queue; its thread records what is
//! left, flushes the store and exits, and the drop waits for it.

use std::sync::mpsc::{channel, sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use pagegen_core::ProfileRecord;
use pagegen_model::ModelRuntime;

use crate::policy::{Decision, Decisions};

/// Records queued for the recorder thread at most: ~1 KiB each, 4 MiB; at 10 000 requests/s, 0.4 s
/// of traffic (plucked from thin air; the store appends far faster than that).
pub const QUEUE: usize = 4096;

#[derive(Debug)]
enum Msg {
    Record(Box<ProfileRecord>),
    Sync(std::sync::mpsc::Sender<()>),
}

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
    pub fn start(model: Arc<ModelRuntime>, decisions: Arc<Decisions>) -> std::io::Result<Self> {
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
                // Flushes whenever the queue runs dry: a burst is written in one go, and a process
                // killed between bursts (SIGKILL, an OOM kill) loses nothing it had recorded.
                while let Ok(mut msg) = rx.recv() {
                    loop {
                        match msg {
                            Msg::Record(r) => {
                                model.record(&r);
                                d.count(r.class, Decision::Recorded);
                            }
                            Msg::Sync(done) => {
                                flush();
                                let _ = done.send(());
                            }
                        }
                        match rx.try_recv() {
                            Ok(m) => msg = m,
                            Err(TryRecvError::Empty) => {
                                flush();
                                break;
                            }
                            Err(TryRecvError::Disconnected) => break,
                        }
                    }
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
            let _ = done_rx.recv();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
