//! The monitor: health and metrics, once per interval.

use std::sync::Arc;
use std::time::Duration;

use storage::{CachedOrders, Database, ListenerState};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use transform_engine::Engine;

use crate::nats_log::NatsLog;
use crate::watchdog::Stalled;

/// Health names that follow the dependencies (database through the RPCs'
/// pool, pipeline workers): the overall `""`, `readiness` (for readiness
/// probes) and each service.
pub(super) const SERVICES: [&str; 5] = [
    "",
    "readiness",
    "orderflow.v1.OrderService",
    "orderflow.v1.CatalogService",
    "orderflow.v1.EventService",
];

/// The health name for liveness probes: SERVING while the process works
/// (its pipeline workers alive, its runtime not stalled), whether or not the
/// database answers, so a database outage does not get every replica
/// restarted.
pub(super) const LIVENESS: &str = "liveness";

/// The health name for the order cache's change feed: SERVING while
/// other replicas' writes reach this cache (PostgreSQL `LISTEN` up; always
/// on SQLite, which has one replica). While it is NOT_SERVING reads bypass
/// the cache, so the replica stays correct and ready, only slower.
pub(super) const CACHE_COHERENCE: &str = "order-cache";

/// What the monitor watches.
pub(super) struct Watched<R> {
    pub(super) db: Database,
    pub(super) engine: Arc<Engine>,
    pub(super) stalled: Stalled,
    pub(super) orders: CachedOrders<R>,
    pub(super) feed: Option<Arc<ListenerState>>,
    pub(super) event_log: Option<Arc<NatsLog>>,
}

/// Health and metrics, once per interval: SERVING only while the database
/// answers through the pool the RPCs use and every pipeline worker runs.
pub(super) async fn monitor<R: storage::OrderRepository>(
    watched: Watched<R>,
    health: HealthReporter,
    interval: Duration,
) {
    let Watched {
        db,
        engine,
        stalled,
        orders,
        feed,
        event_log,
    } = watched;
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
        // The watchdog sets NOT_SERVING itself as a stall begins; this puts
        // SERVING back once it has cleared.
        let live = engine.is_alive() && !stalled.is_set();
        if live != alive {
            alive = live;
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
