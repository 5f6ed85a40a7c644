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

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use tonic::Code;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Every method served, as `(service, method)`: the metric labels.
pub const RPC_METHODS: [(&str, &str); 17] = [
    ("orderflow.v1.OrderService", "CreateOrder"),
    ("orderflow.v1.OrderService", "GetOrder"),
    ("orderflow.v1.OrderService", "ListOrders"),
    ("orderflow.v1.OrderService", "UpdateOrderStatus"),
    ("orderflow.v1.CatalogService", "UpsertProduct"),
    ("orderflow.v1.CatalogService", "GetProduct"),
    ("orderflow.v1.CatalogService", "GetPrimaryWarehouse"),
    ("orderflow.v1.EventService", "PublishEvents"),
    ("orderflow.v1.EventService", "PublishEvent"),
    ("orderflow.v1.EventService", "GetPipelineStats"),
    ("orderflow.v1.EventService", "PublishEventBatch"),
    ("orderflow.v1.EventService", "StreamEventBatches"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    ("grpc.health.v1.Health", "List"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// The `(service, method)` a request path names
/// (`/orderflow.v1.OrderService/GetOrder`), from the fixed list of methods
/// served; `("unknown", "unknown")` for any other path.
pub fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    RPC_METHODS
        .iter()
        .find(|(s, m)| *s == service && *m == method)
        .map_or(("unknown", "unknown"), |(s, m)| (*s, *m))
}

/// Records every RPC; see the module documentation. Put it outside every
/// other layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut rpc = Rpc::start(rpc_labels(request.uri().path()));
        let work = self.inner.call(request);
        Box::pin(async move {
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
        })
    }
}

/// One RPC being measured; records itself once (as CANCELLED if dropped
/// before its status was seen: the client went away, or the server
/// stopped).
struct Rpc {
    service: &'static str,
    method: &'static str,
    started: Instant,
    done: bool,
    /// The request's span: the status code is recorded on it (kept open
    /// until then, a stream's too).
    span: tracing::Span,
}

impl Rpc {
    fn start((service, method): (&'static str, &'static str)) -> Self {
        metrics::gauge!("orderflow_grpc_requests_in_flight", "service" => service, "method" => method)
            .increment(1.0);
        Self {
            service,
            method,
            started: Instant::now(),
            done: false,
            span: tracing::Span::none(),
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (service, method) = (self.service, self.method);
        metrics::gauge!("orderflow_grpc_requests_in_flight", "service" => service, "method" => method)
            .decrement(1.0);
        metrics::counter!(
            "orderflow_grpc_requests_total",
            "service" => service,
            "method" => method,
            "code" => code_name(code)
        )
        .increment(1);
        metrics::histogram!(
            "orderflow_grpc_request_duration_seconds",
            "service" => service,
            "method" => method
        )
        .record(self.started.elapsed().as_secs_f64());
        // OpenTelemetry's RPC conventions: the numeric code, and an error
        // status for the codes that mean the server failed (a client's
        // mistake is not the server span's error).
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
            self.span.record("otel.status_description", code_name(code));
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
