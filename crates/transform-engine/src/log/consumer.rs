//! The log consumer: takes batches after its cursor (handed over, or read
//! from the log), runs the pipeline, commits outputs and cursor together,
//! then frees the batches' room in the bound.
//!
//! On a log with [`EventLog::overlapping_commits`], a range's commit runs in
//! a task of its own while the consumer takes the next range and starts its
//! commit; then it waits for the earlier one. So at most two commits are on
//! their way, and they settle (counters, bound, cursor) in log order: a
//! later one that failed because the earlier had not landed yet is repeated
//! after it, at once the first time, then as any failed commit is.
//!
//! The backlog bound counts a range's events until its commit lands, so two
//! ranges in flight share it: each is at most half the bound, and with one
//! on its way the next starts only once half the bound is ready for it (or
//! the earlier one has landed). Taking whatever happens to be there would
//! split the bound into one large range and ever smaller ones behind it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{DeadLetter, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bound::Bound;
use super::handoff::{self, Next};
use super::{EventLog, LogRecord};
use crate::pipeline::BatchOutcome;
use crate::sink::{SinkError, SinkErrorKind};
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

/// A range taken from the log and run through the pipeline: what its
/// commit stores, and what settles once it lands.
struct Range {
    after: i64,
    through: i64,
    /// Events the range's records hold (its share of the backlog).
    taken: u64,
    /// Events of damaged records (counted dead-lettered).
    damaged_events: u64,
    outputs: Arc<Outputs>,
    filtered: u64,
    deduplicated: u64,
    /// When its commit started.
    committing: Instant,
}

/// What a range's commit stores.
#[derive(Clone)]
struct Outputs {
    kept: Vec<Event>,
    dead: Vec<DeadLetter>,
    damaged: Vec<(i64, String)>,
}

/// A range whose commit runs in its own task.
struct InFlight {
    range: Range,
    commit: Attempt,
}

/// A commit's task, ended with its handle.
struct Attempt(JoinHandle<Result<(), SinkError>>);

impl Drop for Attempt {
    fn drop(&mut self) {
        // Only if the consumer itself is dropped mid-wait (its runtime
        // gone): the attempt ends with it, and a later run repeats the range
        // from the log (a commit is idempotent).
        self.0.abort();
    }
}

async fn commit<L: EventLog>(log: &L, range: &Range) -> Result<(), SinkError> {
    let o = &range.outputs;
    log.commit(range.after, range.through, &o.kept, &o.dead, &o.damaged)
        .await
}

impl<L: EventLog> Consumer<L> {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let overlap = self.log.overlapping_commits();
        let mut out = BatchOutcome::default();
        let mut in_flight: Option<InFlight> = None;
        let mut delay = RETRY;
        while !stopping(&stop) {
            if let Some(done) = self.handoff.resync_requested() {
                if let Some(earlier) = in_flight.take() {
                    self.wait_and_land(earlier).await;
                }
                self.resync().await;
                let _ = done.send(());
            }
            let half = (self.bound.max() / 2).max(1);
            if let Some(earlier) = in_flight.as_mut()
                && self.bound.owned()
                && self.bound.backlog().saturating_sub(earlier.range.taken) < half
            {
                tokio::select! {
                    outcome = &mut earlier.commit.0 => {
                        if let Some(earlier) = in_flight.take() {
                            self.land(earlier, outcome).await;
                        }
                    }
                    () = self.handoff.appended.notified() => {}
                }
                continue;
            }
            // Where the next range starts: past the one on its way, if any.
            let after = in_flight.as_ref().map_or(self.cursor, |f| f.range.through);
            let max_events = if overlap { half } else { u64::MAX };
            let next = if self.bound.owned() {
                self.handoff
                    .lock()
                    .next(after, self.read_batches as usize, max_events)
            } else {
                Next::Read
            };
            let records = match next {
                Next::Process(records) => records,
                Next::Wait => Vec::new(),
                Next::Read => match self.log.read(after, self.read_batches).await {
                    Ok(mut records) => {
                        let mut events = 0;
                        let keep = records
                            .iter()
                            .take_while(|r| {
                                events += r.event_count();
                                events <= max_events
                            })
                            .count();
                        records.truncate(keep.max(1));
                        records
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading the event log failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                        continue;
                    }
                },
            };
            if records.is_empty() {
                // Nothing more to overlap with: land what is on its way
                // before waiting.
                if let Some(earlier) = in_flight.take() {
                    self.wait_and_land(earlier).await;
                    continue;
                }
                tokio::select! {
                    () = self.handoff.appended.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    // An error: the engine is gone; the loop's check ends it.
                    _ = stop.changed() => {}
                }
                continue;
            }
            delay = RETRY;
            let Some(range) = self.process(after, records, &mut out) else {
                continue;
            };
            if overlap {
                let log = Arc::clone(&self.log);
                let task = Range {
                    outputs: Arc::clone(&range.outputs),
                    ..range
                };
                let commit = tokio::spawn(async move { commit(&*log, &task).await });
                let later = InFlight {
                    range,
                    commit: Attempt(commit),
                };
                if let Some(earlier) = in_flight.replace(later) {
                    self.wait_and_land(earlier).await;
                }
            } else {
                self.commit_until_landed(range, None).await;
            }
        }
        if let Some(earlier) = in_flight.take() {
            self.wait_and_land(earlier).await;
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

    /// Runs `records` (the log after `after`) through the pipeline: the
    /// range to commit.
    fn process(
        &mut self,
        after: i64,
        records: Vec<LogRecord>,
        out: &mut BatchOutcome,
    ) -> Option<Range> {
        let through = records.last()?.position;
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
        let range = Range {
            after,
            through,
            taken,
            damaged_events,
            outputs: Arc::new(Outputs {
                kept: std::mem::take(&mut out.kept),
                dead: std::mem::take(&mut out.dead),
                damaged,
            }),
            filtered: out.filtered,
            deduplicated: out.deduplicated,
            committing,
        };
        out.clear();
        Some(range)
    }

    /// Waits for a commit on its way.
    async fn wait_and_land(&mut self, mut in_flight: InFlight) {
        let outcome = (&mut in_flight.commit.0).await;
        self.land(in_flight, outcome).await;
    }

    /// Settles a commit that was on its way, repeating it if it failed.
    async fn land(
        &mut self,
        in_flight: InFlight,
        outcome: Result<Result<(), SinkError>, tokio::task::JoinError>,
    ) {
        let first = match outcome {
            Ok(result) => result,
            Err(error) => Err(SinkError {
                message: format!("the commit's task ended without an answer: {error}"),
                kind: SinkErrorKind::OutcomeUnknown,
            }),
        };
        let InFlight { range, .. } = in_flight;
        let first = match first {
            // Most often the overlap itself: this commit reached the cursor
            // before the one ahead of it had landed, which it has now (small
            // ranges race like that all the time). Once more at once; a
            // real failure fails again and backs off as any other.
            Err(error) if error.kind != SinkErrorKind::Rejected => {
                tracing::debug!(%error, through = range.through, "an overlapped commit failed; repeating it at once");
                commit(&*self.log, &range).await
            }
            landed_or_refused => landed_or_refused,
        };
        self.commit_until_landed(range, Some(first)).await;
    }

    /// Commits `range` (or takes `first`, the outcome of an attempt already
    /// made), repeating the commit until it lands; then settles the range.
    async fn commit_until_landed(
        &mut self,
        mut range: Range,
        first: Option<Result<(), SinkError>>,
    ) {
        let mut delay = RETRY;
        let mut attempt = match first {
            Some(outcome) => outcome,
            None => commit(&*self.log, &range).await,
        };
        // The same commit until it lands: it is idempotent, so a repeat
        // after an unknown outcome cannot store twice.
        loop {
            match attempt {
                Ok(()) => break,
                Err(error) if error.kind != SinkErrorKind::Rejected => {
                    tracing::warn!(%error, through = range.through, "committing the event log's outputs failed; repeating it");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) if !range.outputs.kept.is_empty() => {
                    // Outputs the store refuses for good: the range moves on
                    // with everything dead-lettered.
                    tracing::error!(%error, through = range.through, "the store refused the outputs; dead-lettering the range");
                    let reason = format!("event store refused the batch: {error}");
                    let outputs = Arc::make_mut(&mut range.outputs);
                    let kept = std::mem::take(&mut outputs.kept);
                    outputs
                        .dead
                        .extend(kept.into_iter().map(|event| DeadLetter {
                            event,
                            reason: reason.clone(),
                        }));
                }
                Err(error) => {
                    // Even the dead letters are refused: nothing moves until
                    // an operator fixes the store; keep trying, slowly, and
                    // say so.
                    tracing::error!(%error, through = range.through, "the store refuses the dead letters too; the event log is stuck until it takes them");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
            attempt = commit(&*self.log, &range).await;
        }
        metrics::histogram!("orderflow_log_commit_seconds").record(range.committing.elapsed());
        debug_assert_eq!(self.cursor, range.after, "ranges settle in log order");
        self.cursor = range.through;
        self.counters.settle(Settled {
            processed: range.outputs.kept.len() as u64,
            filtered: range.filtered,
            deduplicated: range.deduplicated,
            dead_lettered: range.outputs.dead.len() as u64 + range.damaged_events,
            dropped: 0,
        });
        self.bound.leave(range.taken);
    }
}
