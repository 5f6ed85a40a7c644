//! Acknowledged ingest: batches are appended to a durable [`EventLog`]
//! before they are acknowledged, and a consumer runs them through the
//! pipeline and commits the outputs together with its log position.
//!
//! A batch's walk, one file per stage:
//! - `front.rs`, the front door ([`LogIngest`]): takes the batch's share of
//!   the backlog bound, queues it for the writer, and hands the caller a
//!   [`Pending`] to await its ack.
//! - `bound.rs`, **the bound**: who holds each permit. A batch's share moves
//!   with the batch (front door, writer's queue, backlog) whatever its caller
//!   does, so a cancelled call can neither free room its batch still uses
//!   nor free it twice.
//! - `writer.rs`: appends every batch waiting at that moment in one call
//!   (group commit across streams) and answers each after the append.
//! - `handoff.rs`: appended batches handed to the consumer in memory, so it
//!   need not read back what it was just given; whatever the hand-off cannot
//!   vouch for (after a restart, a failed append, past its bound) the
//!   consumer reads from the log.
//! - `consumer.rs`: runs the pipeline and commits outputs and cursor in one
//!   go, then gives the batch's permits back.
//! - `memory.rs`: [`MemoryLog`], the log for tests and benchmarks.
//!
//! Promises: **durable before the ack**; **exactly once** (the log checks
//! each producer's sequence in the append: a retry at or below the last
//! durable one is a duplicate, one that skips ahead is refused as a gap;
//! outputs and cursor commit atomically, and a commit whose range the cursor
//! covers stores nothing); **bounded** (events acknowledged and not yet
//! processed never exceed [`LogConfig::max_backlog`], whatever callers do).
//!
//! The log is a trait so that a database log and a broker's log can stand
//! behind the same front door.

mod bound;
mod consumer;
mod front;
mod handoff;
mod memory;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use domain::{DeadLetter, Event, SequenceVerdict};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bound::BoundState;
pub use front::{LogIngest, Pending};
pub use memory::MemoryLog;

use crate::sink::SinkError;
use crate::stats::Counters;

/// Most events in one batch (the contract's bound).
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// A batch to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// The producer and the batch's sequence number, for exactly-once
    /// retries; `None` without a producer id.
    pub producer: Option<(String, u64)>,
    /// The events, validated.
    pub events: Vec<Event>,
}

/// What the log did with an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Durable now, at this position.
    New {
        /// Where the batch is in the log (what [`EventLog::read`] would
        /// say); positions grow in append order.
        position: i64,
    },
    /// A retry of a batch already durable: nothing stored.
    Duplicate,
    /// The batch's sequence skips past the one after its producer's last
    /// durable one: nothing stored, so a failed batch can never be skipped
    /// over and later answered as a duplicate.
    Gap {
        /// The sequence the log takes next from this producer.
        expected: u64,
    },
}

/// The sequence rule (`domain::SequenceVerdict`) as a log's answer:
/// `None` stores the batch; else the batch's refusal. `last` is the
/// producer's last durable sequence, if the log knows the producer.
pub fn check_sequence(last: Option<u64>, sequence: u64) -> Option<Appended> {
    match SequenceVerdict::of(last, sequence) {
        SequenceVerdict::Store => None,
        SequenceVerdict::Duplicate => Some(Appended::Duplicate),
        SequenceVerdict::Gap { expected } => Some(Appended::Gap { expected }),
    }
}

/// A batch read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its position; positions grow in append order.
    pub position: i64,
    /// The events (none if the record is damaged).
    pub events: Vec<Event>,
    /// Set when the log could not decode the record: the consumer counts
    /// its events as dead-lettered and hands it to [`EventLog::commit`],
    /// which keeps it aside, so the log moves on.
    pub damage: Option<Damage>,
}

impl LogRecord {
    /// A readable record.
    pub fn new(position: i64, events: Vec<Event>) -> Self {
        Self {
            position,
            events,
            damage: None,
        }
    }

    /// Events the record holds (a damaged one: those it says it holds).
    pub fn event_count(&self) -> u64 {
        self.damage
            .as_ref()
            .map_or(self.events.len() as u64, |damage| damage.events)
    }
}

/// A log record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The events it says it holds.
    pub events: u64,
    /// The decode error.
    pub error: String,
}

/// A durable, ordered log of batches with one consumer cursor.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `batches` durably (all in one go where the log can), answering
    /// per batch and in order. Each batch with a producer is checked with
    /// [`check_sequence`] against the producer's last durable sequence, in
    /// the same transaction that stores it.
    fn append(
        &self,
        batches: &[LogBatch],
    ) -> impl Future<Output = Result<Vec<Appended>, SinkError>> + Send;

    /// Up to `limit` batches after position `after`, in order.
    fn read(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LogRecord>, SinkError>> + Send;

    /// Commits the outputs of the log after `after` (the cursor this
    /// consumer last committed or read at start) up to `through` with the
    /// cursor, atomically; a range the cursor already covers stores
    /// nothing, and so does one whose cursor is elsewhere (a log another
    /// process consumes too): then an error, since nothing landed.
    /// `damaged` are the positions in the range that could not be decoded,
    /// with their errors: the log keeps them aside (the database log in
    /// `damaged_log_rows`) in the same commit.
    fn commit(
        &self,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        damaged: &[(i64, String)],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The committed cursor (0: nothing committed yet).
    fn cursor(&self) -> impl Future<Output = Result<i64, SinkError>> + Send;

    /// Events after the cursor.
    fn backlog(&self) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Whether several processes append to and consume this log (a
    /// broker's). Then the log bounds its own backlog (an append past its
    /// limit fails), this process's permits bound only its appends in
    /// flight, and a process's counters cover the events it appended and
    /// those it processed, which need not be the same. `false`: one process
    /// owns the log, as the database log is owned.
    fn shared(&self) -> bool {
        false
    }

    /// Whether the consumer may start a commit while the one before it is
    /// still on its way. A log that says so lets the later commit write its
    /// outputs beside the earlier one's, and lands it only after the earlier
    /// one landed: a commit whose `after` is not the cursor when it would
    /// land stores nothing and fails (not [`crate::SinkErrorKind::Rejected`]), and
    /// the consumer repeats it once the earlier one is in. `false`: one
    /// commit at a time.
    fn overlapping_commits(&self) -> bool {
        false
    }
}

/// How the acknowledged path is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Most events acknowledged but not yet processed; at the bound,
    /// submitters wait. At least [`MAX_BATCH_EVENTS`], so any batch fits.
    /// Default 100,000: a few seconds of work for the consumer.
    pub max_backlog: usize,
    /// Most batches a consumer reads and commits at once.
    pub read_batches: u32,
    /// Most appended events kept in memory for the consumer (a log this
    /// process owns); past it, the consumer reads the rest from the log.
    /// Default: [`Self::DEFAULT_MAX_BACKLOG`], so with the default bound a
    /// full backlog is all handed over. Reading it back instead cost more
    /// CPU and more peak memory (decoding the rows) than holding the events:
    /// at 32,768, 7-9% fewer events/s and a 15-30 MB higher peak
    /// (docs/benchmarks.md).
    pub handoff_events: usize,
}

impl LogConfig {
    /// The default [`Self::max_backlog`].
    pub const DEFAULT_MAX_BACKLOG: usize = 100_000;
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_backlog: Self::DEFAULT_MAX_BACKLOG,
            read_batches: 64,
            handoff_events: Self::DEFAULT_MAX_BACKLOG,
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The backlog stayed at its bound for the whole wait.
    #[error("the event log backlog is full ({0} events); retry later")]
    Full(u64),
    /// The batch's sequence skips ahead of its producer's last durable one:
    /// nothing stored; resend from `expected`.
    #[error(
        "sequence {sequence} skips ahead: the next sequence of this producer must be {expected}"
    )]
    SequenceGap {
        /// The sequence sent.
        sequence: u64,
        /// The sequence the log takes next from this producer.
        expected: u64,
    },
    /// The engine is shutting down.
    #[error("the event pipeline is shutting down")]
    ShuttingDown,
    /// The log refused or failed the append.
    #[error(transparent)]
    Log(#[from] SinkError),
}

/// The acknowledgement of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Events taken (0 for a duplicate).
    pub accepted: u64,
    /// A retry of a batch already durable.
    pub duplicate: bool,
}

/// The writer and consumer tasks of one engine's log.
pub(crate) struct LogTasks {
    pub(crate) ingest: LogIngest,
    pub(crate) handles: Vec<JoinHandle<()>>,
}

/// Starts the log writer and the consumer over `log`, counting into
/// `counters`; `pipeline` is the consumer's own. Both stop when `stop` says
/// so or its sender is gone (an engine dropped without shutdown): the
/// writer appends and answers what is already queued, the consumer commits
/// the batch in hand.
pub(crate) async fn start<L: EventLog>(
    log: Arc<L>,
    config: LogConfig,
    pipeline: crate::Pipeline,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> Result<LogTasks, SinkError> {
    let max_backlog = config.max_backlog.max(MAX_BATCH_EVENTS) as u64;
    let shared_log = log.shared();
    // A shared log's backlog is everyone's: not this process's to count.
    let backlog = if shared_log { 0 } else { log.backlog().await? };
    let cursor = log.cursor().await?;
    // What an earlier run acknowledged and did not process is received and
    // in flight for this one.
    counters.admit_many(backlog);
    let bound = Arc::new(bound::Bound::new(max_backlog, backlog, !shared_log));
    let handoff = Arc::new(handoff::Shared::new(
        config
            .handoff_events
            .min(usize::try_from(max_backlog).unwrap_or(usize::MAX)),
    ));
    let (queue, received) = tokio::sync::mpsc::channel(writer::QUEUE);
    let ingest = LogIngest::new(queue, Arc::clone(&bound));
    let writer = tokio::spawn(
        writer::Writer {
            log: Arc::clone(&log),
            bound: Arc::clone(&bound),
            counters: Arc::clone(&counters),
            handoff: Arc::clone(&handoff),
        }
        .run(received, stop.clone()),
    );
    let consumer = tokio::spawn(
        consumer::Consumer {
            log,
            pipeline,
            bound,
            counters,
            handoff,
            cursor,
            read_batches: config.read_batches.max(1),
        }
        .run(stop),
    );
    Ok(LogTasks {
        ingest,
        handles: vec![writer, consumer],
    })
}
