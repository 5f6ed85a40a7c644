//! The response for a panicking handler, for tower-http's
//! `CatchPanicLayer`.

use std::any::Any;

use http::Response;

use crate::status::{self};

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
