//! The one table of the RPCs served: each method's path, whether it
//! streams, whether it needs the token, the scope it needs, whether it ever
//! ends by itself.
//! Every layer reads it (metrics labels, auth, load-shedding budgets, the
//! end of endless streams at shutdown); a test checks it against the
//! proto's descriptors, so a method added to the proto without a row fails.

use crate::auth::Scope;

/// One RPC served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc {
    /// `orderflow.v1.OrderService`.
    pub service: &'static str,
    /// `CreateOrder`.
    pub method: &'static str,
    /// The request path, `/orderflow.v1.OrderService/CreateOrder`.
    pub path: &'static str,
    /// Whether its request or response is a stream: it may stay open for
    /// minutes, so it draws from the streams' budget (`LoadShedLayer`).
    pub streaming: bool,
    /// Whether, with a token configured, it needs `authorization: Bearer
    /// <token>` (`AuthLayer`): every RPC that changes state, and
    /// SubscribeEvents, whose answers carry user ids.
    pub guarded: bool,
    /// The scope a principal needs to call it when credentials are
    /// configured (`crate::auth`); `None`: health and reflection, open to
    /// every caller and never rate limited.
    pub scope: Option<Scope>,
    /// A server stream that never ends by itself (a health Watch, a
    /// subscription): ended with UNAVAILABLE at shutdown
    /// (`EndWatchesLayer`), or it would hold the graceful shutdown for its
    /// whole grace period.
    pub endless: bool,
}

macro_rules! rpc {
    ($service:literal, $method:literal, streaming: $streaming:literal, guarded: $guarded:literal, scope: $scope:expr) => {
        rpc!($service, $method, streaming: $streaming, guarded: $guarded, scope: $scope, endless: false)
    };
    ($service:literal, $method:literal, streaming: $streaming:literal, guarded: $guarded:literal, scope: $scope:expr, endless: $endless:literal) => {
        Rpc {
            service: $service,
            method: $method,
            path: concat!("/", $service, "/", $method),
            streaming: $streaming,
            guarded: $guarded,
            scope: $scope,
            endless: $endless,
        }
    };
}

/// Every method served.
pub const RPCS: [Rpc; 18] = [
    rpc!("orderflow.v1.OrderService", "CreateOrder", streaming: false, guarded: true, scope: Some(Scope::OrdersWrite)),
    rpc!("orderflow.v1.OrderService", "GetOrder", streaming: false, guarded: false, scope: Some(Scope::OrdersRead)),
    rpc!("orderflow.v1.OrderService", "ListOrders", streaming: false, guarded: false, scope: Some(Scope::OrdersRead)),
    rpc!("orderflow.v1.OrderService", "UpdateOrderStatus", streaming: false, guarded: true, scope: Some(Scope::OrdersWrite)),
    rpc!("orderflow.v1.CatalogService", "UpsertProduct", streaming: false, guarded: true, scope: Some(Scope::CatalogWrite)),
    rpc!("orderflow.v1.CatalogService", "GetProduct", streaming: false, guarded: false, scope: Some(Scope::CatalogRead)),
    rpc!("orderflow.v1.CatalogService", "GetPrimaryWarehouse", streaming: false, guarded: false, scope: Some(Scope::CatalogRead)),
    rpc!("orderflow.v1.EventService", "PublishEvents", streaming: true, guarded: true, scope: Some(Scope::EventsPublish)),
    rpc!("orderflow.v1.EventService", "PublishEvent", streaming: false, guarded: true, scope: Some(Scope::EventsPublish)),
    rpc!("orderflow.v1.EventService", "GetPipelineStats", streaming: false, guarded: false, scope: Some(Scope::EventsRead)),
    rpc!("orderflow.v1.EventService", "PublishEventBatch", streaming: false, guarded: true, scope: Some(Scope::EventsPublish)),
    rpc!("orderflow.v1.EventService", "StreamEventBatches", streaming: true, guarded: true, scope: Some(Scope::EventsPublish)),
    rpc!("orderflow.v1.EventService", "SubscribeEvents", streaming: true, guarded: true, scope: Some(Scope::EventsRead), endless: true),
    rpc!("grpc.health.v1.Health", "Check", streaming: false, guarded: false, scope: None),
    rpc!("grpc.health.v1.Health", "Watch", streaming: true, guarded: false, scope: None, endless: true),
    rpc!("grpc.health.v1.Health", "List", streaming: false, guarded: false, scope: None),
    rpc!("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", streaming: true, guarded: false, scope: None),
    rpc!("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", streaming: true, guarded: false, scope: None),
];

/// The index in [`RPCS`] of the RPC at `path`.
pub fn index(path: &str) -> Option<usize> {
    RPCS.iter().position(|rpc| rpc.path == path)
}

/// The RPC at `path`, if it is served.
pub fn find(path: &str) -> Option<&'static Rpc> {
    RPCS.iter().find(|rpc| rpc.path == path)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{RPCS, find};

    /// Every method of orderflow's proto has its row, with the streaming
    /// the descriptor says, and no row names a method the proto lacks.
    #[test]
    fn the_table_matches_the_proto() {
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut ours = 0;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let path = format!("/{name}/{}", method.name());
                    let rpc = find(&path).unwrap_or_else(|| panic!("{path} has no row in RPCS"));
                    let streaming = method.client_streaming() || method.server_streaming();
                    assert_eq!(rpc.streaming, streaming, "{path}: streaming");
                    ours += 1;
                }
            }
        }
        let orderflow = RPCS
            .iter()
            .filter(|r| r.service.starts_with("orderflow."))
            .count();
        assert_eq!(ours, orderflow, "a row names a method the proto lacks");
    }

    /// Every orderflow RPC needs a scope, the standard services none; an
    /// RPC the shared token guards changes state or reads user data
    /// (SubscribeEvents), and every RPC whose scope changes state is
    /// guarded, so the two modes of auth agree on what a write is.
    #[test]
    fn scopes_cover_every_rpc_and_agree_with_the_guarded_column() {
        for rpc in &RPCS {
            let ours = rpc.service.starts_with("orderflow.");
            assert_eq!(rpc.scope.is_some(), ours, "{}", rpc.path);
            if let Some(scope) = rpc.scope {
                if scope.mutates() {
                    assert!(rpc.guarded, "{} writes but is not guarded", rpc.path);
                } else {
                    assert_eq!(rpc.guarded, rpc.method == "SubscribeEvents", "{}", rpc.path);
                }
            }
        }
    }
}
