//! The change feed: other replicas' order writes, applied to this replica's
//! cache, and their stored events, waking this replica's subscribers.
//!
//! Every committed order update announces itself with `NOTIFY` on
//! [`ORDER_CHANGES_CHANNEL`] inside its transaction (`db::Announce`), so the
//! notification exists only if the write committed, in commit order. Each
//! replica holds one connection that `LISTEN`s and drops older cached
//! copies as notifications arrive ([`OrderCache::changed`]).
//!
//! The cache is trusted only under a lease the feed renews: every
//! [`HEARTBEAT`] a query round trip on the listening connection proves that
//! every notification committed before it was sent has arrived (PostgreSQL
//! delivers them before the query's answer), and extends the lease to
//! [`LEASE`] from when the heartbeat was sent. A feed that breaks, or goes
//! silent (a black-holed connection), stops renewing: within [`LEASE`] every
//! read goes to the database. A new connection empties the cache before
//! trusting it, since changes may have been missed in between. So a write
//! acknowledged at time T is visible on every replica by T plus the
//! notification delay when the feed is up, and by T + [`LEASE`] at worst.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use domain::OrderId;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::cache::{CachedOrders, OrderCache};
use crate::connect::Postgres;
use crate::db::ORDER_CHANGES_CHANNEL;
use crate::feed::{EVENTS_STORED_CHANNEL, StoredSignal};
use crate::{OrderRepository, StorageError, StoreConfig};

/// How often the listening connection proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long the cache is trusted after a heartbeat was sent; the worst-case
/// staleness when the feed fails silently.
pub const LEASE: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether the feed is up, for health and metrics.
#[derive(Debug, Default)]
pub struct ListenerState {
    up: AtomicBool,
}

impl ListenerState {
    /// Whether the listening connection is subscribed and renewing the
    /// lease.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        metrics::gauge!("orderflow_cache_listener_up").set(if up { 1.0 } else { 0.0 });
    }
}

/// Keeps `orders`' cache coherent with the other replicas writing to the
/// PostgreSQL database `config` names, for as long as the returned future
/// runs (spawn it; abort it at shutdown). From the call on, the cache is
/// trusted only under the feed's lease (see the module documentation).
///
/// The same connection listens on [`EVENTS_STORED_CHANNEL`] and ticks
/// `stored` for each commit (any replica's) that stored events, and once
/// each time it (re)subscribes, for what it may have missed meanwhile.
pub async fn listen_for_order_changes<R>(
    config: StoreConfig,
    orders: CachedOrders<R>,
    state: Arc<ListenerState>,
    stored: StoredSignal,
) where
    R: OrderRepository + Send + Sync + 'static,
{
    let cache = orders.cache();
    cache.distrust();
    state.set(false);
    let postgres = Postgres::new(&config.url);
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let ended = session(&postgres, cache, &state, &stored).await;
        state.set(false);
        cache.distrust();
        match ended {
            Err(error) => {
                tracing::warn!(%error, "order change feed down; reads bypass the cache until it is back")
            }
            Ok(()) => {
                tracing::warn!("order change feed closed; reads bypass the cache until it is back")
            }
        }
        // A feed that held for a while starts over quickly.
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection, until it fails.
async fn session(
    postgres: &Postgres,
    cache: &OrderCache,
    state: &ListenerState,
    stored: &StoredSignal,
) -> Result<(), StorageError> {
    let (client, mut connection) = tokio::time::timeout(LEASE * 5, postgres.connect_raw())
        .await
        .map_err(|_| StorageError::Unavailable("no connection within 5 s".to_owned()))??;
    let (sender, mut notifications) = mpsc::unbounded_channel();
    // Drives the connection: notifications go to the channel in the order
    // they arrive, before the answer to any later query.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if sender.send(notification).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "order change feed connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    let sent = Instant::now();
    tokio::time::timeout(
        LEASE,
        client.batch_execute(&format!(
            "LISTEN {ORDER_CHANGES_CHANNEL}; LISTEN {EVENTS_STORED_CHANNEL}"
        )),
    )
    .await
    .map_err(|_| StorageError::Unavailable("LISTEN not answered in time".to_owned()))?
    .map_err(|e| StorageError::Unavailable(e.to_string()))?;
    // Subscribed: changes from now on arrive. Anything cached may predate
    // one missed while no feed was up.
    cache.flush();
    cache.trust_for(LEASE.saturating_sub(sent.elapsed()));
    state.set(true);
    stored.tick();
    tracing::info!("order change feed up");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            notification = notifications.recv() => match notification {
                Some(notification) => apply(cache, stored, &notification),
                None => return Err(StorageError::Unavailable("connection closed".to_owned())),
            },
            _ = heartbeat.tick() => {
                let sent = Instant::now();
                match tokio::time::timeout(LEASE, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {
                        // Everything committed before `sent` is in the
                        // channel now: apply it, then extend the lease.
                        while let Ok(notification) = notifications.try_recv() {
                            apply(cache, stored, &notification);
                        }
                        cache.trust_for(LEASE.saturating_sub(sent.elapsed()));
                    }
                    Ok(Err(error)) => return Err(StorageError::Unavailable(error.to_string())),
                    Err(_) => return Err(StorageError::Unavailable(format!("heartbeat not answered within {LEASE:?}"))),
                }
            }
        }
    }
}

/// Applies one notification: events stored, or an order's
/// `"<order id> <version>"`.
fn apply(cache: &OrderCache, stored: &StoredSignal, notification: &tokio_postgres::Notification) {
    if notification.channel() == EVENTS_STORED_CHANNEL {
        stored.tick();
        return;
    }
    let payload = notification.payload();
    let parsed = payload
        .split_once(' ')
        .and_then(|(id, version)| Some((OrderId::parse(id).ok()?, version.parse::<u64>().ok()?)));
    match parsed {
        Some((id, version)) => {
            cache.changed(&id, version);
            metrics::counter!("orderflow_cache_invalidations_total").increment(1);
        }
        None => {
            // Not ours to read: drop the whole cache rather than risk a
            // stale entry.
            tracing::warn!(payload = %domain::quote(payload), "unreadable order change; emptying the cache");
            cache.flush();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
