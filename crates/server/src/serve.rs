//! Serving: connect (with retries), build the cache, the engine and the
//! services, serve until SIGTERM/SIGINT, then shut down in order: health
//! NOT_SERVING, stop accepting, let in-flight RPCs finish (bounded by the
//! grace period), drain the pipeline, return (telemetry flushes in `main`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use grpc_api::proto::catalog_service_server::CatalogServiceServer;
use grpc_api::proto::event_service_server::EventServiceServer;
use grpc_api::proto::order_service_server::OrderServiceServer;
use grpc_api::{CatalogApi, EventApi, OrderApi, StackConfig};
use storage::{
    Backend, CacheConfig, CachedOrders, Database, ListenerState, StorageError, StoreConfig,
};
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use transform_engine::{Engine, EngineConfig, LogConfig, OverflowPolicy, PipelineSpec};

use crate::config::{EventLogKind, Settings};
use crate::connections::{self, ActivityLayer, Limits};
use crate::nats_log::{NatsLog, NatsSettings};
use crate::sinks::{DatabaseLog, StoreSink};

/// Health names that follow the dependencies (database through the RPCs'
/// pool, pipeline workers): the overall `""`, `readiness` (for readiness
/// probes) and each service.
const SERVICES: [&str; 5] = [
    "",
    "readiness",
    "orderflow.v1.OrderService",
    "orderflow.v1.CatalogService",
    "orderflow.v1.EventService",
];

/// The health name for liveness probes: SERVING while the process works
/// (its pipeline workers alive), whether or not the database answers, so a
/// database outage does not get every replica restarted.
const LIVENESS: &str = "liveness";

/// The health name for the order cache's change feed: SERVING while
/// other replicas' writes reach this cache (PostgreSQL `LISTEN` up; always
/// on SQLite, which has one replica). While it is NOT_SERVING reads bypass
/// the cache, so the replica stays correct and ready, only slower.
const CACHE_COHERENCE: &str = "order-cache";

/// The database settings these flags describe.
pub fn store_config(settings: &Settings) -> StoreConfig {
    let mut config =
        StoreConfig::new(settings.database_url.clone()).with_budget(*settings.db_timeout);
    if let Some(size) = settings.db_pool_size {
        config.max_connections = size;
    }
    config
}

/// How start-up opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create a SQLite file that is not there (serving, `migrate`, import).
    CreateIfMissing,
    /// Read only, no migrations (`events export`): the database must
    /// exist, and may be a read-only file or a hot standby.
    ReadOnly,
}

/// Connects (and but for [`Open::ReadOnly`] migrates), retrying an unreachable database with backoff for
/// up to `startup_timeout`. A configuration that can never work (see
/// [`StorageError::Misconfigured`]) fails at once, naming the setting.
pub async fn connect(settings: &Settings, open: Open) -> anyhow::Result<Database> {
    let config = store_config(settings);
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = match open {
            Open::CreateIfMissing => Database::connect(config.clone()).await,
            Open::ReadOnly => Database::connect_read_only(config.clone()).await,
        };
        match attempt {
            Ok(db) => return Ok(db),
            Err(StorageError::Unavailable(reason))
                if started.elapsed() + delay < *settings.startup_timeout =>
            {
                tracing::warn!(%reason, retry_in = ?delay, "database unreachable at start-up; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(StorageError::Misconfigured(reason)) => {
                anyhow::bail!(
                    "--database-url / DATABASE_URL ({}): {reason}",
                    redact_password(&settings.database_url)
                );
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot open the database (gave up after {:?})",
                        started.elapsed()
                    )
                });
            }
        }
    }
}

/// `url` with any password replaced by `***`, fit for an error message.
fn redact_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Serves until a shutdown signal; returns when shutdown is complete.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let pipeline = match &settings.pipeline {
        Some(path) => PipelineSpec::from_file(path)?,
        None => PipelineSpec::default(),
    };
    // Read before anything starts: a bad file fails at once, naming it.
    let tls = crate::tls::server(&settings, *settings.handshake_timeout)?;
    crate::telemetry::metrics(settings.metrics_listen)?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let db = connect(&settings, Open::CreateIfMissing).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
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
    let mut event_log_up: Option<Arc<NatsLog>> = None;
    let log = match &settings.event_log {
        EventLogKind::Database => engine
            .attach_log(
                Arc::new(DatabaseLog {
                    db: db.clone(),
                    output: settings.event_sink,
                }),
                log_config,
            )
            .await
            .context("cannot open the event log")?,
        EventLogKind::Nats(url) => {
            let nats = Arc::new(
                NatsLog::open(
                    &NatsSettings {
                        url: url.clone(),
                        stream: settings.nats_stream.clone(),
                        max_batches: settings.nats_max_batches,
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
            event_log_up = Some(Arc::clone(&nats));
            engine
                .attach_log(nats, log_config)
                .await
                .context("cannot open the JetStream event log")?
        }
    };
    // A unary acknowledged publish waits for room as long as the policy
    // lets a queued publish wait.
    let log_wait = match settings.overflow_policy {
        OverflowPolicy::Block => None,
        OverflowPolicy::BlockTimeout(wait) => Some(wait),
        OverflowPolicy::DropNewest | OverflowPolicy::DeadLetter => Some(Duration::ZERO),
    };
    let events = EventApi::new(engine.ingest())
        .with_log(log, log_wait)
        .with_stream_idle_timeout(*settings.stream_idle_timeout);
    let engine = Arc::new(engine);

    let forgetting = tokio::spawn(forget_old_write_ids(db.clone()));
    let monitor = tokio::spawn(monitor(
        db.clone(),
        Arc::clone(&engine),
        orders.clone(),
        feed.as_ref().map(|(state, _)| Arc::clone(state)),
        event_log_up,
        health.clone(),
        *settings.health_interval,
    ));

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

    // Cancelled when the server stops accepting: open health watches end.
    let stopping = tokio_util::sync::CancellationToken::new();
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
                auth_token: settings.auth_token.clone(),
            },
            ActivityLayer,
            stopping.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(OrderServiceServer::new(OrderApi::new(orders)).max_decoding_message_size(max))
        .add_service(
            CatalogServiceServer::new(CatalogApi::new(db.clone())).max_decoding_message_size(max),
        )
        .add_service(EventServiceServer::new(events).max_decoding_message_size(max));

    let address = listener.local_addr()?;
    let tls = match (&settings.tls_cert, &settings.tls_client_ca) {
        (None, _) => "off",
        (Some(_), None) => "on",
        (Some(_), Some(_)) => "mutual",
    };
    tracing::info!(%address, metrics = %settings.metrics_listen, backend = ?db.backend(), tls, "serving gRPC");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        max_connections: settings.max_connections,
        handshake_timeout: *settings.handshake_timeout,
        idle_timeout: *settings.idle_connection_timeout,
    };
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        connections::incoming(listener, limits),
        async {
            let _ = stopped.await;
        },
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: NOT_SERVING, finishing in-flight RPCs");
    monitor.abort();
    forgetting.abort();
    if let Some((_, task)) = &feed {
        task.abort();
    }
    for service in SERVICES.into_iter().chain([LIVENESS, CACHE_COHERENCE]) {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    if !settings.shutdown_delay.is_zero() {
        tracing::info!(delay = %settings.shutdown_delay, "NOT_SERVING; still answering until the delay passes");
        tokio::time::sleep(*settings.shutdown_delay).await;
    }
    stopping.cancel();
    let _ = stop.send(());
    let grace = *settings.shutdown_grace;
    let deadline = Instant::now() + grace;
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "the gRPC server failed"),
        Ok(Err(error)) => tracing::error!(%error, "the gRPC server task failed"),
        Err(_) => tracing::warn!(
            ?grace,
            "grace period over; closing the remaining connections"
        ),
    }
    let _ = monitor.await;
    let engine = Arc::into_inner(engine).context("the pipeline is still shared at shutdown")?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    match tokio::time::timeout(left, engine.shutdown()).await {
        Ok(stats) => tracing::info!(?stats, "pipeline drained"),
        Err(_) => tracing::error!("the pipeline did not drain within the grace period"),
    }
    Ok(())
}

/// How long batch write ids are remembered. The engine repeats a write
/// within half a minute (see the engine's retry budget), so an
/// hour is far beyond any repeat.
const WRITE_ID_MEMORY: Duration = Duration::from_secs(3600);

/// Once a minute, forgets write ids older than [`WRITE_ID_MEMORY`] so the
/// `applied_writes` table stays small.
async fn forget_old_write_ids(db: Database) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        match db.forget_applied_writes(WRITE_ID_MEMORY).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!(forgotten, "forgot old batch write ids"),
            Err(error) => {
                tracing::warn!(%error, "could not forget old batch write ids; retrying in a minute")
            }
        }
        // A JetStream message is redelivered within its ack wait (seconds),
        // far inside the hour its applied sequence is remembered.
        if let Err(error) = db.forget_applied_sequences(WRITE_ID_MEMORY).await {
            tracing::warn!(%error, "could not forget old applied stream sequences; retrying in a minute");
        }
    }
}

/// Health and metrics, once per interval: SERVING only while the database
/// answers through the pool the RPCs use and every pipeline worker runs.
async fn monitor<R: storage::OrderRepository>(
    db: Database,
    engine: Arc<Engine>,
    orders: CachedOrders<R>,
    feed: Option<Arc<ListenerState>>,
    event_log: Option<Arc<NatsLog>>,
    health: HealthReporter,
    interval: Duration,
) {
    let mut events_serving = None;
    let mut ticker = tokio::time::interval(interval);
    let mut serving = None;
    let mut alive = true;
    let mut coherent = None;
    loop {
        ticker.tick().await;
        if let Some(feed) = &feed
            && coherent != Some(feed.is_up())
        {
            coherent = Some(feed.is_up());
            let status = if feed.is_up() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(CACHE_COHERENCE, status).await;
        }
        if engine.is_alive() != alive {
            alive = !alive;
            let status = if alive {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(LIVENESS, status).await;
        }
        let database =
            tokio::time::timeout(interval.max(Duration::from_millis(500)), db.ping()).await;
        let database_up = matches!(database, Ok(Ok(())));
        let healthy = database_up && engine.is_alive();
        // Alerting reads these (deploy/prometheus/alerts.yml).
        metrics::gauge!("orderflow_database_up").set(if database_up { 1.0 } else { 0.0 });
        metrics::gauge!("orderflow_serving").set(if healthy { 1.0 } else { 0.0 });
        if serving != Some(healthy) {
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if !healthy {
                tracing::warn!(?database, pipeline_alive = engine.is_alive(), "NOT_SERVING");
            } else if serving.is_some() {
                tracing::info!("SERVING again");
            }
            for service in SERVICES {
                health.set_service_status(service, status).await;
            }
            serving = Some(healthy);
            events_serving = None;
        }
        // With the event log on NATS, the event service also needs NATS.
        if let Some(log) = &event_log {
            let up = healthy && log.is_connected();
            if events_serving != Some(up) {
                if !log.is_connected() {
                    tracing::warn!("NATS unreachable: the event service is NOT_SERVING");
                }
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health
                    .set_service_status("orderflow.v1.EventService", status)
                    .await;
                events_serving = Some(up);
            }
        }
        orders.cache().publish_metrics();
        engine.stats().publish_metrics();
        let (open, idle) = db.pool_connections();
        metrics::gauge!("orderflow_db_pool_connections").set(f64::from(open));
        metrics::gauge!("orderflow_db_pool_idle_connections").set(f64::from(idle));
        metrics::gauge!("orderflow_db_pool_max_connections")
            .set(f64::from(db.config().max_connections));
        let (batches, ids) = db.order_read_batches();
        metrics::counter!("orderflow_db_order_read_batches_total").absolute(batches);
        metrics::counter!("orderflow_db_order_read_ids_total").absolute(ids);
    }
}

/// The span a request runs in, after OpenTelemetry's RPC conventions: a
/// SERVER span named `orderflow.v1.OrderService/GetOrder` with `rpc.system`,
/// `rpc.service`, `rpc.method`, continuing the caller's trace when
/// `traceparent` is present. `MetricsLayer` sets `rpc.grpc.status_code`
/// (and the error status) when the RPC ends; the log formatter
/// (`telemetry::Correlated`) reads the trace and span ids only when a line
/// is written. A request [`Sampling`] leaves out gets no span at all, and
/// so does every request when nothing reads spans (no OpenTelemetry layer
/// installed): its log lines name the RPC all the same
/// (`telemetry::NamingRpc`, from `grpc_api::current_rpc`), and a span would
/// cost each request a subscriber entry, its formatted fields and two
/// filter lookups per poll (docs/benchmarks.md).
fn request_span(request: &http::Request<()>, sampling: Sampling) -> tracing::Span {
    let path = request.uri().path();
    if !sampling.observed || !sampling.traces(path, request.headers()) {
        return tracing::Span::none();
    }
    let (service, method) = grpc_api::rpc_labels(path);
    // A known method's path is `/service/method`, the span name the
    // conventions ask for.
    let name = match service {
        "unknown" => "unknown/unknown",
        _ => path.trim_start_matches('/'),
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    if span.is_disabled() {
        return span;
    }
    if request.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
    }
    span
}

/// Which requests get a span (`--trace-health-checks`,
/// `--trace-sample-ratio`), decided before any span exists, so a request
/// left out costs nothing for tracing.
#[derive(Debug, Clone, Copy)]
struct Sampling {
    /// Trace health checks (probes every second would drown the traces).
    health: bool,
    /// The share of requests with no sampling decision from the caller.
    ratio: f64,
    /// Whether the OpenTelemetry layer is installed
    /// (`Settings::spans_observed`); without it requests get no span.
    observed: bool,
}

impl Sampling {
    fn traces(self, path: &str, headers: &http::HeaderMap) -> bool {
        if !self.health && path.starts_with("/grpc.health.v1.Health/") {
            return false;
        }
        // W3C trace context: `00-<trace id>-<parent id>-<flags>`, bit 0 of
        // the flags meaning sampled. A malformed header decides nothing.
        let flags = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit('-').next())
            .filter(|flags| flags.len() == 2)
            .and_then(|flags| u8::from_str_radix(flags, 16).ok());
        match flags {
            Some(flags) => flags & 1 == 1,
            None => self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio),
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::Sampling;

    fn with_traceparent(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        headers
    }

    fn sampling(health: bool, ratio: f64) -> Sampling {
        Sampling {
            health,
            ratio,
            observed: true,
        }
    }

    const PATH: &str = "/orderflow.v1.OrderService/GetOrder";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";

    #[test]
    fn the_callers_flag_decides_whatever_the_ratio() {
        for ratio in [0.0, 0.5, 1.0] {
            let decide = sampling(false, ratio);
            let sampled = with_traceparent(&format!("{PARENT}-01"));
            let unsampled = with_traceparent(&format!("{PARENT}-00"));
            assert!(decide.traces(PATH, &sampled), "ratio {ratio}");
            assert!(!decide.traces(PATH, &unsampled), "ratio {ratio}");
        }
    }

    #[test]
    fn without_a_usable_traceparent_the_ratio_decides() {
        let none = http::HeaderMap::new();
        for headers in [
            none,
            with_traceparent("garbage"),
            with_traceparent(&format!("{PARENT}-zz")),
        ] {
            let all = sampling(false, 1.0);
            let nothing = sampling(false, 0.0);
            assert!(all.traces(PATH, &headers), "{headers:?}");
            assert!(!nothing.traces(PATH, &headers), "{headers:?}");
        }
        // A ratio between draws: over 2,000 requests, 0.5 traces some and
        // leaves some out.
        let half = sampling(false, 0.5);
        let traced = (0..2_000)
            .filter(|_| half.traces(PATH, &http::HeaderMap::new()))
            .count();
        assert!((600..=1_400).contains(&traced), "{traced} of 2000");
    }

    /// The field names of the span `request_span` opens for GetOrder.
    fn span_fields(observed: bool) -> Vec<&'static str> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;

        struct Fields(Arc<Mutex<Vec<&'static str>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
            fn on_new_span(
                &self,
                attrs: &tracing::span::Attributes<'_>,
                _: &tracing::span::Id,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let names = attrs.metadata().fields().iter().map(|f| f.name());
                self.0.lock().unwrap().extend(names);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Fields(Arc::clone(&seen)));
        let request = http::Request::builder().uri(PATH).body(()).unwrap();
        let sampling = Sampling {
            observed,
            ..sampling(false, 1.0)
        };
        tracing::subscriber::with_default(subscriber, || {
            drop(super::request_span(&request, sampling));
        });
        seen.lock().unwrap().clone()
    }

    #[test]
    fn requests_get_a_span_only_when_something_reads_it() {
        assert_eq!(span_fields(false), Vec::<&str>::new());
        let observed = span_fields(true);
        for field in [
            "otel.name",
            "otel.kind",
            "rpc.system",
            "rpc.service",
            "rpc.method",
        ] {
            assert!(
                observed.contains(&field),
                "{field} missing from {observed:?}"
            );
        }
    }

    #[test]
    fn health_checks_only_when_asked() {
        let sampled = with_traceparent(&format!("{PARENT}-01"));
        let path = "/grpc.health.v1.Health/Check";
        let off = sampling(false, 1.0);
        let on = sampling(true, 1.0);
        assert!(!off.traces(path, &sampled));
        assert!(on.traces(path, &sampled));
    }
}
