//! The log consumer: takes batches after its cursor (handed over, or read
//! from the log), runs the pipeline, commits outputs and cursor together,
//! then frees the batches' room in the bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::DeadLetter;
use tokio::sync::watch;

use super::bound::Bound;
use super::handoff::{self, Next};
use super::{EventLog, LogRecord};
use crate::pipeline::BatchOutcome;
use crate::sink::SinkErrorKind;
use crate::stats::{Counters, Settled};

/// How long an idle consumer waits before looking at the log again even
/// without a wake-up (appends by another process).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Delay before repeating a failed read or commit; doubles up to a second.
const RETRY: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

pub(super) struct Consumer<L> {
    pub(super) log: Arc<L>,
    pub(super) pipeline: crate::Pipeline,
    pub(super) bound: Arc<Bound>,
    pub(super) counters: Arc<Counters>,
    pub(super) handoff: Arc<handoff::Shared>,
    pub(super) cursor: i64,
    pub(super) read_batches: u32,
}

/// Whether the engine said stop, or is gone without saying it.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

impl<L: EventLog> Consumer<L> {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut out = BatchOutcome::default();
        let mut delay = RETRY;
        while !stopping(&stop) {
            if let Some(done) = self.handoff.resync_requested() {
                self.resync().await;
                let _ = done.send(());
            }
            let next = if self.bound.owned() {
                self.handoff
                    .lock()
                    .next(self.cursor, self.read_batches as usize)
            } else {
                Next::Read
            };
            let records = match next {
                Next::Process(records) => records,
                Next::Wait => Vec::new(),
                Next::Read => match self.log.read(self.cursor, self.read_batches).await {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::warn!(%error, "reading the event log failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                        continue;
                    }
                },
            };
            if records.is_empty() {
                tokio::select! {
                    () = self.handoff.appended.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    // An error: the engine is gone; the loop's check ends it.
                    _ = stop.changed() => {}
                }
                continue;
            }
            self.process(records, &mut out).await;
            delay = RETRY;
        }
        self.handoff.consumer_stopped();
        tracing::debug!(cursor = self.cursor, "event log consumer stopped");
    }

    /// Sets the backlog to what the log holds after the cursor (the writer
    /// waits meanwhile, so no append is in flight): events of an append of
    /// unknown outcome that never joined the log leave the backlog and the
    /// counters.
    async fn resync(&mut self) {
        let mut delay = RETRY;
        let held = loop {
            match self.log.backlog().await {
                Ok(held) => break held,
                Err(error) => {
                    tracing::warn!(%error, "counting the event log's backlog failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        };
        let absent = self.bound.backlog().saturating_sub(held);
        if absent > 0 {
            self.counters.retract(absent);
            self.bound.leave(absent);
        }
        tracing::info!(backlog = held, absent, "event log backlog recounted");
    }

    /// Runs `records` through the pipeline and commits their outputs with
    /// the cursor, repeating the commit until it lands.
    async fn process(&mut self, records: Vec<LogRecord>, out: &mut BatchOutcome) {
        let Some(through) = records.last().map(|r| r.position) else {
            return;
        };
        let taken: u64 = records.iter().map(LogRecord::event_count).sum();
        let started = Instant::now();
        let mut damaged = Vec::new();
        let mut damaged_events = 0;
        for record in records {
            match record.damage {
                None => self.pipeline.process_batch(record.events, out),
                Some(damage) => {
                    tracing::error!(
                        position = record.position,
                        events = damage.events,
                        error = %damage.error,
                        "an event log record cannot be decoded; it is kept aside as damaged and the log moves on"
                    );
                    metrics::counter!("orderflow_log_damaged_records_total").increment(1);
                    damaged_events += damage.events;
                    damaged.push((record.position, damage.error));
                }
            }
        }
        let committing = Instant::now();
        metrics::histogram!("orderflow_log_pipeline_seconds")
            .record(committing.duration_since(started));
        let mut delay = RETRY;
        // The same commit until it lands: it is idempotent, so a repeat
        // after an unknown outcome cannot store twice.
        loop {
            match self
                .log
                .commit(self.cursor, through, &out.kept, &out.dead, &damaged)
                .await
            {
                Ok(()) => break,
                Err(error) if error.kind != SinkErrorKind::Rejected => {
                    tracing::warn!(%error, through, "committing the event log's outputs failed; repeating it");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) if !out.kept.is_empty() => {
                    // Outputs the store refuses for good: the range moves on
                    // with everything dead-lettered.
                    tracing::error!(%error, through, "the store refused the outputs; dead-lettering the range");
                    let reason = format!("event store refused the batch: {error}");
                    let kept = std::mem::take(&mut out.kept);
                    out.dead.extend(kept.into_iter().map(|event| DeadLetter {
                        event,
                        reason: reason.clone(),
                    }));
                }
                Err(error) => {
                    // Even the dead letters are refused: nothing moves until
                    // an operator fixes the store; keep trying, slowly, and
                    // say so.
                    tracing::error!(%error, through, "the store refuses the dead letters too; the event log is stuck until it takes them");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        metrics::histogram!("orderflow_log_commit_seconds").record(committing.elapsed());
        self.cursor = through;
        self.counters.settle(Settled {
            processed: out.kept.len() as u64,
            filtered: out.filtered,
            deduplicated: out.deduplicated,
            dead_lettered: out.dead.len() as u64 + damaged_events,
            dropped: 0,
        });
        self.bound.leave(taken);
        out.clear();
    }
}
