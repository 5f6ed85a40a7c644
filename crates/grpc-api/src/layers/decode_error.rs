//! `DecodeErrorLayer`: the codes clients expect for requests tonic could
//! not decode.

use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;

use super::BoxFuture;
use crate::status::{self, Reason};

/// Gives requests tonic could not decode the codes a client expects, in the
/// response headers of a trailers-only reply (recognised by tonic's own
/// messages; `tests/integration/layers.rs` pins them):
/// - an oversized message is RESOURCE_EXHAUSTED, as the gRPC spec and other
///   servers say; tonic's decoder reports OUT_OF_RANGE;
/// - a body that is not valid protobuf is INVALID_ARGUMENT. orderflow's own
///   services already answer so (`crate::codec`); this covers the standard
///   services (health, reflection), which use tonic-prost's codec and say
///   INTERNAL.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorLayer;

impl<S> tower::Layer<S> for DecodeErrorLayer {
    type Service = DecodeError<S>;
    fn layer(&self, inner: S) -> DecodeError<S> {
        DecodeError { inner }
    }
}

/// The service [`DecodeErrorLayer`] makes.
#[derive(Debug, Clone)]
pub struct DecodeError<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for DecodeError<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let work = self.inner.call(request);
        Box::pin(async move {
            let mut response = work.await?;
            let headers = response.headers_mut();
            let message = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .unwrap_or_default();
            let replace = match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
                Some(b"11")
                    if message.contains("message%20length%20too%20large")
                        || message.contains("message length too large") =>
                {
                    Some(too_large as fn(&str) -> Status)
                }
                Some(b"13")
                    if message.starts_with("failed%20to%20decode%20Protobuf%20message")
                        || message.starts_with("failed to decode Protobuf message") =>
                {
                    Some(malformed as fn(&str) -> Status)
                }
                _ => None,
            };
            if let Some(replace) = replace
                && let Some(original) = Status::from_header_map(headers)
                && replace(original.message()).add_header(headers).is_err()
            {
                tracing::warn!("could not rewrite a decode error's status headers");
            }
            Ok(response)
        })
    }
}

/// RESOURCE_EXHAUSTED for an oversized message, keeping tonic's words.
fn too_large(message: &str) -> Status {
    status::error(Reason::MessageTooLarge, message).status()
}

/// INVALID_ARGUMENT for a body that did not decode, keeping tonic's words.
fn malformed(message: &str) -> Status {
    status::error(Reason::MalformedRequest, message).status()
}

/// Maps a request stream's read error: an oversized message is
/// RESOURCE_EXHAUSTED (see [`DecodeErrorLayer`]); anything else passes.
pub fn stream_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        too_large(status.message())
    } else {
        status
    }
}
