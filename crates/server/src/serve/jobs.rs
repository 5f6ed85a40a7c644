//! Background jobs: the bookkeeping tables kept small.

use std::time::Duration;

use storage::Database;

/// How long batch write ids are remembered. The engine repeats a write
/// within half a minute (see the engine's retry budget), so an
/// hour is far beyond any repeat.
const WRITE_ID_MEMORY: Duration = Duration::from_secs(3600);

/// Once a minute, forgets write ids older than [`WRITE_ID_MEMORY`] so the
/// `applied_writes` table stays small.
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
    }
}
