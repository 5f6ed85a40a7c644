//! `LoadShedLayer`: two concurrency budgets (unary calls, streams), each
//! permit held to the end of the response body (`Guarded`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};

use super::{BoxFuture, short_circuit};
use crate::status::{self, Reason};

/// Bounds the RPCs served at once across all connections; past a bound a
/// request is shed at once with RESOURCE_EXHAUSTED instead of queueing
/// (queued requests only time out later, holding memory meanwhile).
///
/// Two budgets: unary RPCs and streams. A stream holds its permit until it
/// ends, which may be minutes; with one budget, clients holding idle
/// streams could take every permit and starve everyone's unary calls. A
/// permit is held until the response body is finished, not only until the
/// handler returns (a bidirectional stream's handler returns at once).
/// Health checks are never shed: an overloaded instance is busy, not dead.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    /// One permit per unary RPC in progress; `try_acquire` never waits.
    unary: Arc<tokio::sync::Semaphore>,
    /// One permit per open stream.
    streams: Arc<tokio::sync::Semaphore>,
}

impl LoadShedLayer {
    /// At most `unary` unary RPCs and `streams` streams at once.
    pub fn new(unary: usize, streams: usize) -> Self {
        Self {
            unary: Arc::new(tokio::sync::Semaphore::new(unary.max(1))),
            streams: Arc::new(tokio::sync::Semaphore::new(streams.max(1))),
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed {
            inner,
            budgets: self.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] makes.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    budgets: LoadShedLayer,
}

impl<S, B, R> tower::Service<Request<B>> for LoadShed<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    R::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<tonic::body::Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path == "/grpc.health.v1.Health/Check" {
            let work = self.inner.call(request);
            return Box::pin(async move { Ok(work.await?.map(tonic::body::Body::new)) });
        }
        let (budget, what) = if crate::rpcs::find(path).is_some_and(|rpc| rpc.streaming) {
            (&self.budgets.streams, "open streams")
        } else {
            (&self.budgets.unary, "concurrent requests")
        };
        match Arc::clone(budget).try_acquire_owned() {
            Ok(permit) => {
                let work = self.inner.call(request);
                Box::pin(async move {
                    let response = work.await?;
                    Ok(response.map(|body| tonic::body::Body::new(Guarded::new(body, permit))))
                })
            }
            Err(_) => {
                metrics::counter!("orderflow_grpc_shed_total").increment(1);
                let status = status::error(
                    Reason::Overloaded,
                    format!("server at its limit of {what}; retry with backoff"),
                )
                .meta("limit", what)
                .retry_after(status::RETRY_OVERLOADED)
                .status();
                short_circuit(status)
            }
        }
    }
}

/// A response body that holds `guard` until the body is finished or
/// dropped: how a layer keeps something (a permit, a count) for the whole
/// of an RPC, streams included.
#[derive(Debug)]
pub struct Guarded<B, G> {
    body: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    /// `body`, holding `guard`.
    pub fn new(body: B, guard: G) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<B, G> http_body::Body for Guarded<B, G>
where
    B: http_body::Body + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
