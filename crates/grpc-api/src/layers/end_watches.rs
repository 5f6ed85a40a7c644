//! `EndWatchesLayer`: open endless streams (health watches, subscriptions)
//! ended at shutdown.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use super::BoxFuture;

/// Ends every open stream the RPC table calls endless (a health `Watch`,
/// `SubscribeEvents`) once `stopping` is cancelled, with UNAVAILABLE
/// ("shutting down") after whatever the stream already sent (a Watch's
/// NOT_SERVING). Such a stream never ends by itself, so without this one
/// client holds a graceful shutdown for its whole grace period.
#[derive(Debug, Clone)]
pub struct EndWatchesLayer {
    stopping: tokio_util::sync::CancellationToken,
}

impl EndWatchesLayer {
    /// Ends the watches when `stopping` is cancelled.
    pub fn new(stopping: tokio_util::sync::CancellationToken) -> Self {
        Self { stopping }
    }
}

impl<S> tower::Layer<S> for EndWatchesLayer {
    type Service = EndWatches<S>;
    fn layer(&self, inner: S) -> EndWatches<S> {
        EndWatches {
            inner,
            stopping: self.stopping.clone(),
        }
    }
}

/// The service [`EndWatchesLayer`] makes.
#[derive(Debug, Clone)]
pub struct EndWatches<S> {
    inner: S,
    stopping: tokio_util::sync::CancellationToken,
}

impl<S, B> tower::Service<Request<B>> for EndWatches<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<tonic::body::Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let watch = crate::rpcs::find(request.uri().path()).is_some_and(|rpc| rpc.endless);
        let stopping = self.stopping.clone();
        let work = self.inner.call(request);
        Box::pin(async move {
            let response = work.await?;
            if !watch {
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(Ending {
                    body,
                    stopping: Box::pin(stopping.cancelled_owned()),
                    ended: false,
                })
            }))
        })
    }
}

/// A stream body that ends with UNAVAILABLE trailers once shutdown begins.
struct Ending<B> {
    body: B,
    stopping: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl<B> http_body::Body for Ending<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // What the stream has ready goes out first (the NOT_SERVING update).
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.stopping.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
            trailers.insert(
                "grpc-message",
                http::HeaderValue::from_static("server%20shutting%20down"),
            );
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }
}
