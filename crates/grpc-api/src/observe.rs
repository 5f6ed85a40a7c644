//! Per-RPC metrics, recorded by one layer outside all the others, so every
//! request counts: those the handlers answer, and those a layer answers
//! first (UNAUTHENTICATED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED when shed,
//! INTERNAL for a panic, INVALID_ARGUMENT for an undecodable body).
//!
//! - `orderflow_grpc_requests_total{service,method,code}`: one per finished
//!   RPC; the code is read from the response's `grpc-status`, in its headers
//!   (an answer with no body) or its trailers (after a body or a stream).
//! - `orderflow_grpc_request_duration_seconds{service,method}`: from the
//!   request until the status is known.
//! - `orderflow_grpc_requests_in_flight{service,method}`.
//!
//! Paths that name no known method are labelled `unknown`, so a client
//! cannot create label values at will.
//!
//! With auditing on, the same end of each call of a mutating RPC writes its
//! audit line (`crate::audit`).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use tonic::Code;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::audit::Audit;
use crate::rpcs::RPCS;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

tokio::task_local! {
    /// The index in [`RPCS`] of the RPC the current task is serving.
    static SERVING: usize;
}

/// The `(service, method)` of the RPC the current task is serving, when
/// called while [`MetricsLayer`] polls a request's future (the futures of
/// the layers inside it and of the handler; not their `call` methods, which
/// log nothing, nor a stream's later messages); `None` elsewhere. The log
/// formatter names the RPC with it when requests get no span.
pub fn current_rpc() -> Option<(&'static str, &'static str)> {
    SERVING.try_with(|index| labels_at(*index)).ok()
}

/// The `(service, method)` a request path names
/// (`/orderflow.v1.OrderService/GetOrder`), from the fixed list of methods
/// served; `("unknown", "unknown")` for any other path.
pub fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    labels_at(rpc_index(path))
}

/// Records every RPC; see the module documentation. Put it outside every
/// other layer, and build it after the metrics recorder is installed: it
/// keeps the recorder's handles for each method (and code) it has seen, so a
/// request costs no label lookup in the recorder's registry.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    handles: Arc<Handles>,
    audit: bool,
}

impl MetricsLayer {
    /// A layer with no handles yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also writes an audit line for each call of a mutating RPC.
    pub fn auditing(mut self, audit: bool) -> Self {
        self.audit = audit;
        self
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            handles: Arc::clone(&self.handles),
            audit: self.audit,
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    handles: Arc<Handles>,
    audit: bool,
}

impl<S, B> tower::Service<Request<B>> for Metrics<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let method = rpc_index(request.uri().path());
        let mut rpc = Rpc::start(Arc::clone(&self.handles), method);
        if self.audit
            && RPCS
                .get(method)
                .and_then(|rpc| rpc.scope)
                .is_some_and(crate::auth::Scope::mutates)
        {
            let audit = Arc::new(Audit::default());
            request.extensions_mut().insert(Arc::clone(&audit));
            rpc.audit = Some(audit);
        }
        let work = self.inner.call(request);
        Box::pin(SERVING.scope(method, async move {
            // tonic enters the request's span around this future (not around
            // `call`), so this is where it is found.
            rpc.span = tracing::Span::current();
            let response = work.await?;
            // An answer with no body carries its status in the headers.
            if let Some(code) = status_of(response.headers()) {
                rpc.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| tonic::body::Body::new(Observed { body, rpc })))
        }))
    }
}

/// The recorder's handles, per method of [`RPCS`] (and one more for
/// `unknown`), each taken from the recorder the first time it is needed.
#[derive(Debug)]
struct Handles {
    methods: [MethodHandles; RPCS.len()],
    unknown: MethodHandles,
}

impl Default for Handles {
    fn default() -> Self {
        Self {
            methods: std::array::from_fn(|_| MethodHandles::default()),
            unknown: MethodHandles::default(),
        }
    }
}

/// One method's series: in flight, duration, and a request counter per code.
#[derive(Debug, Default)]
struct MethodHandles {
    in_flight: OnceLock<metrics::Gauge>,
    duration: OnceLock<metrics::Histogram>,
    requests: [OnceLock<metrics::Counter>; CODES],
}

/// gRPC's status codes, `OK` (0) to `UNAUTHENTICATED` (16).
const CODES: usize = 17;

impl Handles {
    fn method(&self, index: usize) -> &MethodHandles {
        self.methods.get(index).unwrap_or(&self.unknown)
    }

    fn in_flight(&self, index: usize) -> &metrics::Gauge {
        self.method(index).in_flight.get_or_init(|| {
            let (service, method) = labels_at(index);
            metrics::gauge!("orderflow_grpc_requests_in_flight", "service" => service, "method" => method)
        })
    }

    fn duration(&self, index: usize) -> &metrics::Histogram {
        self.method(index).duration.get_or_init(|| {
            let (service, method) = labels_at(index);
            metrics::histogram!(
                "orderflow_grpc_request_duration_seconds",
                "service" => service,
                "method" => method
            )
        })
    }

    fn count(&self, index: usize, code: Code) {
        let register = || {
            let (service, method) = labels_at(index);
            metrics::counter!(
                "orderflow_grpc_requests_total",
                "service" => service,
                "method" => method,
                "code" => code_name(code)
            )
        };
        // Every code has a slot (0 to 16); a lookup is the fallback all the
        // same.
        match self.method(index).requests.get(code as usize) {
            Some(cell) => cell.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

/// The index in [`RPCS`] of the method a path names; one past the end for
/// any other path.
fn rpc_index(path: &str) -> usize {
    crate::rpcs::index(path).unwrap_or(RPCS.len())
}

/// The labels of [`rpc_index`]'s answer.
fn labels_at(index: usize) -> (&'static str, &'static str) {
    RPCS.get(index)
        .map_or(("unknown", "unknown"), |rpc| (rpc.service, rpc.method))
}

/// One RPC being measured; records itself once (as CANCELLED if dropped
/// before its status was seen: the client went away, or the server
/// stopped).
struct Rpc {
    handles: Arc<Handles>,
    method: usize,
    started: Instant,
    done: bool,
    /// The request's span: the status code is recorded on it (kept open
    /// until then, a stream's too).
    span: tracing::Span,
    /// The call's audit record, written when it finishes.
    audit: Option<Arc<Audit>>,
}

impl Rpc {
    fn start(handles: Arc<Handles>, method: usize) -> Self {
        handles.in_flight(method).increment(1.0);
        Self {
            handles,
            method,
            started: Instant::now(),
            done: false,
            span: tracing::Span::none(),
            audit: None,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (handles, method) = (&self.handles, self.method);
        handles.in_flight(method).decrement(1.0);
        handles.count(method, code);
        handles
            .duration(method)
            .record(self.started.elapsed().as_secs_f64());
        if let Some(audit) = &self.audit {
            let (service, method) = labels_at(method);
            audit.write(service, method, code);
        }
        // OpenTelemetry's RPC conventions: the numeric code, and an error
        // status for the codes that mean the server failed (a client's
        // mistake is not the server span's error). Set on the exported span
        // only: recorded as a tracing field, the JSON log formatter would
        // re-parse and rewrite the span's fields for it. A request with no
        // span (a health check, one sampling left out) skips it.
        if self.span.is_none() {
            return;
        }
        self.span
            .set_attribute("rpc.grpc.status_code", i64::from(code as i32));
        if is_server_error(code) {
            self.span
                .set_status(opentelemetry::trace::Status::error(code_name(code)));
        }
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The `grpc-status` in `headers`, if there is one.
fn status_of(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// A response body that records its RPC when the trailers (the status)
/// pass, or when it ends without them (UNKNOWN, as a client would read it).
struct Observed<B> {
    body: B,
    rpc: Rpc,
}

impl<B> http_body::Body for Observed<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.rpc
                        .finish(status_of(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.rpc.finish(Code::Internal),
            Poll::Ready(None) => this.rpc.finish(Code::Unknown),
            Poll::Pending => {}
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

/// Codes OpenTelemetry's gRPC conventions count as a server span's error.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
