//! Wiring: the graph built from the settings. Health names, the order cache
//! (and its change feed on PostgreSQL), the engine and its event log, the
//! services, and the router with its layer stack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use grpc_api::proto::catalog_service_server::CatalogServiceServer;
use grpc_api::proto::event_service_server::EventServiceServer;
use grpc_api::proto::order_service_server::OrderServiceServer;
use grpc_api::{CatalogApi, EventApi, OrderApi, StackConfig};
use storage::{Backend, CacheConfig, CachedOrders, Claim, Database, ListenerState, StoreConfig};
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use transform_engine::{Engine, EngineConfig, LogConfig, OverflowPolicy, PipelineSpec};

use super::monitor::{CACHE_COHERENCE, LIVENESS, SERVICES};
use super::spans::{Sampling, request_span};
use crate::config::{EventLogKind, Settings};
use crate::connections::{self, ActivityLayer, Limits};
use crate::nats_log::{NatsLog, NatsSettings};
use crate::sinks::{DatabaseLog, StoreSink};

/// The graph, before it serves.
pub(super) struct Wired {
    pub(super) health: HealthReporter,
    pub(super) orders: CachedOrders<Database>,
    /// The change feed's state and task (PostgreSQL only).
    pub(super) feed: Option<(Arc<ListenerState>, JoinHandle<()>)>,
    pub(super) engine: Arc<Engine>,
    /// The JetStream log, whose connection the monitor watches.
    pub(super) event_log: Option<Arc<NatsLog>>,
    /// What the router serves.
    pub(super) services: Services,
}

/// The services the router serves (the catalog's is built over the
/// database, health's by the caller, in [`spawn_server`]).
pub(super) struct Services {
    orders: CachedOrders<Database>,
    events: EventApi,
}

/// Builds the graph over `db`, running `pipeline`.
pub(super) async fn wire(
    settings: &Settings,
    db: &Database,
    pipeline: PipelineSpec,
    health: HealthReporter,
) -> anyhow::Result<Wired> {
    for service in SERVICES {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let orders = CachedOrders::new(
        db.clone(),
        CacheConfig {
            capacity: settings.cache_capacity,
            ttl: *settings.cache_ttl,
        },
    );
    // On PostgreSQL other replicas may write: their changes reach this
    // cache through the change feed. SQLite is one replica's.
    let feed = (db.backend() == Backend::Postgres).then(|| {
        let state = Arc::new(ListenerState::default());
        let config = match &settings.cache_feed_url {
            Some(url) => StoreConfig::new(url.clone()),
            None => db.config().clone(),
        };
        let task = tokio::spawn(storage::listen_for_order_changes(
            config,
            orders.clone(),
            Arc::clone(&state),
            db.stored_signal().clone(),
        ));
        (state, task)
    });
    health
        .set_service_status(
            CACHE_COHERENCE,
            if feed.is_some() {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            },
        )
        .await;
    let sink = Arc::new(StoreSink {
        db: db.clone(),
        output: settings.event_sink,
    });
    let mut engine = Engine::start(
        EngineConfig {
            workers: settings.workers,
            queue_capacity: settings.queue_capacity,
            policy: settings.overflow_policy,
            pipeline,
            ..EngineConfig::default()
        },
        Arc::clone(&sink),
        sink,
    );
    let log_config = LogConfig {
        max_backlog: settings.log_max_backlog,
        ..LogConfig::default()
    };
    let mut event_log = None;
    let mut elsewhere = None;
    let log = match &settings.event_log {
        EventLogKind::Database => {
            // One process at a time consumes the database log (storage's
            // `lease` module says why). This one waits its turn; if another
            // process still holds it, this one takes no events, and if
            // another ever takes the lease from it, it stops.
            match db
                .claim_log_lease(*settings.event_log_lease_wait)
                .await
                .context("ORDERFLOW_EVENT_LOG=database: cannot take the event log's lease")?
            {
                Claim::Held(mut lease) => {
                    tokio::spawn(async move {
                        let holder = lease.lost().await;
                        tracing::error!(
                            %holder,
                            "another process took the database event log's consumer lease; exiting, so that one process consumes the log"
                        );
                        std::process::exit(1);
                    });
                    Some(
                        engine
                            .attach_log(
                                Arc::new(DatabaseLog {
                                    db: db.clone(),
                                    output: settings.event_sink,
                                }),
                                log_config,
                            )
                            .await
                            .context("cannot open the event log")?,
                    )
                }
                Claim::Elsewhere(holder) => {
                    tracing::warn!(
                        %holder,
                        waited = ?*settings.event_log_lease_wait,
                        "another process consumes the database event log; this one takes no events until restarted (several replicas that take events need ORDERFLOW_EVENT_LOG=nats://...)"
                    );
                    elsewhere = Some(format!(
                        "this replica takes no events: another process consumes the database \
                         event log ({holder}). Send events to that process; replicas that share \
                         the work need ORDERFLOW_EVENT_LOG=nats://..."
                    ));
                    None
                }
            }
        }
        EventLogKind::Nats(url) => {
            let nats = Arc::new(
                NatsLog::open(
                    &NatsSettings {
                        url: url.clone(),
                        stream: settings.nats_stream.clone(),
                        max_batches: settings.nats_max_batches,
                        max_bytes: settings.nats_max_bytes,
                        duplicate_window: *settings.nats_duplicate_window,
                        ack_wait: *settings.nats_ack_wait,
                        output: settings.event_sink,
                        format: settings.nats_log_format,
                    },
                    db.clone(),
                )
                .await
                .with_context(|| format!("--event-log / ORDERFLOW_EVENT_LOG ({url})"))?,
            );
            event_log = Some(Arc::clone(&nats));
            Some(
                engine
                    .attach_log(nats, log_config)
                    .await
                    .context("cannot open the JetStream event log")?,
            )
        }
    };
    // A unary acknowledged publish waits for room as long as the policy
    // lets a queued publish wait.
    let log_wait = match settings.overflow_policy {
        OverflowPolicy::Block => None,
        OverflowPolicy::BlockTimeout(wait) => Some(wait),
        OverflowPolicy::DropNewest | OverflowPolicy::DeadLetter => Some(Duration::ZERO),
    };
    let mut events = EventApi::new(engine.ingest(), db.clone())
        .with_stream_idle_timeout(*settings.stream_idle_timeout);
    events = match (log, elsewhere) {
        (Some(log), _) => events.with_log(log, log_wait),
        (None, Some(why)) => events.elsewhere(why),
        (None, None) => events,
    };
    Ok(Wired {
        health,
        orders: orders.clone(),
        feed,
        engine: Arc::new(engine),
        event_log,
        services: Services { orders, events },
    })
}

/// Serves the services behind the layer stack on `incoming` until
/// `stopped`; open health watches end when `stopping` is cancelled.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces start-up and wiring made, each used once here"
)]
pub(super) fn spawn_server(
    settings: &Settings,
    tls: Option<tonic::transport::ServerTlsConfig>,
    authority: std::sync::Arc<grpc_api::auth::Authority>,
    db: &Database,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    services: Services,
    stopping: tokio_util::sync::CancellationToken,
    listener: tokio::net::TcpListener,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc_api::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build reflection (v1)")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc_api::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build reflection (v1alpha)")?;
    let max = settings.max_message_bytes;
    // HTTP/2 refuses metadata over 16 times the setting outright (HTTP 431,
    // which clients see as UNKNOWN); between the two, MetadataLimitLayer
    // answers RESOURCE_EXHAUSTED.
    let header_list_limit =
        u32::try_from(settings.max_metadata_bytes.saturating_mul(16)).unwrap_or(u32::MAX);
    let sampling = Sampling {
        health: settings.trace_health_checks,
        ratio: settings.trace_sample_ratio,
        observed: settings.spans_observed(),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("--tls-cert / --tls-key: not a usable certificate and key")?;
    }
    let router = builder
        .max_concurrent_streams(settings.max_streams_per_connection)
        .http2_keepalive_interval(Some(*settings.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(*settings.http2_keepalive_timeout))
        .http2_max_header_list_size(header_list_limit)
        .trace_fn(move |request| request_span(request, sampling))
        .layer(grpc_api::layers(
            &StackConfig {
                max_metadata_bytes: settings.max_metadata_bytes,
                max_concurrent_requests: settings.max_concurrent_requests,
                max_open_streams: settings.max_open_streams,
                authority,
            },
            ActivityLayer,
            stopping,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            OrderServiceServer::new(OrderApi::new(services.orders)).max_decoding_message_size(max),
        )
        .add_service(
            CatalogServiceServer::new(CatalogApi::new(db.clone())).max_decoding_message_size(max),
        )
        .add_service(EventServiceServer::new(services.events).max_decoding_message_size(max));
    let limits = Limits {
        max_connections: settings.max_connections,
        handshake_timeout: *settings.handshake_timeout,
        idle_timeout: *settings.idle_connection_timeout,
    };
    Ok(tokio::spawn(router.serve_with_incoming_shutdown(
        connections::incoming(listener, limits),
        async {
            let _ = stopped.await;
        },
    )))
}
