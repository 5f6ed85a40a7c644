//! `orderflow events import|export|follow`: operators backfill and audit the
//! event store. Import stores lines exactly as given (validated, no
//! transforms) in one transaction; export writes the stored text back
//! untouched; follow prints what a running server stores, as it stores it.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use domain::{Event, WriteId};
use storage::{Database, EventStore, StorageError};
use tokio::io::AsyncReadExt as _;

/// Attempts at an import whose commit goes unconfirmed.
const IMPORT_ATTEMPTS: u32 = 3;

/// Imports `file` (`-` for standard input); returns how many were stored.
pub async fn import(db: &Database, file: &str) -> anyhow::Result<usize> {
    let mut bytes = Vec::new();
    if file == "-" {
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .context("cannot read standard input")?;
    } else {
        bytes = tokio::fs::read(file)
            .await
            .with_context(|| format!("cannot read {file}"))?;
    }
    let events = match Event::parse_json_lines(&bytes) {
        Ok(events) => events,
        Err(bad) => bail!("{bad}; nothing was imported"),
    };
    // One write id for every attempt: a repeat after an unconfirmed commit
    // stores nothing twice.
    let write = WriteId::generate();
    let mut attempt = 1;
    loop {
        match db.import_events(write, &events).await {
            Ok(_) => return Ok(events.len()),
            Err(StorageError::OutcomeUnknown(reason)) if attempt < IMPORT_ATTEMPTS => {
                tracing::warn!(%reason, attempt, "import not confirmed; repeating it");
                attempt += 1;
            }
            Err(error @ StorageError::OutcomeUnknown(_)) => {
                return Err(error).context(
                    "the import was sent but not confirmed: it may have been stored; \
                     check with `orderflow events export` before importing again",
                );
            }
            Err(error) => {
                return Err(error).context("storing the events failed; nothing was imported");
            }
        }
    }
}

/// Writes every stored event to standard output, in storage order.
pub async fn export(db: &Database) -> anyhow::Result<usize> {
    const PAGE: u32 = 1_000;
    let mut after = None;
    let mut written = 0;
    loop {
        let page = db
            .read_events(after, PAGE)
            .await
            .context("reading the event store failed")?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        // Lock stdout per page, between awaits, never across one.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for event in &page {
            out.write_all(event.json.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        written += page.len();
    }
    Ok(written)
}

/// Prints the events stored after `after` on the server at `endpoint`, then
/// each new one as it is stored, one JSON line each:
/// `{"position":N,"stored_at":"…","event":{…}}`, the event in its canonical
/// stored form. Runs until interrupted; a restart of the server is
/// followed through (`orderflow_proto::Follow`).
pub async fn follow(
    endpoint: &str,
    token: Option<&str>,
    after: u64,
    actions: Vec<String>,
) -> anyhow::Result<()> {
    let client = connect(endpoint, token).await?;
    let mut follow = client.follow(after).actions(actions);
    loop {
        let page = follow.next_page().await.map_err(|status| {
            anyhow::anyhow!(
                "the subscription failed after position {}: {}",
                follow.position(),
                status.message()
            )
        })?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for stored in page.events {
            let event = match stored.event {
                Some(wire) => event_from_wire(wire)
                    .and_then(|event| Ok(event.to_json()?))
                    .with_context(|| format!("position {}", stored.position))?,
                None => "null".to_owned(),
            };
            let stored_at = stored
                .stored_at
                .and_then(|at| {
                    chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
                })
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            // The event as stored, key order and all (a JSON value would
            // sort its keys).
            writeln!(
                out,
                "{{\"position\":{},\"stored_at\":{},\"event\":{event}}}",
                stored.position,
                serde_json::to_string(&stored_at)?,
            )?;
        }
        out.flush()?;
    }
}

/// A client of the server at `endpoint`, sending `token` when there is one
/// (the commands that talk to a running server: follow, dead-letter replay).
pub(crate) async fn connect(
    endpoint: &str,
    token: Option<&str>,
) -> anyhow::Result<orderflow_proto::Client> {
    let mut client = orderflow_proto::Client::builder(endpoint);
    if let Some(token) = token {
        client = client.bearer_token(token);
    }
    client
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))
}

/// A wire event as a domain event (every field was valid when stored).
fn event_from_wire(wire: orderflow_proto::proto::Event) -> anyhow::Result<Event> {
    let mut event = Event::new(
        domain::UserId::parse(wire.user_id)?,
        domain::Action::parse(&wire.action)?,
    );
    if !wire.event_id.is_empty() {
        event.event_id = Some(domain::EventId::parse(wire.event_id)?);
    }
    event.occurred_at = wire
        .occurred_at
        .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
        .map(domain::Timestamp::from_datetime);
    event.amount_cents = wire.amount_cents.map(domain::Cents::new);
    event.attributes = domain::Attributes::from_client("attributes", wire.attributes)?;
    Ok(event)
}
