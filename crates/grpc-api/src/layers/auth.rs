//! `AuthLayer`: the bearer token on guarded RPCs (the RPC table says
//! which), compared in constant time.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};

use super::{BoxFuture, short_circuit};
use crate::status::{self, Reason};

/// Requires the bearer token on guarded RPCs (mutations, SubscribeEvents)
/// when one is configured.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    /// `Bearer <token>`, precomputed; `None` disables auth.
    expected: Option<Arc<[u8]>>,
}

impl AuthLayer {
    /// Auth with `token`, or none when `None`.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| Arc::from(format!("Bearer {t}").into_bytes())),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    expected: Option<Arc<[u8]>>,
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S, B, R> tower::Service<Request<B>> for Auth<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(expected) = &self.expected
            && crate::rpcs::find(request.uri().path()).is_some_and(|rpc| rpc.guarded)
        {
            let presented = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if !presented.is_some_and(|p| constant_time_eq(p, expected)) {
                let status = status::error(
                    Reason::Unauthenticated,
                    "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
                )
                .status();
                return short_circuit(status);
            }
        }
        Box::pin(self.inner.call(request))
    }
}
