//! The function-call profile: how often, and for how long, a request is inside each `tracing` span.
//!
//! Add [`layer()`] to your subscriber —
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(pagegen::tracing::layer())
//!     .init();
//! ```
//!
//! — or install nothing: when the first server starts (`pagegen::http::serve`) and no global
//! subscriber has been set, pagegen installs a registry with this layer alone
//! ([`install_default`]). A subscriber of your own *without* the layer is left alone, and pagegen
//! says once that span profiles are off.
//!
//! For every span *created* inside a request (the request's context is current, see
//! `pagegen_core::ctx`), the layer adds up the time between each enter and exit (busy time, so an
//! `.instrument()`ed future parked on I/O counts only while it is polled; nested spans count in
//! each), and when the span closes it records one call into the request's
//! [`SpanAccount`](pagegen_core::SpanAccount) (the profile's `spans`) and into a per-class,
//! per-span-name aggregate ([`stats`], served as `pagegen_span_calls_total` and
//! `pagegen_span_seconds_total`). Spans outside requests cost one thread-local read.
//!
//! Span names are `&'static str` from the callsites, so the aggregate's size is bounded by the
//! program's span sites times its classes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ::tracing::span::{Attributes, Id};
use ::tracing::Subscriber;
use pagegen_core::{ClassId, RequestCtx};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The layer that profiles spans inside requests; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanLayer {
    _private: (),
}

/// The profiling layer (add it to your subscriber).
pub fn layer() -> SpanLayer {
    SpanLayer::default()
}

/// What a span of a request carries while open.
struct Timing {
    ctx: Arc<RequestCtx>,
    name: &'static str,
    busy_ns: u64,
    entered: Option<Instant>,
    /// Enters not yet exited (a span entered again while inside itself counts once).
    depth: u32,
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        let Some(ctx) = RequestCtx::current() else {
            return;
        };
        if ctx.id().is_background() {
            return;
        }
        if let Some(span) = cx.span(id) {
            span.extensions_mut().insert(Timing {
                ctx,
                name: attrs.metadata().name(),
                busy_ns: 0,
                entered: None,
                depth: 0,
            });
        }
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        if let Some(span) = cx.span(id) {
            if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
                if t.depth == 0 {
                    t.entered = Some(Instant::now());
                }
                t.depth += 1;
            }
        }
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        if let Some(span) = cx.span(id) {
            if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
                t.depth = t.depth.saturating_sub(1);
                if t.depth == 0 {
                    if let Some(at) = t.entered.take() {
                        t.busy_ns += at.elapsed().as_nanos() as u64;
                    }
                }
            }
        }
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(&id) else {
            return;
        };
        let Some(t) = span.extensions_mut().remove::<Timing>() else {
            return;
        };
        let busy = t.busy_ns + t.entered.map_or(0, |at| at.elapsed().as_nanos() as u64);
        t.ctx.spans.record(busy);
        stats().record(t.ctx.class(), t.name, busy);
    }
}

/// One span name's calls in one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanAggregate {
    /// Spans closed.
    pub calls: u64,
    /// Busy time inside them, ns.
    pub busy_ns: u64,
    /// The longest one, ns.
    pub max_ns: u64,
}

/// Per-class, per-span-name aggregates of every request span closed in this process.
#[derive(Debug, Default)]
pub struct SpanStats {
    by: Mutex<HashMap<(ClassId, &'static str), SpanAggregate>>,
}

impl SpanStats {
    fn record(&self, class: ClassId, name: &'static str, ns: u64) {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let a = by.entry((class, name)).or_default();
        a.calls += 1;
        a.busy_ns += ns;
        a.max_ns = a.max_ns.max(ns);
    }

    /// Every (class, span name) seen so far, sorted.
    pub fn snapshot(&self) -> Vec<(ClassId, &'static str, SpanAggregate)> {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = by.iter().map(|(&(c, n), &a)| (c, n, a)).collect();
        v.sort_by_key(|&(c, n, _)| (c, n));
        v
    }

    /// One class's spans.
    pub fn class(&self, class: ClassId) -> Vec<(&'static str, SpanAggregate)> {
        self.snapshot()
            .into_iter()
            .filter(|&(c, _, _)| c == class)
            .map(|(_, n, a)| (n, a))
            .collect()
    }
}

/// The process's span aggregates.
pub fn stats() -> &'static SpanStats {
    static STATS: OnceLock<SpanStats> = OnceLock::new();
    STATS.get_or_init(SpanStats::default)
}

/// Whether the layer is part of the global (or this thread's) subscriber.
pub fn is_installed() -> bool {
    ::tracing::dispatcher::get_default(|d| d.is::<SpanLayer>())
}

/// Installs a registry with [`layer()`] as the global subscriber when none is set; says once when a
/// subscriber without the layer is (span profiles are then off). Returns whether the layer is on.
pub fn install_default() -> bool {
    static ONCE: OnceLock<bool> = OnceLock::new();
    *ONCE.get_or_init(|| {
        use tracing_subscriber::layer::{Layer as _, SubscriberExt};
        if !::tracing::dispatcher::has_been_set() {
            // Spans only: events would otherwise all become enabled, for nobody to print.
            let spans_only = tracing_subscriber::filter::filter_fn(|m| m.is_span());
            let subscriber = tracing_subscriber::registry().with(layer().with_filter(spans_only));
            // Lost a race with the program setting its own: judged below like any other.
            let _ = ::tracing::subscriber::set_global_default(subscriber);
        }
        let on = is_installed();
        if !on {
            ::tracing::info!(
                "the tracing subscriber has no pagegen::tracing::layer(): span profiles are off"
            );
        }
        on
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{Grant, RequestId};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn spans_inside_a_request_are_counted_per_request_and_per_name() {
        let subscriber = tracing_subscriber::registry().with(layer());
        let class = ClassId::from_raw(900);
        let ctx = RequestCtx::new(RequestId(5), Grant::unlimited(class), 0);
        ::tracing::subscriber::with_default(subscriber, || {
            assert!(is_installed());
            // Outside a request: not recorded.
            ::tracing::info_span!("outside").in_scope(|| {});
            let _g = RequestCtx::enter(&ctx);
            for _ in 0..3 {
                let s = ::tracing::info_span!("render");
                s.in_scope(|| {
                    // Nested, and the outer entered again inside itself: counted once each.
                    ::tracing::info_span!("query").in_scope(|| {});
                    s.in_scope(|| {});
                });
            }
        });
        let u = ctx.spans.snapshot();
        assert_eq!(u.spans, 6, "3 renders + 3 queries");
        let names: Vec<_> = stats()
            .class(class)
            .into_iter()
            .map(|(n, a)| (n, a.calls))
            .collect();
        assert_eq!(names, [("query", 3), ("render", 3)]);
        let render = stats().class(class)[1].1;
        assert!(render.max_ns <= render.busy_ns);
        assert!(u.span_ns >= render.busy_ns);
    }

    #[test]
    fn a_subscriber_without_the_layer_is_detected() {
        let plain = tracing_subscriber::registry();
        ::tracing::subscriber::with_default(plain, || assert!(!is_installed()));
    }
}
