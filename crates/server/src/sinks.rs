//! The engine's sinks over the database: [`StoreSink`] adapts `storage`'s
//! event and dead-letter stores to `transform-engine`'s sink traits, so the
//! two libraries never name each other.

use domain::{DeadLetter, Event, WriteId};
use storage::{Database, DeadLetterStore as _, EventStore as _, StorageError};
use transform_engine::{DeadLetterSink, EventSink, SinkError, SinkErrorKind, Written};

/// The database as the pipeline's event and dead-letter sink.
#[derive(Debug, Clone)]
pub struct StoreSink(pub Database);

/// How a storage failure reads to the engine: only a write that never
/// started (`Unavailable`) or whose commit went unconfirmed
/// (`OutcomeUnknown`; the stores are idempotent per write id) is worth
/// repeating.
fn sink_error(error: StorageError) -> SinkError {
    let kind = match error {
        StorageError::Unavailable(_) => SinkErrorKind::Unavailable,
        StorageError::OutcomeUnknown(_) => SinkErrorKind::OutcomeUnknown,
        _ => SinkErrorKind::Rejected,
    };
    SinkError {
        message: error.to_string(),
        kind,
    }
}

fn written(written: storage::Written) -> Written {
    match written {
        storage::Written::Stored => Written::Stored,
        storage::Written::AlreadyStored => Written::AlreadyStored,
        storage::Written::StoredElsewhere => Written::StoredElsewhere,
    }
}

impl EventSink for StoreSink {
    async fn append(&self, write: WriteId, events: &[Event]) -> Result<Written, SinkError> {
        self.0
            .append_events(write, events)
            .await
            .map(written)
            .map_err(sink_error)
    }
}

impl DeadLetterSink for StoreSink {
    async fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> Result<Written, SinkError> {
        self.0
            .dead_letter(write, letters)
            .await
            .map(written)
            .map_err(sink_error)
    }
}
