//! The layer stack every orderflow gRPC server runs, assembled in one
//! place and in its one order, so the binary and the in-process tests
//! cannot drift apart. Outermost first:
//!
//! 1. [`MetricsLayer`]: every RPC counted and timed, whatever answers it
//!    (and each mutation audited, when principals are configured);
//! 2. the caller's connection layer (the binary's idle-connection tracking;
//!    `Identity` in process);
//! 3. [`MetadataLimitLayer`]: oversized metadata answered
//!    RESOURCE_EXHAUSTED before anything reads it;
//! 4. [`LoadShedLayer`]: past the concurrency budget, OVERLOADED at once;
//! 5. panic catching: a handler that panics answers INTERNAL
//!    ([`crate::panic_response`]) and the connection lives on;
//! 6. [`AuthLayer`]: each call's credential, scope and rate;
//! 7. [`DeadlineLayer`]: `grpc-timeout` enforced in the server;
//! 8. [`DecodeErrorLayer`]: undecodable requests are INVALID_ARGUMENT;
//! 9. [`EndWatchesLayer`]: open health watches end at shutdown.

use std::any::Any;
use std::sync::Arc;

use http::Response;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{Authority, Credentials};
use crate::{
    AuthLayer, DeadlineLayer, DecodeErrorLayer, EndWatchesLayer, LoadShedLayer, MetadataLimitLayer,
    MetricsLayer,
};

/// What the stack's layers are set to.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Most metadata bytes a request may carry.
    pub max_metadata_bytes: usize,
    /// Most unary requests in flight.
    pub max_concurrent_requests: usize,
    /// Most streams open.
    pub max_open_streams: usize,
    /// Who may call what (`crate::auth`).
    pub authority: Arc<Authority>,
}

impl Default for StackConfig {
    /// No limits worth the name, and no auth.
    fn default() -> Self {
        Self {
            max_metadata_bytes: 0,
            max_concurrent_requests: 0,
            max_open_streams: 0,
            authority: Authority::new(Credentials::default()),
        }
    }
}

/// The panic handler's type.
pub type PanicHandler = fn(Box<dyn Any + Send + 'static>) -> Response<tonic::body::Body>;

/// The stack, as one layer for `tonic::transport::Server::layer`; `C` is
/// the caller's connection layer.
pub type Layers<C> = Stack<
    EndWatchesLayer,
    Stack<
        DecodeErrorLayer,
        Stack<
            DeadlineLayer,
            Stack<
                AuthLayer,
                Stack<
                    CatchPanicLayer<PanicHandler>,
                    Stack<
                        LoadShedLayer,
                        Stack<MetadataLimitLayer, Stack<C, Stack<MetricsLayer, Identity>>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// The stack over `config`, with `connection` second from the outside and
/// health watches ended when `stopping` is cancelled.
pub fn layers<C>(
    config: &StackConfig,
    connection: C,
    stopping: tokio_util::sync::CancellationToken,
) -> Layers<C> {
    let panic: PanicHandler = crate::panic_response;
    ServiceBuilder::new()
        .layer(MetricsLayer::new().auditing(config.authority.current().names_principals()))
        .layer(connection)
        .layer(MetadataLimitLayer::new(config.max_metadata_bytes))
        .layer(LoadShedLayer::new(
            config.max_concurrent_requests,
            config.max_open_streams,
        ))
        .layer(CatchPanicLayer::custom(panic))
        .layer(AuthLayer::new(Arc::clone(&config.authority)))
        .layer(DeadlineLayer)
        .layer(DecodeErrorLayer)
        .layer(EndWatchesLayer::new(stopping))
        .into_inner()
}
