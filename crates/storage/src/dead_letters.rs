//! The dead-letter store, for operators: counts by reason, replay in
//! labelled batches (exactly once across a killed and repeated replay), and
//! purge.
//!
//! A replay takes the oldest letters in batches. Each batch is first
//! labelled ([`Database::label_dead_letters`], one transaction), then sent
//! to a server as an acknowledged batch whose producer id is the label,
//! then deleted ([`Database::delete_labelled`]). Killed after the label, the
//! next replay finds the labelled letters first
//! ([`Database::labelled_dead_letters`]) and sends them again under the same
//! label: the event log answers a duplicate if it already took them, so each
//! letter goes back into the flow once.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::db::{Database, with_conn, write_transaction};
use crate::events::StoredDeadLetter;
use crate::schema::dead_letters;

/// The dead letters of one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCount {
    /// Why they were dead-lettered.
    pub reason: String,
    /// How many.
    pub count: u64,
    /// When the oldest of them was.
    pub oldest: DateTime<Utc>,
}

/// A labelled batch of dead letters, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledBatch {
    /// The label (the replayed batch's producer id).
    pub label: String,
    /// The letters.
    pub letters: Vec<StoredDeadLetter>,
}

#[derive(Debug, Queryable)]
struct LetterRow {
    id: i64,
    body: String,
    reason: String,
    created_at: NaiveDateTime,
    replay_label: Option<String>,
}

impl LetterRow {
    fn stored(self) -> StoredDeadLetter {
        StoredDeadLetter {
            position: self.id,
            json: self.body,
            reason: self.reason,
            created_at: self.created_at.and_utc(),
        }
    }
}

type LetterColumns = (
    dead_letters::id,
    dead_letters::body,
    dead_letters::reason,
    dead_letters::created_at,
    dead_letters::replay_label,
);

const LETTER_COLUMNS: LetterColumns = (
    dead_letters::id,
    dead_letters::body,
    dead_letters::reason,
    dead_letters::created_at,
    dead_letters::replay_label,
);

impl Database {
    /// How many dead letters there are per reason, the reason with the
    /// oldest letter first.
    pub async fn dead_letter_counts(&self) -> Result<Vec<ReasonCount>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<(String, i64, Option<NaiveDateTime>)> = with_conn!(&mut conn, |c| {
                dead_letters::table
                    .group_by(dead_letters::reason)
                    .select((
                        dead_letters::reason,
                        diesel::dsl::count_star(),
                        diesel::dsl::min(dead_letters::created_at),
                    ))
                    .load(c)
                    .await
            })?;
            let mut counts: Vec<ReasonCount> = rows
                .into_iter()
                .filter_map(|(reason, count, oldest)| {
                    Some(ReasonCount {
                        reason,
                        count: u64::try_from(count).ok()?,
                        oldest: oldest?.and_utc(),
                    })
                })
                .collect();
            counts.sort_by(|a, b| a.oldest.cmp(&b.oldest).then(a.reason.cmp(&b.reason)));
            Ok(counts)
        })
        .await
    }

    /// Labels the `limit` oldest unlabelled letters with `label` and
    /// returns them (none: nothing is left to replay).
    pub async fn label_dead_letters(
        &self,
        label: &str,
        limit: u32,
    ) -> Result<Vec<StoredDeadLetter>, StorageError> {
        let label = label.to_owned();
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                let rows: Vec<LetterRow> = dead_letters::table
                    .filter(dead_letters::replay_label.is_null())
                    .order(dead_letters::id)
                    .limit(i64::from(limit))
                    .select(LETTER_COLUMNS)
                    .load(c)
                    .await?;
                let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                diesel::update(dead_letters::table.filter(dead_letters::id.eq_any(&ids)))
                    .set(dead_letters::replay_label.eq(&label))
                    .execute(c)
                    .await?;
                Ok::<_, StorageError>(rows.into_iter().map(LetterRow::stored).collect())
            })
        })
        .await
    }

    /// The batches an earlier replay labelled and did not finish, oldest
    /// first.
    pub async fn labelled_dead_letters(&self) -> Result<Vec<LabelledBatch>, StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let rows: Vec<LetterRow> = with_conn!(&mut conn, |c| {
                dead_letters::table
                    .filter(dead_letters::replay_label.is_not_null())
                    .order(dead_letters::id)
                    .select(LETTER_COLUMNS)
                    .load(c)
                    .await
            })?;
            let mut batches: Vec<LabelledBatch> = Vec::new();
            for mut row in rows {
                let label = row.replay_label.take().unwrap_or_default();
                match batches.iter_mut().find(|batch| batch.label == label) {
                    Some(batch) => batch.letters.push(row.stored()),
                    None => batches.push(LabelledBatch {
                        label,
                        letters: vec![row.stored()],
                    }),
                }
            }
            Ok(batches)
        })
        .await
    }

    /// Deletes the letters labelled `label` (their batch was acknowledged);
    /// returns how many.
    pub async fn delete_labelled(&self, label: &str) -> Result<usize, StorageError> {
        let label = label.to_owned();
        self.write(move |mut conn| async move {
            with_conn!(&mut conn, |c| {
                diesel::delete(dead_letters::table.filter(dead_letters::replay_label.eq(&label)))
                    .execute(c)
                    .await
            })
            .map_err(StorageError::from)
        })
        .await
    }

    /// Deletes up to `limit` of the letters dead-lettered before `before`
    /// (none being replayed); returns how many. Call again while it deletes
    /// a full step.
    pub async fn purge_dead_letters(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize, StorageError> {
        let before = before.naive_utc();
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                let ids: Vec<i64> = dead_letters::table
                    .filter(dead_letters::created_at.lt(before))
                    .filter(dead_letters::replay_label.is_null())
                    .order(dead_letters::id)
                    .limit(i64::from(limit))
                    .select(dead_letters::id)
                    .load(c)
                    .await?;
                Ok::<_, StorageError>(
                    diesel::delete(dead_letters::table.filter(dead_letters::id.eq_any(&ids)))
                        .execute(c)
                        .await?,
                )
            })
        })
        .await
    }
}
