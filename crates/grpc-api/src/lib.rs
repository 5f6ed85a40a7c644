//! orderflow's gRPC surface: the generated `orderflow.v1` types, the three
//! services, the one mapping from domain and storage errors to gRPC
//! statuses, the servers' codec, and the layers every request passes
//! (metrics, load shedding, limits, panic catching, auth, deadlines). The
//! `server` crate wires it; this crate knows nothing of configuration files
//! or process lifetime.

/// `orderflow.v1`: the messages, clients and descriptor set of
/// `orderflow-proto`, and the servers, generated here (see `build.rs`).
pub mod proto {
    pub use orderflow_proto::proto::*;

    #[allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
    mod servers {
        tonic::include_proto!("orderflow.v1");
    }
    pub use servers::*;
}

pub mod audit;
pub mod auth;
mod catalog;
mod codec;
pub mod convert;
mod encoded;
mod events;
mod layers;
mod observe;
mod orders;
pub mod rpcs;
mod stack;
pub mod status;
mod stored;
mod subscribe;
pub mod wire;

pub use auth::AuthLayer;
pub use catalog::CatalogApi;
pub use encoded::{Encoded, EncodedOrder, EncodedPage};
pub use events::EventApi;
pub use layers::{
    DeadlineLayer, DecodeErrorLayer, EndWatchesLayer, Guarded, LoadShedLayer, MetadataLimitLayer,
    panic_response, parse_grpc_timeout,
};
pub use observe::{MetricsLayer, current_rpc, rpc_labels};
pub use orders::OrderApi;
pub use rpcs::{RPCS, Rpc};
pub use stack::{Layers, PanicHandler, StackConfig, layers};

/// Arms the `fail` crate's failpoints from the `FAILPOINTS` environment
/// variable when built with the `failpoints` feature (tests only); keep the
/// returned guard alive while serving. Without the feature: nothing.
pub fn failpoints_from_env() -> Option<fail::FailScenario<'static>> {
    #[cfg(feature = "failpoints")]
    {
        Some(fail::FailScenario::setup())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        None
    }
}
