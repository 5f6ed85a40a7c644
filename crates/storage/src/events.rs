//! The event store and the dead-letter store.
//!
//! Events are kept as their canonical JSON text (see `domain::Event`), in
//! the order stored; reading returns that text untouched, so an export is
//! byte for byte what was imported.

use std::future::Future;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::{DeadLetter, Event, WriteId};

use crate::StorageError;
use diesel::connection::DefaultLoadingMode;

use crate::db::{Conn, Database, Written, insert_rows, with_conn};
use crate::schema::{dead_letters, events};

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the store; increases in storage order.
    pub position: i64,
    /// The canonical JSON, exactly as stored.
    pub json: String,
    /// When it was stored.
    pub received_at: DateTime<Utc>,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// Position in the store.
    pub position: i64,
    /// The event's canonical JSON.
    pub json: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Where processed events go.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` in one transaction: all are stored, in order, or
    /// none. Idempotent per `write`: repeating a call with the same id (after
    /// `OutcomeUnknown`, say) stores nothing the first call stored.
    fn append_events(
        &self,
        write: WriteId,
        events: &[Event],
    ) -> impl Future<Output = Result<Written, StorageError>> + Send;

    /// Up to `limit` events stored after `after` (a position; `None` from the
    /// start), in storage order.
    fn read_events(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StorageError>> + Send;
}

/// Where events that could not be processed go.
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Stores `letters` in one transaction; idempotent per `write`, as
    /// [`EventStore::append_events`]. A batch whose append failed goes here
    /// under the append's write id: [`Written::StoredElsewhere`] then says
    /// the append committed after all, and nothing was dead-lettered.
    fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<Written, StorageError>> + Send;

    /// Up to `limit` dead letters after `after`, oldest first.
    fn read_dead_letters(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredDeadLetter>, StorageError>> + Send;
}

// `None` as NULL (the column has no default): then rows carry no DEFAULT
// and SQLite takes a chunk as one multi-row INSERT, not one statement per
// row.
#[derive(Debug, Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub(crate) struct NewEventRow {
    pub(crate) event_id: Option<String>,
    pub(crate) body: String,
    pub(crate) received_at: Stamp,
}

impl NewEventRow {
    /// Roughly what the row adds to a statement: its texts and its stamp.
    pub(crate) fn bytes(&self) -> usize {
        self.event_id.as_ref().map_or(0, String::len) + self.body.len() + 8
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = events)]
struct EventRow {
    id: i64,
    body: String,
    #[diesel(deserialize_as = StoredAt)]
    received_at: NaiveDateTime,
}

/// The query for the page of up to `$limit` events after `$after`.
macro_rules! page_query {
    ($after:expr, $limit:expr) => {
        events::table
            .filter(events::id.gt($after))
            .order(events::id)
            .limit(i64::from($limit))
            .select(EventRow::as_select())
    };
}

/// `received_at` as read back. SQLite keeps it as the text [`Stamp`]
/// wrote (`%F %T%.f`), and diesel's own reading copies the text and tries
/// several formats in turn through chrono's format machinery, a cost that
/// showed in a profile of subscriptions catching up (7% of the server's
/// time); this reads the one format in place and hands anything else to
/// chrono. PostgreSQL's binary form goes to diesel as it is.
struct StoredAt(NaiveDateTime);

impl From<StoredAt> for NaiveDateTime {
    fn from(at: StoredAt) -> Self {
        at.0
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Timestamp, diesel::sqlite::Sqlite>
    for StoredAt
{
    fn from_sql(
        mut value: diesel::sqlite::SqliteValue<'_, '_, '_>,
    ) -> diesel::deserialize::Result<Self> {
        let text = value.read_text();
        // The rows of one commit share their stamp, so a page read is
        // mostly one stamp again and again: remember the last one parsed
        // on this thread (a fifth of building a row was parsing it).
        thread_local! {
            static LAST: std::cell::RefCell<Option<(String, NaiveDateTime)>> =
                const { std::cell::RefCell::new(None) };
        }
        let known = LAST.with_borrow(|last| {
            last.as_ref()
                .and_then(|(last, at)| (last == text).then_some(*at))
        });
        if let Some(at) = known {
            return Ok(Self(at));
        }
        match parse_stamp(text) {
            Some(at) => {
                LAST.set(Some((text.to_owned(), at)));
                Ok(Self(at))
            }
            None => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                .map(Self)
                .map_err(|e| format!("unreadable timestamp {text:?}: {e}").into()),
        }
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Timestamp, diesel::pg::Pg> for StoredAt {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        <NaiveDateTime as diesel::deserialize::FromSql<
            diesel::sql_types::Timestamp,
            diesel::pg::Pg,
        >>::from_sql(value)
        .map(Self)
    }
}

impl<DB> diesel::deserialize::Queryable<diesel::sql_types::Timestamp, DB> for StoredAt
where
    DB: diesel::backend::Backend,
    Self: diesel::deserialize::FromSql<diesel::sql_types::Timestamp, DB>,
{
    type Row = Self;
    fn build(row: Self) -> diesel::deserialize::Result<Self> {
        Ok(row)
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f{1,9}]`, the form [`Stamp`] writes; `None` for
/// anything else.
fn parse_stamp(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() < 19
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b' ')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let mut nanos = 0;
    if b.len() > 19 {
        let fraction = b.get(20..)?;
        if b.get(19) != Some(&b'.') || fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        let digits = num(20..b.len())?;
        nanos = digits * 10u32.pow(9 - u32::try_from(fraction.len()).ok()?);
    }
    let time =
        chrono::NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    Some(NaiveDateTime::new(date, time))
}

#[derive(Debug, Insertable)]
#[diesel(table_name = dead_letters)]
pub(crate) struct NewDeadLetterRow {
    body: String,
    reason: String,
    created_at: Stamp,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = dead_letters)]
struct DeadLetterRow {
    id: i64,
    body: String,
    reason: String,
    created_at: NaiveDateTime,
}

/// One instant stamped on every row of a batch. SQLite keeps timestamps as
/// text, and diesel would format the same instant once per row; this
/// formats it once, exactly as diesel does (`%F %T%.f`). PostgreSQL binds
/// the instant itself.
#[derive(Debug, Clone, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Timestamp)]
pub(crate) struct Stamp {
    at: NaiveDateTime,
    text: std::sync::Arc<str>,
}

impl Stamp {
    /// The instant.
    pub(crate) fn at(&self) -> NaiveDateTime {
        self.at
    }

    /// Now, to the microsecond (what PostgreSQL keeps).
    pub(crate) fn now() -> Self {
        let at = Utc::now().trunc_subsecs(6).naive_utc();
        Self {
            at,
            text: at.format("%F %T%.f").to_string().into(),
        }
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::sqlite::Sqlite> for Stamp {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
    ) -> diesel::serialize::Result {
        out.set_value(&*self.text);
        Ok(diesel::serialize::IsNull::No)
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::pg::Pg> for Stamp {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        diesel::serialize::ToSql::<diesel::sql_types::Timestamp, diesel::pg::Pg>::to_sql(
            &self.at, out,
        )
    }
}

insert_rows!(NewDeadLetterRow => dead_letters::table);

pub(crate) fn json_of(event: &Event) -> Result<String, StorageError> {
    event
        .to_json()
        .map_err(|e| StorageError::Internal(e.to_string()))
}

/// The rows that store `events`, stamped now.
pub(crate) fn event_rows(events: &[Event]) -> Result<Vec<NewEventRow>, StorageError> {
    let received_at = Stamp::now();
    events
        .iter()
        .map(|event| {
            Ok(NewEventRow {
                event_id: event.event_id.as_ref().map(ToString::to_string),
                body: json_of(event)?,
                received_at: received_at.clone(),
            })
        })
        .collect()
}

/// The rows that store `letters`, stamped now.
pub(crate) fn dead_letter_rows(
    letters: &[DeadLetter],
) -> Result<Vec<NewDeadLetterRow>, StorageError> {
    let created_at = Stamp::now();
    letters
        .iter()
        .map(|letter| {
            Ok(NewDeadLetterRow {
                body: json_of(&letter.event)?,
                reason: letter.reason.clone(),
                created_at: created_at.clone(),
            })
        })
        .collect()
}

impl EventStore for Database {
    async fn append_events(
        &self,
        write: WriteId,
        batch: &[Event],
    ) -> Result<Written, StorageError> {
        self.store_events(write, batch, true).await
    }

    async fn read_events(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<EventRow> = with_conn!(&mut conn, |c| {
                page_query!(after.unwrap_or(0), limit).load(c).await
            })?;
            Ok(rows.into_iter().map(StoredEvent::from).collect())
        })
        .await
    }
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        Self {
            position: row.id,
            json: row.body,
            received_at: row.received_at.and_utc(),
        }
    }
}

impl Database {
    /// [`EventStore::read_events`] folded as it is read: hands each of up
    /// to `limit` events after `after` to `step`, in storage order, with
    /// `state`, and returns the state. On SQLite the rows are folded on the
    /// connection's own thread straight from the statement; collecting them
    /// first (diesel's owned copy of every value, then the events) was a
    /// fifth of the time a subscriber catching up cost the server.
    pub async fn fold_events<S, F>(
        &self,
        after: Option<i64>,
        limit: u32,
        state: S,
        mut step: F,
    ) -> Result<S, StorageError>
    where
        S: Send + 'static,
        F: FnMut(&mut S, StoredEvent) + Send + 'static,
    {
        let after = after.unwrap_or(0);
        self.timed(async move {
            let mut conn = self.acquire().await?;
            let mut state = state;
            match &mut conn {
                Conn::Postgres(c) => {
                    let rows: Vec<EventRow> = page_query!(after, limit).load(&mut **c).await?;
                    for row in rows {
                        step(&mut state, row.into());
                    }
                    Ok(state)
                }
                Conn::Sqlite(c) => Ok(c
                    .spawn_blocking(move |c| {
                        let rows = diesel::RunQueryDsl::load_iter::<EventRow, DefaultLoadingMode>(
                            page_query!(after, limit),
                            c,
                        )?;
                        for row in rows {
                            step(&mut state, row?.into());
                        }
                        Ok(state)
                    })
                    .await?),
            }
        })
        .await
    }

    /// [`EventStore::append_events`] for an import: one transaction, all or
    /// nothing, answered with its real outcome however long it takes (a
    /// large file outlasts the operation budget that bounds the server's
    /// writes).
    pub async fn import_events(
        &self,
        write: WriteId,
        batch: &[Event],
    ) -> Result<Written, StorageError> {
        self.store_events(write, batch, false).await
    }

    /// Stores `batch` idempotently per `write` (bounded by the operation
    /// budget or not) and wakes the subscribers if it stored anything.
    async fn store_events(
        &self,
        write: WriteId,
        batch: &[Event],
        bounded: bool,
    ) -> Result<Written, StorageError> {
        let rows = event_rows(batch)?;
        let written = self
            .insert_all_within(write, "events", rows, bounded)
            .await?;
        if written == Written::Stored {
            self.stored_signal().tick();
        }
        Ok(written)
    }
}

impl DeadLetterStore for Database {
    async fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> Result<Written, StorageError> {
        let rows = dead_letter_rows(letters)?;
        self.insert_all(write, "dead_letters", rows).await
    }

    async fn read_dead_letters(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredDeadLetter>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<DeadLetterRow> = with_conn!(&mut conn, |c| {
                dead_letters::table
                    .filter(dead_letters::id.gt(after.unwrap_or(0)))
                    .order(dead_letters::id)
                    .limit(i64::from(limit))
                    .select(DeadLetterRow::as_select())
                    .load(c)
                    .await
            })?;
            Ok(rows
                .into_iter()
                .map(|row| StoredDeadLetter {
                    position: row.id,
                    json: row.body,
                    reason: row.reason,
                    created_at: row.created_at.and_utc(),
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::{Stamp, parse_stamp};

    #[test]
    fn stored_stamps_read_back_as_written() {
        let stamp = Stamp::now();
        assert_eq!(parse_stamp(&stamp.text), Some(stamp.at));
        for text in [
            "2026-12-04 18:30:01",
            "2026-12-04 18:30:01.5",
            "2026-12-04 18:30:01.123456789",
        ] {
            let chrono = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
            assert_eq!(parse_stamp(text), Some(chrono), "{text}");
        }
        for odd in [
            "2026-12-04T18:30:01",
            "2026-12-04 18:30:01.",
            "2026-13-04 18:30:01",
            "2026-12-04 18:30",
            "x",
        ] {
            assert_eq!(parse_stamp(odd), None, "{odd}");
        }
    }
}
