//! `orderflow dead-letters list|replay|purge`: what could not be processed,
//! counted, sent back into the flow, or deleted.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use domain::Event;
use orderflow_proto::Reason;
use orderflow_proto::proto::EventBatch;
use storage::{Database, DeadLetterStore as _, StoredDeadLetter};

/// Letters a purge deletes per transaction.
const PURGE_STEP: u32 = 5_000;
/// The longest wait between attempts to send a batch the server could not
/// take yet (a full backlog, an unavailable log, a restart).
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Prints the counts by reason (oldest first), then the `limit` oldest
/// letters as JSON lines.
pub async fn list(db: &Database, limit: u32) -> anyhow::Result<()> {
    let counts = db
        .dead_letter_counts()
        .await
        .context("reading the dead letters failed")?;
    {
        let mut out = std::io::stdout().lock();
        let total: u64 = counts.iter().map(|c| c.count).sum();
        writeln!(out, "{total} dead letters")?;
        for count in &counts {
            writeln!(
                out,
                "{:>10}  oldest {}  {}",
                count.count,
                count
                    .oldest
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                domain::quote(&count.reason)
            )?;
        }
    }
    if limit > 0 {
        let letters = db
            .read_dead_letters(None, limit)
            .await
            .context("reading the dead letters failed")?;
        let mut out = std::io::stdout().lock();
        for letter in letters {
            writeln!(
                out,
                "{{\"id\":{},\"created_at\":{},\"reason\":{},\"event\":{}}}",
                letter.position,
                serde_json::to_string(
                    &letter
                        .created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                )?,
                serde_json::to_string(&letter.reason)?,
                letter.json
            )?;
        }
    }
    Ok(())
}

/// Sends every dead letter back through the server at `endpoint`, in
/// labelled batches of `batch` (see `storage`'s dead-letter module for why
/// this is exactly once), printing progress to standard error.
pub async fn replay(
    db: &Database,
    endpoint: &str,
    token: Option<&str>,
    batch: u32,
) -> anyhow::Result<()> {
    let mut events = crate::events_cli::connect(endpoint, token).await?.events();
    let total: u64 = db
        .dead_letter_counts()
        .await
        .context("reading the dead letters failed")?
        .iter()
        .map(|c| c.count)
        .sum();
    let mut replayed = 0u64;
    // What a killed replay left labelled goes first, under its own label.
    let mut pending: Vec<(String, Vec<StoredDeadLetter>)> = db
        .labelled_dead_letters()
        .await
        .context("reading the dead letters failed")?
        .into_iter()
        .map(|b| (b.label, b.letters))
        .collect();
    loop {
        let (label, letters) = match pending.pop() {
            Some(next) => next,
            None => {
                let label = format!("dead-letters/{}", domain::WriteId::generate());
                let letters = db
                    .label_dead_letters(&label, batch)
                    .await
                    .context("labelling dead letters failed")?;
                if letters.is_empty() {
                    break;
                }
                (label, letters)
            }
        };
        let wire = letters
            .iter()
            .map(|letter| {
                Event::from_json(&letter.json)
                    .map(|event| grpc_api::convert::event_to_wire(&event))
                    .with_context(|| format!("dead letter {} does not parse", letter.position))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        send(
            &mut events,
            EventBatch {
                producer_id: label.clone(),
                sequence: 1,
                events: wire,
            },
        )
        .await?;
        db.delete_labelled(&label)
            .await
            .context("deleting replayed dead letters failed (run the replay again)")?;
        replayed += letters.len() as u64;
        eprintln!("replayed {replayed} of {total} dead letters");
    }
    eprintln!("replay done: {replayed} dead letters back in the pipeline");
    Ok(())
}

/// Sends `batch` until the server acknowledges it (new or a duplicate),
/// waiting out what a retry can cure.
async fn send(events: &mut orderflow_proto::EventClient, batch: EventBatch) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(100);
    loop {
        match events.publish_event_batch(batch.clone()).await {
            Ok(_) => return Ok(()),
            Err(status) => {
                let retry = matches!(
                    orderflow_proto::reason(&status),
                    Some(
                        Reason::EventLogFull
                            | Reason::EventLogUnavailable
                            | Reason::DatabaseUnavailable
                            | Reason::ShuttingDown
                            | Reason::Overloaded
                            | Reason::StorageFull
                            | Reason::OutcomeUnknown
                    )
                ) || status.code() == tonic::Code::Unavailable;
                if !retry {
                    bail!(
                        "the server refused batch {}: {} ({:?}); its letters stay labelled, \
                         and a later replay sends them again",
                        batch.producer_id,
                        status.message(),
                        status.code()
                    );
                }
                eprintln!(
                    "the server cannot take the batch yet ({}); retrying",
                    status.message()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Deletes the letters dead-lettered before `before`, in steps, printing
/// progress to standard error.
pub async fn purge(db: &Database, before: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    let mut purged = 0usize;
    loop {
        let step = db
            .purge_dead_letters(before, PURGE_STEP)
            .await
            .context("purging dead letters failed")?;
        purged += step;
        if step > 0 {
            eprintln!("purged {purged} dead letters");
        }
        if step < PURGE_STEP as usize {
            break;
        }
    }
    eprintln!("purge done: {purged} dead letters from before {before} deleted");
    Ok(())
}
