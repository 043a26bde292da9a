//! Which route a request belongs to.

use std::borrow::Cow;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, Uri};

/// Names a request's route (its path as written in the router: `/product/{id}`), or `None` when
/// it matched no route — such requests share one class, so random URLs create no classes.
pub trait Classifier: Clone + Send + Sync + 'static {
    /// The route key of `req`.
    fn route<'a, B>(&self, req: &'a axum::http::Request<B>) -> Option<Cow<'a, str>>;
}

/// axum's router: the `MatchedPath` it stores in each request's extensions (inserted before any
/// layer added with `Router::layer` runs).
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchedPathClassifier;

impl Classifier for MatchedPathClassifier {
    fn route<'a, B>(&self, req: &'a axum::http::Request<B>) -> Option<Cow<'a, str>> {
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| Cow::Borrowed(m.as_str()))
    }
}

/// A function of the method, URI and headers as a classifier (for `serve_with`); it sees the
/// request's parts by reference, so classifying copies nothing.
impl<F> Classifier for F
where
    F: Fn(&Method, &Uri, &HeaderMap) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn route<'a, B>(&self, req: &'a axum::http::Request<B>) -> Option<Cow<'a, str>> {
        self(req.method(), req.uri(), req.headers()).map(Cow::Owned)
    }
}
