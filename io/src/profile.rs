//! The per-request I/O profile: what each finished operation writes into its request's
//! [`IoAccount`](pagegen_core::IoAccount) (ops by kind, bytes, latency histogram, locality, files).
//!
//! Locality: a read is *sequential* when it starts where the previous read of the same open file
//! ended. Files are keyed by a hash of the path they were opened by (the account's sketch only
//! needs a stable identity).
//!
//! Sockets (`net`) charge their receives and sends to the request current on the polling thread,
//! into [`NetAccount`](pagegen_core::NetAccount)'s socket counters.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use pagegen_core::{IoOpKind, RequestCtx};

/// Records one completed operation into `ctx` (nothing outside a request).
pub(crate) fn record(
    ctx: Option<&Arc<RequestCtx>>,
    kind: IoOpKind,
    bytes: u64,
    latency_ns: u64,
    sequential: bool,
) {
    if let Some(ctx) = ctx {
        ctx.io.record_op(kind, bytes, latency_ns, sequential);
    }
}

/// Notes a file the request touched.
pub(crate) fn note_file(ctx: Option<&Arc<RequestCtx>>, key: u64) {
    if let Some(ctx) = ctx {
        ctx.io.note_file(key);
    }
}

/// A file's identity for the distinct-files sketch.
pub(crate) fn file_key(path: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// Charges one completed socket receive to the request current on this thread (the one being
/// served when its connection's task polls), if any. Per operation, as the account protocol
/// allows for operations that cost microseconds.
pub(crate) fn record_recv(bytes: u64, latency_ns: u64) {
    RequestCtx::with_current(|ctx| {
        if let Some(ctx) = ctx {
            ctx.net.record_recv(bytes, latency_ns);
        }
    });
}

/// Charges one completed socket send, as [`record_recv`] does.
pub(crate) fn record_send(bytes: u64, latency_ns: u64) {
    RequestCtx::with_current(|ctx| {
        if let Some(ctx) = ctx {
            ctx.net.record_send(bytes, latency_ns);
        }
    });
}
