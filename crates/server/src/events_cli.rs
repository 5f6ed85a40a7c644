//! `orderflow events import|export`: operators backfill and audit the event
//! store. Import stores lines exactly as given (validated, no transforms) in
//! one transaction; export writes the stored text back untouched.

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
        match db.append_events(write, &events).await {
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
