//! The request loop as tower middleware.
//!
//! For each request [`LoopService`] (added with `Router::layer`, so axum's `MatchedPath` is known):
//! 1. classifies it ([`Classifier`] → [`Engine::classify`]) and extracts its features
//!    (`pagegen_model::features::extract`: path, query, body length, header count);
//! 2. predicts, grants and admits it ([`Engine::admit`]); a refusal answers **503** with
//!    `Retry-After` when retrying can help, before the handler runs;
//! 3. spawns the inner service's future as a pagegen task **with the admitted context**
//!    (`Handle::spawn_with_ctx`): the task runs in its class and its grant's pool, every poll is
//!    profiled and enforced, every allocation and file operation charged to it;
//! 4. arms its wall-clock deadline: a timer that cancels the request even while it is parked
//!    (`RequestCtx::request_cancel` wakes it; see `core::ctx`);
//! 5. answers from the task's end: its response; **503** when it was cancelled (memory budget, or
//!    deadline with `Retry-After`); **500** when it panicked — the connection and the server go on;
//! 6. hands the outcome and the request's profile to [`Engine::finish`] — or, on a connection
//!    served by `pagegen::http::serve` (a [`ConnAccount`] in the request's extensions), to
//!    [`Engine::finish_on`], so the profile holds the request's socket traffic: the head and body
//!    it received, the response it sent (the account is told when the request begins, after
//!    admission; traffic of a request shed at admission is dropped, not charged to the next).
//!
//! Outside a pagegen runtime (no current engine) the service passes requests through untouched.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use pagegen_core::{CancelReason, ConnAccount, Outcome, RequestCtx, Resource};
use tower::{Layer, Service};

use crate::engine::{Engine, RouteInfo, Shed};
use crate::route::RouteAnnotation;
use crate::serve::classify::{Classifier, MatchedPathClassifier};

thread_local! {
    /// The route a handler runs for, current while its task is polled (for `#[pagegen::route]`
    /// annotations that bind on first call).
    static ROUTE: RefCell<Option<Arc<RouteInfo>>> = const { RefCell::new(None) };
}

/// `#[pagegen::route]`'s call-time binding (`__private::bind_route`).
pub(crate) fn bind_current(a: &'static RouteAnnotation) {
    let Some(engine) = Engine::current() else {
        return;
    };
    let Some(ctx) = RequestCtx::current() else {
        return;
    };
    let key = ROUTE.with(|r| r.borrow().clone());
    let spec = a.spec();
    match (a.path, key.as_ref().and_then(|k| k.path.as_deref())) {
        (None, Some(path)) => {
            let method = key.as_ref().map_or("GET", |k| &k.method);
            engine.bind(&ctx, method, path, a.class, &spec);
        }
        _ => crate::policy::grant::cap_live(ctx.grant(), &spec),
    }
}

/// The tower layer of the request loop.
#[derive(Clone, Debug, Default)]
pub struct LoopLayer<C = MatchedPathClassifier> {
    classifier: C,
}

impl LoopLayer {
    /// The layer for axum routers (classes by `MatchedPath`).
    pub fn new() -> Self {
        LoopLayer {
            classifier: MatchedPathClassifier,
        }
    }
}

impl<C: Classifier> LoopLayer<C> {
    /// The layer with another classifier.
    pub fn with_classifier(classifier: C) -> Self {
        LoopLayer { classifier }
    }
}

impl<S, C: Classifier> Layer<S> for LoopLayer<C> {
    type Service = LoopService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        LoopService {
            inner,
            classifier: self.classifier.clone(),
        }
    }
}

/// The request loop around a service; see the module docs.
#[derive(Clone, Debug)]
pub struct LoopService<S, C = MatchedPathClassifier> {
    inner: S,
    classifier: C,
}

fn plain(status: StatusCode, retry_after_s: Option<u64>, msg: String) -> Response<Body> {
    let mut r = (status, msg).into_response();
    if let Some(s) = retry_after_s {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// The answer to a request shed at admission.
pub(crate) fn shed_response(s: Shed) -> Response<Body> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        s.retry_after_s,
        s.refusal.to_string(),
    )
}

/// The handler's future inside its task: keeps the cancel waker registered, fires the deadline
/// timer, and makes the route current while it is polled.
struct Guarded<F> {
    fut: Pin<Box<F>>,
    ctx: Arc<RequestCtx>,
    /// When the request was admitted, on tokio's clock (the timer's).
    start: tokio::time::Instant,
    /// The wall budget the timer is armed for (an annotation binding on first call may lower it).
    armed_ns: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    route: Arc<RouteInfo>,
}

impl<F: Future> Future for Guarded<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let prev = ROUTE.with(|r| r.replace(Some(this.route.clone())));
        let out = this.fut.as_mut().poll(cx);
        ROUTE.with(|r| *r.borrow_mut() = prev);
        if out.is_ready() {
            return out;
        }
        // Parked: only now does the request need a wake-up for a cancel and a timer for its
        // deadline (most pages finish in their first poll and pay for neither).
        this.ctx.register_cancel_waker(cx.waker());
        if this.ctx.cancel_requested().is_some() {
            // A cancel raced the registration: be polled again, so the executor sees it.
            cx.waker().wake_by_ref();
        }
        // (Re-)arm when the budget changed (an annotation binding on this call may lower it).
        let wall = this.ctx.grant().wall_ns();
        if wall != this.armed_ns {
            this.armed_ns = wall;
            this.deadline = (wall != u64::MAX).then(|| {
                Box::pin(tokio::time::sleep_until(
                    this.start + Duration::from_nanos(wall),
                ))
            });
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                // Wakes this task (registered above): the executor drops it at its next poll
                // boundary with the reason, before polling the handler again.
                this.ctx.request_cancel(CancelReason::Deadline);
            }
        }
        Poll::Pending
    }
}

impl<S, C> Service<Request<Body>> for LoopService<S, C>
where
    S: Service<Request<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse + Send + 'static,
    S::Future: Send + 'static,
    C: Classifier,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The ready service goes with this call; a fresh clone waits for the next (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let engine = Engine::current();
        let (route, features) = match &engine {
            Some(engine) => {
                let route = {
                    let matched = self.classifier.route(&req);
                    engine.route(req.method().as_str(), matched.as_deref())
                };
                let body_len = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let features = pagegen_model::features::extract(
                    route.class,
                    req.uri().path(),
                    req.uri().query(),
                    body_len,
                    req.headers().len(),
                );
                (route, features)
            }
            None => {
                return Box::pin(async move {
                    let Ok(r) = inner.call(req).await;
                    Ok(r.into_response())
                })
            }
        };
        let engine = engine.expect("checked above");
        // The connection's traffic account, when `serve` split it per request.
        let conn = req.extensions().get::<Arc<ConnAccount>>().cloned();
        Box::pin(async move {
            let admitted = match engine.admit(route.class, &route.spec, features).await {
                Ok(a) => a,
                Err(shed) => {
                    if let Some(c) = &conn {
                        c.discard_pending();
                    }
                    return Ok(shed_response(shed));
                }
            };
            let ctx = admitted.ctx.clone();
            if let Some(c) = &conn {
                c.begin(&ctx);
            }
            let guarded = Guarded {
                fut: Box::pin(inner.call(req)),
                ctx: ctx.clone(),
                start: tokio::time::Instant::now(),
                armed_ns: u64::MAX,
                deadline: None,
                route,
            };
            let handle = pagegen_executor::Handle::current();
            let joined = handle.spawn_with_ctx(ctx, guarded).await;
            let (outcome, response) = match joined {
                Ok(Ok(r)) => {
                    let r = r.into_response();
                    let o = if r.status().is_server_error() {
                        Outcome::Failed
                    } else {
                        Outcome::Completed
                    };
                    (o, r)
                }
                Ok(Err(never)) => match never {},
                Err(e) => match e.cancel_reason() {
                    Some(reason) => {
                        let retry = match reason {
                            CancelReason::BudgetExceeded(Resource::Memory) => None,
                            _ => Some(1),
                        };
                        (
                            Outcome::Cancelled(reason),
                            plain(
                                StatusCode::SERVICE_UNAVAILABLE,
                                retry,
                                format!("request cancelled: {reason}"),
                            ),
                        )
                    }
                    None => (
                        Outcome::Panicked,
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            None,
                            "internal error: the handler panicked".into(),
                        ),
                    ),
                },
            };
            match &conn {
                Some(c) => engine.finish_on(admitted, outcome, c),
                None => engine.finish(admitted, outcome),
            }
            Ok(response)
        })
    }
}
