//! The event log behind acknowledged ingest, in the database itself.
//!
//! - **Append** ([`Database::append_log`]): a group of batches in one
//!   transaction, one row per batch (its events in the binary form of
//!   `Event::encode_batch`; rows from before that form hold JSON lines, and
//!   are still read).
//!   Each batch with a producer id is checked against, and advances, that
//!   producer's last durable sequence in the same transaction, so a retry
//!   is recognised as a duplicate and stores nothing, and a batch that skips
//!   ahead is refused as a gap (so a failed batch cannot be skipped over).
//!   The append waits for its transaction's end however long it takes:
//!   the log writer must know whether rows joined the log before it frees
//!   their room in the backlog bound (callers keep their own deadlines). On PostgreSQL the
//!   transaction first takes an advisory lock, so appends commit in
//!   position order and a reader never passes a position that commits later;
//!   SQLite has one writer anyway.
//! - **Commit** ([`Database::commit_log`]): a consumer's outputs (events and
//!   dead letters) and its new cursor in one transaction, and the log rows
//!   the cursor passed are deleted in it too (bounded disk). A row that
//!   cannot be decoded is read as a [`LogDamage`], and its commit moves it,
//!   as it was, to `damaged_log_rows` with the error: the log moves on. A
//!   commit whose range the cursor already covers stores nothing, so
//!   repeating one whose outcome was unknown is safe. A commit writes its
//!   events first, then locks its consumer's cursor row (an advisory lock
//!   before the first commit, when there is no row yet) and checks it, so a
//!   repeat never lands beside the attempt it repeats (both would read the
//!   old cursor and store twice). On PostgreSQL the next range's commit may
//!   write its events while the one before it is still on its way: it waits
//!   for that one (an advisory lock on the range's end, held by its commit)
//!   before it locks the cursor row, and lands only if no committed event
//!   lies above the ids it reserved (`crate::feed` keeps ids in commit
//!   order).
//!
//! Durable means committed: SQLite runs with `synchronous = FULL` (see
//! `db.rs`), PostgreSQL with its defaults.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::{DeadLetter, Event, SequenceVerdict};

use crate::StorageError;
use crate::db::{Database, InsertRows, chunked, with_conn, write_transaction};
use crate::events::{dead_letter_rows, event_rows};
use crate::feed::InsertEventsEarly;
use crate::schema::{
    damaged_log_rows, event_log, log_applied, log_applied_batches, log_cursors, log_producers,
    log_producers_appended,
};

/// Advisory-lock key that serialises log appends on PostgreSQL ("evntlog").
const APPEND_LOCK: i64 = 0x0065_766e_746c_6f67;
/// Advisory-lock key that serialises a consumer's first commits on
/// PostgreSQL, before its cursor row exists ("logcmit").
const COMMIT_LOCK: i64 = 0x006c_6f67_636d_6974;
/// First key of the two-key advisory locks (a key space apart from the
/// one-key locks) that order a consumer's commits on PostgreSQL: a commit
/// holds (this, its range's end) exclusively, and the next range's commit
/// waits for it on (this, its range's start) ("lo").
const RANGE_LOCKS: i32 = 0x6c6f;

/// The second key of a range end's advisory lock: positions folded into
/// 31 bits (two ranges that share a key only wait for each other).
fn range_key(position: i64) -> i32 {
    i32::try_from(position.rem_euclid(1 << 31)).unwrap_or(0)
}

/// Why a commit's transaction was rolled back instead of committed.
enum CommitError {
    /// Nothing stored: the cursor is elsewhere, or events above these.
    Refused(LogCommit),
    Storage(StorageError),
}

impl From<diesel::result::Error> for CommitError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// A batch to append (borrowed: the caller keeps its events).
#[derive(Debug, Clone, Copy)]
pub struct NewLogBatch<'a> {
    /// The producer and its sequence number, for exactly-once retries;
    /// `None` for a producer without an id (no such guarantee).
    pub producer: Option<(&'a str, u64)>,
    /// The events, already validated.
    pub events: &'a [Event],
}

/// What an append did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAppend {
    /// Durable now, at this position.
    Appended {
        /// Its position in the log.
        position: i64,
    },
    /// A retry: the producer's sequence was already durable; nothing stored.
    Duplicate,
    /// The sequence skips ahead of the producer's last durable one + 1:
    /// nothing stored ("no gaps", as Kafka's idempotent producer).
    Gap {
        /// The sequence this producer must send next.
        expected: u64,
    },
}

/// A batch read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position; positions grow in append order.
    pub position: i64,
    /// Its events, in the order sent (none if the row is damaged).
    pub events: Vec<Event>,
    /// Why the row could not be decoded, if it could not: the consumer
    /// passes it to [`Database::commit_log`], which moves the row to
    /// `damaged_log_rows`, so the log moves on.
    pub damage: Option<LogDamage>,
}

/// A log row that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDamage {
    /// The events the row says it holds.
    pub events: u64,
    /// The decode error, naming the position and the byte.
    pub error: String,
}

/// A log row kept aside as undecodable (`damaged_log_rows`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedLogRow {
    /// Its position in the log.
    pub position: i64,
    /// The events it said it held.
    pub events: u64,
    /// Its binary body, as it was (`None` for a JSON-lines row).
    pub data: Option<Vec<u8>>,
    /// Why it could not be decoded.
    pub error: String,
}

/// What a consumer's commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCommit {
    /// The outputs and the cursor were committed.
    Committed,
    /// The cursor was already at or past the range: nothing stored again.
    AlreadyCommitted,
    /// The cursor is inside the range, or before it: another consumer
    /// committed part of it (or the log was rewound). Nothing stored.
    Moved {
        /// Where the cursor is.
        cursor: i64,
    },
    /// Events above the ids this commit reserved were committed first (a
    /// commit of a consumer that lost its lease, or reserved after this
    /// one): landing would put these where a subscriber has already read
    /// past. Nothing stored; a repeat reserves new ids.
    Overtaken,
}

// `None` as NULL, as `NewEventRow`: one multi-row INSERT on SQLite.
#[derive(Debug, Insertable)]
#[diesel(table_name = event_log, treat_none_as_default_value = false)]
struct NewLogRow {
    producer_id: Option<String>,
    sequence: Option<i64>,
    event_count: i32,
    /// Empty: the events are in `data`.
    body: &'static str,
    data: Vec<u8>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = event_log)]
struct LogRow {
    position: i64,
    event_count: i32,
    /// JSON lines, in rows appended before the binary form (else empty).
    body: String,
    data: Option<Vec<u8>>,
}

/// A consumer's cursor, read with `FOR UPDATE` (PostgreSQL).
#[derive(Debug, QueryableByName)]
struct CursorRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    position: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    events_through: i64,
}

/// A whole log row, as it is moved to `damaged_log_rows`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = event_log)]
struct DamagedRow {
    position: i64,
    producer_id: Option<String>,
    sequence: Option<i64>,
    event_count: i32,
    body: String,
    data: Option<Vec<u8>>,
}

impl LogRow {
    fn events(&self) -> Result<Vec<Event>, StorageError> {
        match &self.data {
            Some(data) => Event::decode_batch(data).map_err(|e| corrupt(self.position, e)),
            None => self
                .body
                .split('\n')
                .map(|line| Event::from_json(line).map_err(|e| corrupt(self.position, e)))
                .collect(),
        }
    }
}

/// The sequence rule (`domain::SequenceVerdict`) over the stored `last`:
/// `None` stores the batch; else its refusal.
fn check_sequence(last: Option<i64>, sequence: i64) -> Option<LogAppend> {
    let last = last.map(|last| u64::try_from(last).unwrap_or(0));
    match SequenceVerdict::of(last, u64::try_from(sequence).unwrap_or(0)) {
        SequenceVerdict::Store => None,
        SequenceVerdict::Duplicate => Some(LogAppend::Duplicate),
        SequenceVerdict::Gap { expected } => Some(LogAppend::Gap { expected }),
    }
}

fn corrupt(position: i64, what: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(format!(
        "event log position {position} is unreadable: {what}"
    ))
}

impl Database {
    /// Appends `batches` in one transaction (group commit) and says, per
    /// batch and in order, whether it was appended or was a duplicate.
    pub async fn append_log(
        &self,
        batches: &[NewLogBatch<'_>],
    ) -> Result<Vec<LogAppend>, StorageError> {
        let rows = batches
            .iter()
            .map(|batch| {
                let mut data = Vec::new();
                Event::encode_batch(batch.events, &mut data);
                let producer = match batch.producer {
                    Some((id, sequence)) => Some((
                        id.to_owned(),
                        i64::try_from(sequence).map_err(|_| {
                            StorageError::Invalid(format!("sequence {sequence} is out of range"))
                        })?,
                    )),
                    None => None,
                };
                let event_count = i32::try_from(batch.events.len())
                    .map_err(|_| StorageError::Invalid("batch too large".to_owned()))?;
                Ok((producer, event_count, data))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let serialise = self.backend() == crate::Backend::Postgres;
        let now = chrono::Utc::now().timestamp_millis();
        self.write_to_end(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                if serialise {
                    diesel::sql_query(format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
                        .execute(c)
                        .await?;
                }
                let mut outcomes = Vec::with_capacity(rows.len());
                let mut appended = Vec::with_capacity(rows.len());
                for (producer, event_count, data) in rows {
                    if let Some((id, sequence)) = &producer {
                        let last: Option<i64> = log_producers::table
                            .find(id)
                            .select(log_producers::last_sequence)
                            .first(c)
                            .await
                            .optional()?;
                        if let Some(refused) = check_sequence(last, *sequence) {
                            outcomes.push(Some(refused));
                            continue;
                        }
                        diesel::insert_into(log_producers::table)
                            .values((
                                log_producers::producer_id.eq(id),
                                log_producers::last_sequence.eq(sequence),
                                log_producers::last_batch_at.eq(now),
                            ))
                            .on_conflict(log_producers::producer_id)
                            .do_update()
                            .set((
                                log_producers::last_sequence.eq(sequence),
                                log_producers::last_batch_at.eq(now),
                            ))
                            .execute(c)
                            .await?;
                    }
                    let (producer_id, sequence) = producer.unzip();
                    appended.push(NewLogRow {
                        producer_id,
                        sequence,
                        event_count,
                        body: "",
                        data,
                    });
                    outcomes.push(None);
                }
                let count = appended.len();
                for chunk in chunked(appended) {
                    c.insert_rows(chunk).await?;
                }
                // The positions just taken: the highest ones, since appends
                // are serialised (the advisory lock; SQLite's one writer).
                let mut positions: Vec<i64> = event_log::table
                    .select(event_log::position)
                    .order(event_log::position.desc())
                    .limit(i64::try_from(count).unwrap_or(i64::MAX))
                    .load(c)
                    .await?;
                positions.reverse();
                let mut positions = positions.into_iter();
                let mut resolved = Vec::with_capacity(outcomes.len());
                for outcome in outcomes {
                    resolved.push(match outcome {
                        Some(refused) => refused,
                        None => LogAppend::Appended {
                            position: positions.next().ok_or_else(|| {
                                StorageError::Internal(
                                    "the event log lost rows inside its own append".to_owned(),
                                )
                            })?,
                        },
                    });
                }
                let outcomes = resolved;
                // Tests kill the process here: mid group commit.
                fail::fail_point!("storage-log-append");
                Ok::<_, StorageError>(outcomes)
            })
        })
        .await
    }

    /// Up to `limit` batches after `after`, in position order.
    pub async fn read_log(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<LogRow> = with_conn!(&mut conn, |c| {
                event_log::table
                    .filter(event_log::position.gt(after))
                    .order(event_log::position)
                    .limit(i64::from(limit))
                    .select(LogRow::as_select())
                    .load(c)
                    .await
            })?;
            Ok(rows
                .into_iter()
                .map(|row| match row.events() {
                    Ok(events) => LogEntry {
                        position: row.position,
                        events,
                        damage: None,
                    },
                    Err(error) => LogEntry {
                        position: row.position,
                        events: Vec::new(),
                        damage: Some(LogDamage {
                            events: u64::try_from(row.event_count).unwrap_or(0),
                            error: error.to_string(),
                        }),
                    },
                })
                .collect())
        })
        .await
    }

    /// The log rows kept aside as undecodable, oldest first.
    pub async fn damaged_log_rows(&self) -> Result<Vec<DamagedLogRow>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<(i64, i32, Option<Vec<u8>>, String)> = with_conn!(&mut conn, |c| {
                damaged_log_rows::table
                    .order(damaged_log_rows::position)
                    .select((
                        damaged_log_rows::position,
                        damaged_log_rows::event_count,
                        damaged_log_rows::data,
                        damaged_log_rows::error,
                    ))
                    .load(c)
                    .await
            })?;
            Ok(rows
                .into_iter()
                .map(|(position, events, data, error)| DamagedLogRow {
                    position,
                    events: u64::try_from(events).unwrap_or(0),
                    data,
                    error,
                })
                .collect())
        })
        .await
    }

    /// Where `consumer`'s committed outputs end (0: nothing yet).
    pub async fn log_cursor(&self, consumer: &str) -> Result<i64, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let position: Option<i64> = with_conn!(&mut conn, |c| {
                log_cursors::table
                    .find(consumer)
                    .select(log_cursors::position)
                    .first(c)
                    .await
                    .optional()
            })?;
            Ok(position.unwrap_or(0))
        })
        .await
    }

    /// Events in the log after `consumer`'s cursor: acknowledged, not yet
    /// processed.
    pub async fn log_backlog(&self, consumer: &str) -> Result<u64, StorageError> {
        let cursor = self.log_cursor(consumer).await?;
        self.timed(async {
            let mut conn = self.acquire().await?;
            let counts: Vec<i32> = with_conn!(&mut conn, |c| {
                event_log::table
                    .filter(event_log::position.gt(cursor))
                    .select(event_log::event_count)
                    .load(c)
                    .await
            })?;
            Ok(counts
                .into_iter()
                .map(|n| u64::try_from(n).unwrap_or(0))
                .sum())
        })
        .await
    }

    /// Commits `consumer`'s outputs for the log after `after` up to
    /// `through`, with the cursor, in one transaction, and deletes the log
    /// rows it passed; the `damaged` positions (with their decode errors)
    /// are first copied, as they are, to `damaged_log_rows`.
    /// Idempotent: a range the cursor already covers stores nothing.
    /// Fenced: a cursor that is neither there yet nor at `after` (someone
    /// else committed part of the range) stores nothing and answers
    /// [`LogCommit::Moved`].
    pub async fn commit_log(
        &self,
        consumer: &str,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        damaged: &[(i64, String)],
    ) -> Result<LogCommit, StorageError> {
        let damaged = damaged.to_vec();
        let now = chrono::Utc::now().timestamp_millis();
        let event_rows = event_rows(events)?;
        let letter_rows = dead_letter_rows(letters)?;
        let consumer = consumer.to_owned();
        let serialise = self.backend() == crate::Backend::Postgres;
        let stores_events = !event_rows.is_empty();
        // To its end: the consumer repeats a commit only once it knows the
        // last attempt is over, never beside it.
        let committed = self
            .write_to_end(move |mut conn| async move {
                let outcome = write_transaction!(&mut conn, |c| {
                    if serialise {
                        // This range's commit is on its way: the next
                        // range's waits for it (below).
                        diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2)")
                            .bind::<diesel::sql_types::Integer, _>(RANGE_LOCKS)
                            .bind::<diesel::sql_types::Integer, _>(range_key(through))
                            .execute(c)
                            .await?;
                    }
                    // The events first: on PostgreSQL beside the commit
                    // before this one, if that is still writing its own.
                    let highest = c.insert_events_early(event_rows).await?;
                    if serialise {
                        // Lands after the range before it, if that one's
                        // commit is on its way.
                        diesel::sql_query("SELECT pg_advisory_xact_lock_shared($1, $2)")
                            .bind::<diesel::sql_types::Integer, _>(RANGE_LOCKS)
                            .bind::<diesel::sql_types::Integer, _>(range_key(after))
                            .execute(c)
                            .await?;
                    }
                    // Attempts of one range (another process's too) run one
                    // after the other, so a later one sees the cursor an
                    // earlier one committed. On PostgreSQL a plain read would
                    // not (it sees what was committed when the statement
                    // began); `FOR UPDATE` waits for the cursor row and then
                    // reads its newest version, in one round trip. Before a
                    // consumer's first commit there is no row to wait for:
                    // then first commits take an advisory lock and read again.
                    let mut cursor: Option<(i64, i64)> = if serialise {
                        diesel::sql_query(
                            "SELECT position, events_through FROM log_cursors \
                             WHERE consumer = $1 FOR UPDATE",
                        )
                        .bind::<diesel::sql_types::Text, _>(&consumer)
                        .get_result::<CursorRow>(c)
                        .await
                        .optional()?
                        .map(|row| (row.position, row.events_through))
                    } else {
                        None
                    };
                    if cursor.is_none() {
                        if serialise {
                            diesel::sql_query(format!(
                                "SELECT pg_advisory_xact_lock({COMMIT_LOCK})"
                            ))
                            .execute(c)
                            .await?;
                        }
                        cursor = log_cursors::table
                            .find(&consumer)
                            .select((log_cursors::position, log_cursors::events_through))
                            .first(c)
                            .await
                            .optional()?;
                    }
                    // Each refusal rolls the events written above back.
                    let (cursor, events_through) = cursor.unwrap_or((0, 0));
                    if cursor >= through {
                        return Err(CommitError::Refused(LogCommit::AlreadyCommitted));
                    }
                    if cursor != after {
                        return Err(CommitError::Refused(LogCommit::Moved { cursor }));
                    }
                    // Every other writer into `events` is kept out while
                    // this commit holds the events lock shared, so only a
                    // commit of this consumer can have stored above it.
                    if highest.is_some_and(|highest| events_through > highest) {
                        return Err(CommitError::Refused(LogCommit::Overtaken));
                    }
                    let events_through = highest.unwrap_or(events_through);
                    for chunk in chunked(letter_rows) {
                        c.insert_rows(chunk).await?;
                    }
                    for (position, error) in &damaged {
                        let row: Option<DamagedRow> = event_log::table
                            .find(position)
                            .select(DamagedRow::as_select())
                            .first(c)
                            .await
                            .optional()?;
                        let Some(row) = row else { continue };
                        diesel::insert_into(damaged_log_rows::table)
                            .values((
                                damaged_log_rows::position.eq(row.position),
                                damaged_log_rows::producer_id.eq(row.producer_id),
                                damaged_log_rows::sequence.eq(row.sequence),
                                damaged_log_rows::event_count.eq(row.event_count),
                                damaged_log_rows::body.eq(row.body),
                                damaged_log_rows::data.eq(row.data),
                                damaged_log_rows::error.eq(error),
                                damaged_log_rows::moved_at.eq(now),
                            ))
                            .execute(c)
                            .await?;
                    }
                    diesel::insert_into(log_cursors::table)
                        .values((
                            log_cursors::consumer.eq(&consumer),
                            log_cursors::position.eq(through),
                            log_cursors::events_through.eq(events_through),
                        ))
                        .on_conflict(log_cursors::consumer)
                        .do_update()
                        .set((
                            log_cursors::position.eq(through),
                            log_cursors::events_through.eq(events_through),
                        ))
                        .execute(c)
                        .await?;
                    diesel::delete(event_log::table.filter(event_log::position.le(through)))
                        .execute(c)
                        .await?;
                    // Tests kill the process here: outputs written, not committed.
                    fail::fail_point!("storage-log-commit");
                    Ok::<_, CommitError>(LogCommit::Committed)
                });
                match outcome {
                    Ok(done) | Err(CommitError::Refused(done)) => Ok(done),
                    Err(CommitError::Storage(error)) => Err(error),
                }
            })
            .await;
        if stores_events && matches!(committed, Ok(LogCommit::Committed)) {
            self.stored_signal().tick();
        }
        committed
    }
}

/// A producer id and one of its sequences, as stored.
type Sequenced = (String, i64);

/// A producer's records on a shared log: what its outputs committed, and
/// what was published to the stream (perhaps not consumed yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The last sequence whose outputs are committed.
    pub committed: Option<u64>,
    /// The highest sequence published to the stream.
    pub appended: Option<u64>,
}

impl ProducerRecord {
    /// The verdict on `sequence`: at or below the committed one, a
    /// duplicate (whatever the stream's duplicate window remembers); past
    /// the highest known + 1, a gap; else store it.
    pub fn verdict(&self, sequence: u64) -> SequenceVerdict {
        if self.committed.is_some_and(|c| sequence <= c) {
            return SequenceVerdict::Duplicate;
        }
        let known = self.committed.max(self.appended);
        match SequenceVerdict::of(known, sequence) {
            // Published, not yet consumed: the stream's window decides.
            SequenceVerdict::Duplicate => SequenceVerdict::Store,
            other => other,
        }
    }
}

/// A shared log's messages (NATS JetStream), recorded with their outputs.
impl Database {
    /// The records of `producers` (those the database does not know are
    /// absent from the map).
    pub async fn producer_records(
        &self,
        producers: &[String],
    ) -> Result<std::collections::HashMap<String, ProducerRecord>, StorageError> {
        let producers = producers.to_vec();
        self.timed(async {
            let mut conn = self.acquire().await?;
            let (committed, appended): (Vec<Sequenced>, Vec<Sequenced>) =
                with_conn!(&mut conn, |c| {
                    let committed = log_producers::table
                        .filter(log_producers::producer_id.eq_any(&producers))
                        .select((log_producers::producer_id, log_producers::last_sequence))
                        .load(c)
                        .await?;
                    let appended = log_producers_appended::table
                        .filter(log_producers_appended::producer_id.eq_any(&producers))
                        .select((
                            log_producers_appended::producer_id,
                            log_producers_appended::appended_sequence,
                        ))
                        .load(c)
                        .await?;
                    Ok::<_, diesel::result::Error>((committed, appended))
                })?;
            let mut records = std::collections::HashMap::new();
            for (id, last) in committed {
                records
                    .entry(id)
                    .or_insert_with(ProducerRecord::default)
                    .committed = u64::try_from(last).ok();
            }
            for (id, last) in appended {
                records
                    .entry(id)
                    .or_insert_with(ProducerRecord::default)
                    .appended = u64::try_from(last).ok();
            }
            Ok(records)
        })
        .await
    }

    /// Which of `batches` (producer, sequence) already have their outputs
    /// committed (`log_applied_batches`).
    pub async fn applied_batches(
        &self,
        batches: &[(String, u64)],
    ) -> Result<std::collections::HashSet<(String, u64)>, StorageError> {
        let producers: Vec<String> = batches.iter().map(|(p, _)| p.clone()).collect();
        let sequences: Vec<i64> = batches
            .iter()
            .map(|(_, s)| i64::try_from(*s).unwrap_or(i64::MAX))
            .collect();
        let wanted: std::collections::HashSet<(String, u64)> = batches.iter().cloned().collect();
        self.timed(async {
            let mut conn = self.acquire().await?;
            let found: Vec<(String, i64)> = with_conn!(&mut conn, |c| {
                log_applied_batches::table
                    .filter(log_applied_batches::producer_id.eq_any(&producers))
                    .filter(log_applied_batches::sequence.eq_any(&sequences))
                    .select((
                        log_applied_batches::producer_id,
                        log_applied_batches::sequence,
                    ))
                    .load(c)
                    .await
            })?;
            Ok(found
                .into_iter()
                .filter_map(|(p, s)| Some((p, u64::try_from(s).ok()?)))
                .filter(|pair| wanted.contains(pair))
                .collect())
        })
        .await
    }

    /// Records that `published` (producer, sequence) are in the stream:
    /// each producer's appended sequence only grows.
    pub async fn note_appended(&self, published: &[(String, u64)]) -> Result<(), StorageError> {
        let mut highest: std::collections::BTreeMap<String, i64> =
            std::collections::BTreeMap::new();
        for (producer, sequence) in published {
            let sequence = i64::try_from(*sequence).unwrap_or(i64::MAX);
            let entry = highest.entry(producer.clone()).or_insert(sequence);
            *entry = (*entry).max(sequence);
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                for (producer, sequence) in &highest {
                    diesel::insert_into(log_producers_appended::table)
                        .values((
                            log_producers_appended::producer_id.eq(producer),
                            log_producers_appended::appended_sequence.eq(sequence),
                            log_producers_appended::last_batch_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                    diesel::update(
                        log_producers_appended::table
                            .filter(log_producers_appended::producer_id.eq(producer)),
                    )
                    .set(log_producers_appended::last_batch_at.eq(now))
                    .execute(c)
                    .await?;
                    diesel::update(
                        log_producers_appended::table
                            .filter(log_producers_appended::producer_id.eq(producer))
                            .filter(log_producers_appended::appended_sequence.lt(sequence)),
                    )
                    .set(log_producers_appended::appended_sequence.eq(sequence))
                    .execute(c)
                    .await?;
                }
                Ok::<_, StorageError>(())
            })
        })
        .await
    }

    /// Which of `sequences` of `stream` already have their outputs committed
    /// (a redelivery after a crash, or a message another replica committed).
    pub async fn applied_sequences(
        &self,
        stream: &str,
        sequences: &[i64],
    ) -> Result<Vec<i64>, StorageError> {
        let stream = stream.to_owned();
        let sequences = sequences.to_vec();
        self.timed(async {
            let mut conn = self.acquire().await?;
            let found: Vec<i64> = with_conn!(&mut conn, |c| {
                log_applied::table
                    .filter(log_applied::stream.eq(&stream))
                    .filter(log_applied::sequence.eq_any(&sequences))
                    .select(log_applied::sequence)
                    .load(c)
                    .await
            })?;
            Ok(found)
        })
        .await
    }

    /// Commits the outputs of `sequences` of `stream` and records the
    /// sequences, in one transaction. If any of them is already recorded
    /// (another replica committed it meanwhile) nothing is stored:
    /// [`LogCommit::AlreadyCommitted`], and the caller lets the messages be
    /// redelivered, to be filtered by [`Self::applied_sequences`].
    ///
    /// `producers` are the (producer, sequence) of those messages that have
    /// a producer: each is recorded (`log_applied_batches`), so a batch
    /// published twice (a retry after the stream's duplicate window) is
    /// committed once, a second copy making the commit
    /// [`LogCommit::AlreadyCommitted`]; and each producer's committed
    /// sequence moves up to the highest (replicas commit a producer's
    /// batches in any order).
    pub async fn commit_applied(
        &self,
        stream: &str,
        sequences: &[i64],
        producers: &[(String, u64)],
        events: &[Event],
        letters: &[DeadLetter],
    ) -> Result<LogCommit, StorageError> {
        // Sorted, so concurrent commits by several replicas take the
        // producers' rows in one order (no deadlock).
        let mut producers: Vec<(String, i64)> = producers
            .iter()
            .map(|(p, s)| (p.clone(), i64::try_from(*s).unwrap_or(i64::MAX)))
            .collect();
        producers.sort_unstable();
        let event_rows = event_rows(events)?;
        let letter_rows = dead_letter_rows(letters)?;
        let stream = stream.to_owned();
        let sequences = sequences.to_vec();
        let now = chrono::Utc::now().timestamp_millis();
        let stores_events = !event_rows.is_empty();
        let result = self
            .write(move |mut conn| async move {
                write_transaction!(&mut conn, |c| {
                    for sequence in &sequences {
                        let inserted = diesel::insert_into(log_applied::table)
                            .values((
                                log_applied::stream.eq(&stream),
                                log_applied::sequence.eq(sequence),
                                log_applied::applied_at.eq(now),
                            ))
                            .on_conflict_do_nothing()
                            .execute(c)
                            .await?;
                        if inserted == 0 {
                            // Rolls the transaction back.
                            return Err(StorageError::Conflict(crate::Conflict::Duplicate(
                                "log_applied".to_owned(),
                            )));
                        }
                    }
                    for (producer, sequence) in &producers {
                        let inserted = diesel::insert_into(log_applied_batches::table)
                            .values((
                                log_applied_batches::producer_id.eq(producer),
                                log_applied_batches::sequence.eq(sequence),
                                log_applied_batches::applied_at.eq(now),
                            ))
                            .on_conflict_do_nothing()
                            .execute(c)
                            .await?;
                        if inserted == 0 {
                            // Committed before: rolls the transaction back.
                            return Err(StorageError::Conflict(crate::Conflict::Duplicate(
                                "log_applied".to_owned(),
                            )));
                        }
                        // Up to the highest only: the update re-checks the
                        // row once another replica's commit releases it.
                        diesel::insert_into(log_producers::table)
                            .values((
                                log_producers::producer_id.eq(producer),
                                log_producers::last_sequence.eq(sequence),
                                log_producers::last_batch_at.eq(now),
                            ))
                            .on_conflict_do_nothing()
                            .execute(c)
                            .await?;
                        diesel::update(
                            log_producers::table.filter(log_producers::producer_id.eq(producer)),
                        )
                        .set(log_producers::last_batch_at.eq(now))
                        .execute(c)
                        .await?;
                        diesel::update(
                            log_producers::table
                                .filter(log_producers::producer_id.eq(producer))
                                .filter(log_producers::last_sequence.lt(sequence)),
                        )
                        .set(log_producers::last_sequence.eq(sequence))
                        .execute(c)
                        .await?;
                    }
                    c.insert_rows(event_rows).await?;
                    for chunk in chunked(letter_rows) {
                        c.insert_rows(chunk).await?;
                    }
                    fail::fail_point!("storage-log-commit");
                    Ok::<_, StorageError>(LogCommit::Committed)
                })
            })
            .await;
        if stores_events && matches!(result, Ok(LogCommit::Committed)) {
            self.stored_signal().tick();
        }
        match result {
            Err(StorageError::Conflict(crate::Conflict::Duplicate(what)))
                if what == "log_applied" =>
            {
                Ok(LogCommit::AlreadyCommitted)
            }
            other => other,
        }
    }

    /// Forgets the producers idle for longer than `age` (no batch appended
    /// or committed since): their records on both logs and the batches
    /// recorded as committed on a shared log. Returns how many rows went. A
    /// forgotten producer's next batch is its first again (any sequence).
    /// The server keeps records 7 days, the contract's minimum.
    pub async fn forget_idle_producers(
        &self,
        age: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = millis_before_now(age);
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                let producers = diesel::delete(
                    log_producers::table.filter(log_producers::last_batch_at.lt(cutoff)),
                )
                .execute(c)
                .await?;
                let appended = diesel::delete(
                    log_producers_appended::table
                        .filter(log_producers_appended::last_batch_at.lt(cutoff)),
                )
                .execute(c)
                .await?;
                let batches = diesel::delete(
                    log_applied_batches::table.filter(log_applied_batches::applied_at.lt(cutoff)),
                )
                .execute(c)
                .await?;
                Ok::<_, StorageError>(producers + appended + batches)
            })
        })
        .await
    }

    /// Forgets recorded sequences older than `age`: a message is redelivered
    /// only within its consumer's ack wait times its deliveries, far less.
    pub async fn forget_applied_sequences(
        &self,
        age: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = millis_before_now(age);
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                Ok::<_, StorageError>(
                    diesel::delete(log_applied::table.filter(log_applied::applied_at.lt(cutoff)))
                        .execute(c)
                        .await?,
                )
            })
        })
        .await
    }
}

crate::db::insert_rows!(NewLogRow => event_log::table);

/// The Unix time in milliseconds `age` ago (the bookkeeping tables' clock).
fn millis_before_now(age: std::time::Duration) -> i64 {
    chrono::Utc::now()
        .timestamp_millis()
        .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}
