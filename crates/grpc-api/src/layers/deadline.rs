//! `DeadlineLayer`: an expired `grpc-timeout` answered DEADLINE_EXCEEDED in
//! the server, and the `grpc-timeout` parser.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};

use super::BoxFuture;
use crate::status::{self, Reason};

/// Answers an expired `grpc-timeout` with DEADLINE_EXCEEDED (tonic's own
/// timeout answers CANCELLED, which clients and the gRPC spec read
/// differently) and drops the handler's future, so the work behind it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for Deadline<S>
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
        // Answer a little early. tonic arms its own timer for the same
        // header just before ours (and would answer CANCELLED), and clients
        // run one too (tonic's reports CANCELLED locally): the server's
        // DEADLINE_EXCEEDED must reach the client first. The instant is
        // fixed here, as the request arrives, not at the first poll, which a
        // busy machine can delay past tonic's timer. (A timeout too long to
        // add to now, up to 99,999,999 hours, is no deadline at all.)
        let deadline = grpc_timeout(request.headers()).and_then(|timeout| {
            tokio::time::Instant::now()
                .checked_add(timeout.saturating_sub(DEADLINE_MARGIN.min(timeout / 10)))
        });
        let work = self.inner.call(request);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return work.await;
            };
            match tokio::time::timeout_at(deadline, work).await {
                Ok(result) => result,
                Err(_) => Ok(status::error(Reason::DeadlineExceeded, "deadline exceeded")
                    .status()
                    .into_http()),
            }
        })
    }
}

/// How much earlier than the caller's deadline the server answers.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The `grpc-timeout` header's value, if it is valid.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (H M S m
/// u n), as the gRPC spec writes it; anything else is `None` (no deadline).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = (text.get(..split)?, text.get(split..)?);
    // `u64::from_str` would also take a leading `+`.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}
