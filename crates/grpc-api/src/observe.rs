//! Per-RPC metrics: `orderflow_grpc_requests_total{method,code}` and
//! `orderflow_grpc_request_duration_seconds{method}`, recorded around each
//! handler. (Panics are counted by the panic layer, which answers them.)

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Status};

/// Runs `work` and records its outcome under `method`.
pub async fn observe<T>(
    method: &'static str,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = work.await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    record(method, code, started.elapsed().as_secs_f64());
    result
}

/// Records one finished RPC.
pub fn record(method: &'static str, code: Code, seconds: f64) {
    metrics::counter!("orderflow_grpc_requests_total", "method" => method, "code" => code_name(code)).increment(1);
    metrics::histogram!("orderflow_grpc_request_duration_seconds", "method" => method)
        .record(seconds);
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
