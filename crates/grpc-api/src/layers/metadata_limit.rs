//! `MetadataLimitLayer`: oversized request metadata answered
//! RESOURCE_EXHAUSTED.

use std::task::{Context, Poll};

use http::{Request, Response};

use super::{BoxFuture, short_circuit};
use crate::status::{self, Reason};

/// Bounds a request's metadata. HTTP/2 itself refuses a header list over
/// its own, larger limit with HTTP 431, which gRPC clients can only report
/// as UNKNOWN; below that limit this layer answers RESOURCE_EXHAUSTED (as
/// for an oversized message), saying how large the metadata was.
#[derive(Debug, Clone, Copy)]
pub struct MetadataLimitLayer {
    max_bytes: usize,
}

impl MetadataLimitLayer {
    /// The default bound: 16 KiB of metadata.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;

    /// Metadata of at most `max_bytes`, counted as HTTP/2 counts a header
    /// list: name, value and 32 bytes per entry.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<S> tower::Layer<S> for MetadataLimitLayer {
    type Service = MetadataLimit<S>;
    fn layer(&self, inner: S) -> MetadataLimit<S> {
        MetadataLimit {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// The service [`MetadataLimitLayer`] makes.
#[derive(Debug, Clone)]
pub struct MetadataLimit<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, B> tower::Service<Request<B>> for MetadataLimit<S>
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
        let headers = request.headers();
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        if bytes > self.max_bytes {
            let status = status::error(
                Reason::MetadataTooLarge,
                format!(
                    "request metadata is {bytes} bytes in {} entries, at most {} bytes are allowed",
                    headers.len(),
                    self.max_bytes
                ),
            )
            .meta("max_bytes", self.max_bytes)
            .status();
            return short_circuit(status);
        }
        Box::pin(self.inner.call(request))
    }
}
