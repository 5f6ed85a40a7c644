//! The stored events as a feed a subscriber can follow: positions in commit
//! order, a wake-up when events are stored, and retention.
//!
//! **Positions follow commit order.** An event's position is its `events.id`.
//! A subscriber reads `id > last` and moves `last` up; that is only complete
//! if no event ever becomes visible with an id below one already read.
//! - SQLite has one writer: ids (`AUTOINCREMENT`, never reused) are taken
//!   inside the write transaction, so they commit in order.
//! - PostgreSQL hands out identity values at insert time, and concurrent
//!   transactions commit in any order: the classic outbox gap. So every
//!   insert into `events` first takes one transaction-scoped advisory lock
//!   ([`EVENTS_LOCK`], in this module's `InsertRows` impl, the only way rows
//!   reach the table). The lock is released only after the commit is
//!   visible, so the next writer takes its ids after every earlier id is
//!   committed or rolled back (the identity's sequence caches one value, so
//!   ids follow the order they are taken). Writers of events serialise for
//!   the rest of their transaction; each takes the lock as late as it can.
//!   The one exception is the log consumer's commit
//!   ([`InsertEventsEarly`]): it holds the lock shared, so that its commit
//!   and the next one can write their rows side by side. Each reserves
//!   its ids as one block (`reserve_event_ids`), and lands only after the
//!   commit before it and only if no committed event lies above its block
//!   (`Database::commit_log`), so ids still become visible in order.
//!
//! **Wake-ups.** Each replica's [`StoredSignal`] ticks after a commit that
//! stored events. On PostgreSQL the same insert also `NOTIFY`s
//! [`EVENTS_STORED_CHANNEL`], delivered only if it commits; each replica's
//! change feed (`crate::listen`) ticks its signal on it, so a subscriber on
//! one replica wakes for events another stored.
//!
//! **Retention** removes a prefix of positions: everything at or below
//! `events_expired.through`. A subscription from below it is told so
//! instead of silently skipping what it missed.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamp};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;
use crate::db::{
    Database, InsertRows, SqliteConn, chunked, chunked_within, with_conn, write_transaction,
};
use crate::events::NewEventRow;
use crate::schema::{events, events_expired};

/// The channel every commit that stored events is announced on (PostgreSQL
/// `NOTIFY`), for the other replicas' subscribers.
pub const EVENTS_STORED_CHANNEL: &str = "orderflow_events";

/// Advisory-lock key that orders inserts into `events` on PostgreSQL
/// ("evtpos").
pub(crate) const EVENTS_LOCK: i64 = 0x0000_6576_7470_6f73;

/// Ticks when events were stored: by this process (after its commit) or, on
/// PostgreSQL, by any replica (through the change feed). Subscribers wait
/// on [`StoredSignal::subscribe`]'s receiver, then read the store.
#[derive(Debug, Clone)]
pub struct StoredSignal(std::sync::Arc<tokio::sync::watch::Sender<u64>>);

impl Default for StoredSignal {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl StoredSignal {
    /// Events were stored: wakes every waiting subscriber.
    pub fn tick(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every tick from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Most events in one array insert on PostgreSQL.
const EVENTS_PER_ARRAY_INSERT: usize = 10_000;

/// Most bytes of events in one array insert on PostgreSQL (an event
/// larger than that goes alone). A log commit's events in one statement
/// (up to 10,000, ~2.5 MB) made the server's memory rise by ~30 MB over the
/// first minutes of an overload, likely because tokio-postgres keeps a
/// connection's send buffers as large as the largest statement it sent;
/// in pieces of this size it stays flat (docs/benchmarks.md, session 22).
const EVENT_BYTES_PER_ARRAY_INSERT: usize = 256 * 1024;

/// A log commit's outputs, written before the commit knows its place in
/// commit order: on PostgreSQL a commit writes its rows while the one before
/// it may still be on its way (module docs).
pub(crate) trait InsertEventsEarly {
    /// Inserts `rows`, answering the highest id they may have taken if the
    /// commit must check, before it lands, that no committed event lies
    /// above it (PostgreSQL); `None` on SQLite, whose one writer takes ids in
    /// commit order, and for no rows.
    fn insert_events_early(
        &mut self,
        rows: Vec<NewEventRow>,
    ) -> impl Future<Output = QueryResult<Option<i64>>> + Send;
}

#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = BigInt)]
    first: i64,
}

impl InsertEventsEarly for AsyncPgConnection {
    async fn insert_events_early(&mut self, rows: Vec<NewEventRow>) -> QueryResult<Option<i64>> {
        if rows.is_empty() {
            return Ok(None);
        }
        // Shared: excludes every other writer, not the next commit.
        diesel::sql_query("SELECT pg_advisory_xact_lock_shared($1), pg_notify($2, '')")
            .bind::<BigInt, _>(EVENTS_LOCK)
            .bind::<Text, _>(EVENTS_STORED_CHANNEL)
            .execute(self)
            .await?;
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let first = diesel::sql_query("SELECT reserve_event_ids($1) AS first")
            .bind::<BigInt, _>(count)
            .get_result::<Reserved>(self)
            .await?
            .first;
        // The pieces are sent at once: diesel-async pipelines statements
        // polled together on one connection, so a piece costs PostgreSQL's
        // work, not a round trip.
        let conn: &AsyncPgConnection = self;
        let mut next = first;
        let pieces = chunked_within(
            rows,
            EVENTS_PER_ARRAY_INSERT,
            EVENT_BYTES_PER_ARRAY_INSERT,
            NewEventRow::bytes,
        )
        .into_iter()
        .map(|piece| {
            let at = next;
            next += i64::try_from(piece.len()).unwrap_or(i64::MAX);
            insert_array(conn, piece, Some(at))
        });
        futures_util::future::try_join_all(pieces).await?;
        Ok(Some(first + count - 1))
    }
}

impl InsertEventsEarly for SqliteConn {
    async fn insert_events_early(&mut self, rows: Vec<NewEventRow>) -> QueryResult<Option<i64>> {
        self.insert_rows(rows).await.map(|_| None)
    }
}

/// Takes any number of rows, in the pieces its statement allows.
impl InsertRows<NewEventRow> for AsyncPgConnection {
    async fn insert_rows(&mut self, rows: Vec<NewEventRow>) -> QueryResult<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        // Ordered after every earlier writer's commit (module docs), and
        // announced if this transaction commits.
        diesel::sql_query("SELECT pg_advisory_xact_lock($1), pg_notify($2, '')")
            .bind::<BigInt, _>(EVENTS_LOCK)
            .bind::<Text, _>(EVENTS_STORED_CHANNEL)
            .execute(self)
            .await?;
        let mut stored = 0;
        for piece in chunked_within(
            rows,
            EVENTS_PER_ARRAY_INSERT,
            EVENT_BYTES_PER_ARRAY_INSERT,
            NewEventRow::bytes,
        ) {
            stored += insert_array(self, piece, None).await?;
        }
        Ok(stored)
    }
}

/// `rows` as one statement of three arrays: its text never changes, so it
/// is parsed and planned once per connection, where a VALUES list is a new
/// statement of three parameters a row. Ids come from the identity, or
/// from `first` on (reserved by the caller), in the rows' order: `WITH
/// ORDINALITY` numbers them.
async fn insert_array(
    mut conn: &AsyncPgConnection,
    rows: Vec<NewEventRow>,
    first: Option<i64>,
) -> QueryResult<usize> {
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    let mut stamps = Vec::with_capacity(rows.len());
    for row in rows {
        event_ids.push(row.event_id);
        bodies.push(row.body);
        stamps.push(row.received_at.at());
    }
    match first {
        None => {
            diesel::sql_query(
                "INSERT INTO events (event_id, body, received_at) \
                 SELECT e, b, r FROM unnest($1, $2, $3) WITH ORDINALITY AS t(e, b, r, n) \
                 ORDER BY n",
            )
            .bind::<Array<Nullable<Text>>, _>(event_ids)
            .bind::<Array<Text>, _>(bodies)
            .bind::<Array<Timestamp>, _>(stamps)
            .execute(&mut conn)
            .await
        }
        Some(first) => {
            diesel::sql_query(
                "INSERT INTO events (id, event_id, body, received_at) OVERRIDING SYSTEM VALUE \
                 SELECT $4 + n - 1, e, b, r FROM unnest($1, $2, $3) WITH ORDINALITY AS t(e, b, r, n)",
            )
            .bind::<Array<Nullable<Text>>, _>(event_ids)
            .bind::<Array<Text>, _>(bodies)
            .bind::<Array<Timestamp>, _>(stamps)
            .bind::<BigInt, _>(first)
            .execute(&mut conn)
            .await
        }
    }
}

/// Takes any number of rows: VALUES lists within SQLite's parameter limit,
/// in one blocking-pool hop.
impl InsertRows<NewEventRow> for SqliteConn {
    async fn insert_rows(&mut self, rows: Vec<NewEventRow>) -> QueryResult<usize> {
        // One writer: ids are taken in commit order already.
        self.spawn_blocking(move |c| {
            let mut stored = 0;
            for piece in chunked(rows) {
                stored += diesel::RunQueryDsl::execute(
                    diesel::insert_into(events::table).values(piece),
                    c,
                )?;
            }
            Ok(stored)
        })
        .await
    }
}

/// What one retention step removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Events removed by this step.
    pub events: u64,
    /// Every position at or below this one is gone now.
    pub through: i64,
}

/// Advisory-lock key that keeps replicas' retention steps apart on
/// PostgreSQL ("evtexp").
const RETENTION_LOCK: i64 = 0x0000_6576_7465_7870;

impl Database {
    /// The signal that ticks when events are stored.
    pub fn stored_signal(&self) -> &StoredSignal {
        &self.inner.stored
    }

    /// Every position at or below this one was removed by retention (0:
    /// none was).
    pub async fn expired_through(&self) -> Result<i64, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let through: Option<i64> = with_conn!(&mut conn, |c| {
                events_expired::table
                    .select(events_expired::through)
                    .first(c)
                    .await
                    .optional()
            })?;
            Ok(through.unwrap_or(0))
        })
        .await
    }

    /// When the oldest event still stored was stored (`None`: none is).
    pub async fn oldest_event_at(&self) -> Result<Option<chrono::DateTime<Utc>>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let oldest = with_conn!(&mut conn, |c| {
                events::table
                    .order(events::id)
                    .select(events::received_at)
                    .first::<chrono::NaiveDateTime>(c)
                    .await
                    .optional()
            })?;
            Ok(oldest.map(|at| at.and_utc()))
        })
        .await
    }

    /// One bounded retention step: removes the oldest events, at most
    /// `step` of them, as long as each was stored more than `age` ago. Only a
    /// prefix of positions goes, so "everything at or below `through` is
    /// gone" stays exact even where `received_at` is not in position order
    /// (replicas' clocks). Call it again while it removes a full step.
    pub async fn expire_events(
        &self,
        age: std::time::Duration,
        step: u32,
    ) -> Result<Expired, StorageError> {
        let age = chrono::Duration::from_std(age)
            .map_err(|e| StorageError::Internal(format!("retention out of range: {e}")))?;
        let cutoff = (Utc::now() - age).naive_utc();
        let serialise = self.backend() == crate::Backend::Postgres;
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                if serialise {
                    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                        .bind::<BigInt, _>(RETENTION_LOCK)
                        .execute(c)
                        .await?;
                }
                let through: i64 = events_expired::table
                    .select(events_expired::through)
                    .first(c)
                    .await
                    .optional()?
                    .unwrap_or(0);
                let oldest: Vec<(i64, chrono::NaiveDateTime)> = events::table
                    .filter(events::id.gt(through))
                    .order(events::id)
                    .limit(i64::from(step))
                    .select((events::id, events::received_at))
                    .load(c)
                    .await?;
                let last = oldest
                    .iter()
                    .take_while(|(_, at)| *at < cutoff)
                    .last()
                    .map(|(id, _)| *id);
                let Some(last) = last else {
                    return Ok::<_, StorageError>(Expired { events: 0, through });
                };
                let removed = diesel::delete(
                    events::table
                        .filter(events::id.gt(through))
                        .filter(events::id.le(last)),
                )
                .execute(c)
                .await?;
                diesel::insert_into(events_expired::table)
                    .values((events_expired::id.eq(1), events_expired::through.eq(last)))
                    .on_conflict(events_expired::id)
                    .do_update()
                    .set(events_expired::through.eq(last))
                    .execute(c)
                    .await?;
                Ok(Expired {
                    events: u64::try_from(removed).unwrap_or(u64::MAX),
                    through: last,
                })
            })
        })
        .await
    }
}
