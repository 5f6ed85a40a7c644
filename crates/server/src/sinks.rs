//! The engine's sinks and log over the database: [`StoreSink`] adapts
//! `storage`'s event and dead-letter stores to `transform-engine`'s sink
//! traits, and [`DatabaseLog`] its event log to the engine's [`EventLog`],
//! so the two libraries never name each other.

use domain::{DeadLetter, Event, WriteId};
use storage::{
    Database, DeadLetterStore as _, EventStore as _, LogAppend, NewLogBatch, StorageError,
};
use transform_engine::{
    Appended, DeadLetterSink, EventLog, EventSink, LogBatch, LogRecord, SinkError, SinkErrorKind,
    Written,
};

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

/// The database's event log as the engine's [`EventLog`], for the consumer
/// named [`CONSUMER`].
#[derive(Debug, Clone)]
pub struct DatabaseLog(pub Database);

/// The one consumer of the database log (a single process reads it; several
/// replicas need a broker's log).
pub const CONSUMER: &str = "pipeline";

impl EventLog for DatabaseLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        let batches: Vec<NewLogBatch> = batches
            .iter()
            .map(|batch| NewLogBatch {
                producer: batch.producer.clone(),
                events: batch.events.clone(),
            })
            .collect();
        let outcomes = self.0.append_log(&batches).await.map_err(sink_error)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                LogAppend::Appended => Appended::New,
                LogAppend::Duplicate => Appended::Duplicate,
            })
            .collect())
    }

    async fn read(&self, after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        let entries = self.0.read_log(after, limit).await.map_err(sink_error)?;
        Ok(entries
            .into_iter()
            .map(|entry| LogRecord {
                position: entry.position,
                events: entry.events,
            })
            .collect())
    }

    async fn commit(
        &self,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
    ) -> Result<(), SinkError> {
        self.0
            .commit_log(CONSUMER, through, events, letters)
            .await
            .map(drop)
            .map_err(sink_error)
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        self.0.log_cursor(CONSUMER).await.map_err(sink_error)
    }

    async fn backlog(&self) -> Result<u64, SinkError> {
        self.0.log_backlog(CONSUMER).await.map_err(sink_error)
    }
}
