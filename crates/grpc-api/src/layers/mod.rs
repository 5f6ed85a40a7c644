//! Layers every request passes, one file each: load shedding (separate
//! budgets for unary calls and streams), a metadata size limit, deadlines answered as DEADLINE_EXCEEDED, codes for
//! requests tonic could not decode, the end of health watches at shutdown,
//! and the panic response. (Metrics are recorded by `crate::observe`,
//! outside them all; the order is `crate::stack`'s.)

mod deadline;
mod decode_error;
mod end_watches;
mod load_shed;
mod metadata_limit;
mod panic;

use std::future::Future;
use std::pin::Pin;

use http::Response;
use tonic::Status;

pub use deadline::{DeadlineLayer, parse_grpc_timeout};
pub use decode_error::{DecodeErrorLayer, stream_error};
pub use end_watches::EndWatchesLayer;
pub use load_shed::{Guarded, LoadShedLayer};
pub use metadata_limit::MetadataLimitLayer;
pub use panic::panic_response;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer of a layer that refuses a request itself: `status` as a
/// trailers-only response, without calling the service inside.
pub(crate) fn short_circuit<R, E>(status: Status) -> BoxFuture<Result<Response<R>, E>>
where
    R: Default + Send + 'static,
    E: Send + 'static,
{
    Box::pin(std::future::ready(Ok(status.into_http())))
}
