//! Layers every request passes: load shedding (separate budgets for unary
//! calls and streams), a metadata size limit, bearer-token auth for mutating
//! RPCs, deadlines answered as DEADLINE_EXCEEDED, codes for requests tonic
//! could not decode, the end of health watches at shutdown, and the panic
//! response. (Metrics are recorded by `crate::observe`, outside them all.)

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::Status;

use crate::status::{self, Reason};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Requires the bearer token on mutating RPCs when one is configured.
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
            && crate::rpcs::find(request.uri().path()).is_some_and(|rpc| rpc.mutating)
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
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(request))
    }
}

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
                Box::pin(std::future::ready(Ok(status.into_http())))
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
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
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

/// The response for a panicking handler (for `tower_http`'s
/// `CatchPanicLayer::custom`): INTERNAL with a generic message, as a real
/// gRPC status (the layer's default, HTTP 500, reads as a protocol error to
/// gRPC clients). The panic message is logged (inside the request's span,
/// which names the RPC) and counted, never sent.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<tonic::body::Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic payload)");
    tracing::error!(
        panic = message,
        "an RPC handler panicked; answered INTERNAL"
    );
    metrics::counter!("orderflow_panics_total").increment(1);
    status::internal_status().into_http()
}

/// Ends every open `grpc.health.v1.Health/Watch` stream once `stopping` is
/// cancelled, with UNAVAILABLE ("shutting down") after whatever the stream
/// already sent (by then NOT_SERVING). A Watch never ends by itself, so
/// without this one watching client holds a graceful shutdown for its whole
/// grace period.
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
        let watch = request.uri().path() == "/grpc.health.v1.Health/Watch";
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
