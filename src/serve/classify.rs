//! Which route a request belongs to.

use std::borrow::Cow;

use axum::extract::MatchedPath;

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

/// A function as a classifier (for `serve_with`).
impl<F> Classifier for F
where
    F: Fn(&axum::http::request::Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn route<'a, B>(&self, req: &'a axum::http::Request<B>) -> Option<Cow<'a, str>> {
        // Parts cannot be borrowed out of a Request; rebuild the cheap, header-free view.
        let mut b = axum::http::Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version());
        if let Some(h) = b.headers_mut() {
            h.clone_from(req.headers());
        }
        let (parts, ()) = b.body(()).ok()?.into_parts();
        self(&parts).map(Cow::Owned)
    }
}
