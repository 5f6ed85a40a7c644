//! Background jobs: stored events past retention removed, and the
//! bookkeeping tables kept small.

use std::time::Duration;

use storage::Database;

/// Events one retention step removes, in one short transaction.
const RETENTION_STEP: u32 = 5_000;
/// The pause between two full retention steps, so a large backlog of
/// expired events is removed without holding the writers' turn for long.
const RETENTION_PAUSE: Duration = Duration::from_millis(20);

/// Removes the events stored more than `keep` ago, oldest position first,
/// in steps of [`RETENTION_STEP`], every tenth of `keep` (between a second
/// and a minute).
///
/// After each round it sets `orderflow_event_store_oldest_age_seconds`; with
/// `orderflow_event_retention_seconds` (set at start-up) it tells an alert
/// whether retention keeps up (`OrderflowEventStoreFilling`).
pub(super) async fn expire_events(db: Database, keep: Duration) {
    let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        loop {
            match db.expire_events(keep, RETENTION_STEP).await {
                Ok(step) => {
                    metrics::counter!("orderflow_events_expired_total").increment(step.events);
                    if step.events > 0 {
                        tracing::debug!(
                            removed = step.events,
                            through = step.through,
                            "expired stored events"
                        );
                    }
                    if step.events < u64::from(RETENTION_STEP) {
                        break;
                    }
                    tokio::time::sleep(RETENTION_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not remove expired events; retrying at the next round");
                    break;
                }
            }
        }
        match db.oldest_event_at().await {
            Ok(oldest) => {
                let age = oldest.map_or(0.0, |at| {
                    (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
                });
                metrics::gauge!("orderflow_event_store_oldest_age_seconds").set(age);
            }
            Err(error) => tracing::warn!(%error, "could not read the oldest stored event"),
        }
    }
}

/// How long batch write ids are remembered. The engine repeats a write
/// within half a minute (see the engine's retry budget), so an
/// hour is far beyond any repeat.
const WRITE_ID_MEMORY: Duration = Duration::from_secs(3600);

/// How long a producer's records (its sequences on the event logs) are kept
/// after its last batch: the contract's minimum, 7 days. Until then a retry
/// is answered duplicate and a skipped sequence refused; after it, the
/// producer's next batch counts as its first.
const PRODUCER_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Once a minute, forgets write ids older than [`WRITE_ID_MEMORY`] so the
/// `applied_writes` table stays small, and the records of producers idle
/// for [`PRODUCER_MEMORY`].
pub(super) async fn forget_old_write_ids(db: Database) {
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
        match db.forget_idle_producers(PRODUCER_MEMORY).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!(forgotten, "forgot idle producers' records"),
            Err(error) => {
                tracing::warn!(%error, "could not forget idle producers; retrying in a minute")
            }
        }
    }
}
