//! The engine's sinks and log over the database: [`StoreSink`] adapts
//! `storage`'s event and dead-letter stores to `transform-engine`'s sink
//! traits, and [`DatabaseLog`] its event log to the engine's [`EventLog`],
//! so the two libraries never name each other.

use domain::{DeadLetter, Event, WriteId};
use storage::{
    Database, DeadLetterStore as _, EventStore as _, LogAppend, LogCommit, NewLogBatch,
    StorageError,
};
use transform_engine::{
    Appended, Damage, DeadLetterSink, EventLog, EventSink, LogBatch, LogRecord, SinkError,
    SinkErrorKind, Written,
};

/// Where processed events go (`ORDERFLOW_EVENT_SINK`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The event store (the default).
    #[default]
    Database,
    /// Counted as processed, then discarded (as Vector's `blackhole` sink):
    /// measures decode, validation, the log and the pipeline without the
    /// output store. Dead letters and the log's cursor are still written.
    Blackhole,
}

/// The database as the pipeline's event and dead-letter sink.
#[derive(Debug, Clone)]
pub struct StoreSink {
    /// The database.
    pub db: Database,
    /// Whether processed events are stored or discarded.
    pub output: Output,
}

/// How a storage failure reads to the engine: a write that never started
/// (`Unavailable`, or `Misconfigured`: a database that stopped taking
/// writes) or whose commit went unconfirmed (`OutcomeUnknown`; the stores
/// are idempotent per write id) is worth repeating; anything else is
/// refused for good.
pub(crate) fn sink_error(error: StorageError) -> SinkError {
    let kind = match error {
        // A database that stopped taking writes (made read-only, a role
        // revoked) may be fixed while the engine waits: keep trying.
        StorageError::Unavailable(_) | StorageError::Misconfigured(_) => SinkErrorKind::Unavailable,
        StorageError::OutcomeUnknown(_) => SinkErrorKind::OutcomeUnknown,
        StorageError::Full(_) => SinkErrorKind::StorageFull,
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
        if self.output == Output::Blackhole {
            return Ok(Written::Stored);
        }
        self.db
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
        self.db
            .dead_letter(write, letters)
            .await
            .map(written)
            .map_err(sink_error)
    }
}

/// The database's event log as the engine's [`EventLog`], for the consumer
/// named [`CONSUMER`].
#[derive(Debug, Clone)]
pub struct DatabaseLog {
    /// The database.
    pub db: Database,
    /// Whether processed events are stored with the cursor or discarded.
    pub output: Output,
}

/// The one consumer of the database log (a single process reads it; several
/// replicas need a broker's log).
pub const CONSUMER: &str = "pipeline";

impl EventLog for DatabaseLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        let batches: Vec<NewLogBatch<'_>> = batches
            .iter()
            .map(|batch| NewLogBatch {
                producer: batch.producer.as_ref().map(|(id, seq)| (id.as_str(), *seq)),
                events: &batch.events,
            })
            .collect();
        let outcomes = self.db.append_log(&batches).await.map_err(sink_error)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                LogAppend::Appended { position } => Appended::New { position },
                LogAppend::Duplicate => Appended::Duplicate,
                LogAppend::Gap { expected } => Appended::Gap { expected },
            })
            .collect())
    }

    async fn read(&self, after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        let entries = self.db.read_log(after, limit).await.map_err(sink_error)?;
        Ok(entries
            .into_iter()
            .map(|entry| LogRecord {
                position: entry.position,
                events: entry.events,
                damage: entry.damage.map(|damage| Damage {
                    events: damage.events,
                    error: damage.error,
                }),
            })
            .collect())
    }

    async fn commit(
        &self,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        damaged: &[(i64, String)],
    ) -> Result<(), SinkError> {
        let events = match self.output {
            Output::Database => events,
            Output::Blackhole => &[],
        };
        match self
            .db
            .commit_log(CONSUMER, after, through, events, letters, damaged)
            .await
        {
            Ok(LogCommit::Committed | LogCommit::AlreadyCommitted) => Ok(()),
            // Not for this process to fix: it keeps trying (nothing was
            // stored), and its lease, lost to the other process, ends it.
            Ok(LogCommit::Moved { cursor }) => Err(SinkError {
                message: format!(
                    "the event log's cursor is at {cursor}, not at {after}: another process \
                     consumes this log; nothing stored"
                ),
                kind: SinkErrorKind::Unavailable,
            }),
            // A commit that reserved its ids after this one's landed first
            // (the range before it, or a process that lost its lease
            // mid-commit): a repeat reserves new ids.
            Ok(LogCommit::Overtaken) => Err(SinkError {
                message: "events above this commit's ids were committed first; nothing stored"
                    .to_owned(),
                kind: SinkErrorKind::Unavailable,
            }),
            Err(error) => Err(sink_error(error)),
        }
    }

    fn overlapping_commits(&self) -> bool {
        // PostgreSQL writes the next commit's events beside this one's;
        // SQLite's one writer would only queue them.
        self.db.backend() == storage::Backend::Postgres
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        self.db.log_cursor(CONSUMER).await.map_err(sink_error)
    }

    async fn backlog(&self) -> Result<u64, SinkError> {
        self.db.log_backlog(CONSUMER).await.map_err(sink_error)
    }
}
