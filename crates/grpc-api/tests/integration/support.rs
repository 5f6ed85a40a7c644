//! [`InProcess`]: the three services over a test database, behind the
//! server's own layer stack (`grpc_api::layers`, the one the binary runs,
//! without its connection tracking) plus health, on a loopback port inside
//! the test process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grpc_api::proto::catalog_service_client::CatalogServiceClient;
use grpc_api::proto::catalog_service_server::CatalogServiceServer;
use grpc_api::proto::event_service_client::EventServiceClient;
use grpc_api::proto::event_service_server::EventServiceServer;
use grpc_api::proto::order_service_client::OrderServiceClient;
use grpc_api::proto::order_service_server::OrderServiceServer;
use grpc_api::{CatalogApi, EventApi, MetadataLimitLayer, OrderApi, StackConfig};
use storage::{CacheConfig, CachedOrders, Database, OrderRepository};
use test_support::TestDb;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use transform_engine::{Engine, EngineConfig, LogConfig, MemoryLog, MemorySink, OverflowPolicy};

/// A served stack; stops serving when dropped.
pub struct InProcess {
    address: SocketAddr,
    /// Held for its life: dropping an engine stops its workers.
    _engine: Engine,
    server: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Serves over `db` with the settings `env` names, spelled as the
    /// binary's environment (`ORDERFLOW_AUTH_TOKEN`,
    /// `ORDERFLOW_MAX_MESSAGE_BYTES`, `ORDERFLOW_MAX_CONCURRENT_REQUESTS`,
    /// `ORDERFLOW_OVERFLOW_POLICY`), so a test reads as the end-to-end one did.
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let orders = CachedOrders::new(Database::open(db.config()), CacheConfig::default());
        Self::start_with(db, orders, env).await
    }

    /// As [`Self::start`], with `orders` behind the order service.
    pub async fn start_with<R: OrderRepository>(
        db: &TestDb,
        orders: R,
        env: &[(&str, &str)],
    ) -> Self {
        let setting = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let auth = setting("ORDERFLOW_AUTH_TOKEN");
        let max_message =
            setting("ORDERFLOW_MAX_MESSAGE_BYTES").map_or(4 << 20, |v| v.parse().unwrap());
        let max_concurrent =
            setting("ORDERFLOW_MAX_CONCURRENT_REQUESTS").map_or(1024, |v| v.parse().unwrap());
        let max_streams = setting("ORDERFLOW_MAX_OPEN_STREAMS").map_or(256, |v| v.parse().unwrap());
        let stream_idle = setting("ORDERFLOW_STREAM_IDLE_TIMEOUT")
            .map_or(EventApi::DEFAULT_STREAM_IDLE_TIMEOUT, |v| {
                *v.parse::<humantime::Duration>().unwrap()
            });
        let policy: OverflowPolicy = setting("ORDERFLOW_OVERFLOW_POLICY")
            .map_or_else(OverflowPolicy::default, |v| v.parse().unwrap());

        let database = Database::open(db.config());
        let sink = Arc::new(MemorySink::new());
        // In-memory sinks: what is stored is the engine's and the server
        // suite's business; here only what the client hears counts.
        let mut engine = Engine::start(
            EngineConfig {
                policy,
                ..EngineConfig::default()
            },
            Arc::clone(&sink),
            sink,
        );
        let log = engine
            .attach_log(Arc::new(MemoryLog::new()), LogConfig::default())
            .await
            .unwrap();
        let (_, health) = tonic_health::server::health_reporter();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stack = StackConfig {
            max_metadata_bytes: setting("ORDERFLOW_MAX_METADATA_BYTES")
                .map_or(MetadataLimitLayer::DEFAULT_MAX_BYTES, |v| {
                    v.parse().unwrap()
                }),
            max_concurrent_requests: max_concurrent,
            max_open_streams: max_streams,
            authority: grpc_api::auth::Authority::new(
                grpc_api::auth::Credentials::build(
                    &grpc_api::auth::Sources {
                        token: auth,
                        ..Default::default()
                    },
                    &grpc_api::auth::Credentials::default(),
                )
                .unwrap(),
            ),
        };
        let router = tonic::transport::Server::builder()
            .layer(grpc_api::layers(
                &stack,
                tower::layer::util::Identity::new(),
                tokio_util::sync::CancellationToken::new(),
            ))
            .add_service(health)
            .add_service(
                OrderServiceServer::new(OrderApi::new(orders))
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                CatalogServiceServer::new(CatalogApi::new(database.clone()))
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                EventServiceServer::new(
                    EventApi::new(engine.ingest(), database)
                        .with_log(log, Some(Duration::ZERO))
                        .with_stream_idle_timeout(stream_idle),
                )
                .max_decoding_message_size(max_message),
            );
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        Self {
            address,
            _engine: engine,
            server,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel().await)
    }

    pub async fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel().await)
    }

    pub async fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel().await)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.server.abort();
    }
}
