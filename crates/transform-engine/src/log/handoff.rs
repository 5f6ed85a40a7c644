//! Batches the writer appended, handed to the consumer in memory.
//!
//! Each record carries the position appended just before it, and the
//! consumer takes a record only when its cursor is at or past that position:
//! then nothing lies between what it committed and the record. Otherwise
//! (the first batch after a start, the first after a failed append, one
//! after a batch skipped at the bound) it reads from the log, and drops the
//! records its cursor has passed. Only the writer appends to a log this
//! process owns, so it knows every position in order.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use domain::Event;
use tokio::sync::{Notify, oneshot};

use super::LogRecord;

/// The hand-off between the writer and the consumer.
#[derive(Debug)]
pub(super) struct Shared {
    /// Held only to push or pop records, never across an await.
    handoff: Mutex<Handoff>,
    /// Wakes the consumer after an append.
    pub(super) appended: Notify,
    /// The writer's request for a recount of the backlog after an append
    /// of unknown outcome, which the consumer answers once done.
    resync: Mutex<Resync>,
}

#[derive(Debug)]
enum Resync {
    Idle,
    /// The writer waits for the answer.
    Requested(oneshot::Sender<()>),
    /// The consumer has stopped: nobody will answer.
    ConsumerGone,
}

impl Shared {
    /// A hand-off holding at most `bound` events.
    pub(super) fn new(bound: usize) -> Self {
        Self {
            handoff: Mutex::new(Handoff::with_bound(bound)),
            appended: Notify::new(),
            resync: Mutex::new(Resync::Idle),
        }
    }

    /// Asks the consumer to recount the backlog from the log, and waits
    /// until it has (or is gone). Called by the writer between appends, so
    /// nothing is appended meanwhile.
    pub(super) async fn resync(&self) {
        let (done, answer) = oneshot::channel();
        {
            let mut resync = self.resync_state();
            if matches!(*resync, Resync::ConsumerGone) {
                return;
            }
            *resync = Resync::Requested(done);
        }
        self.appended.notify_one();
        let _ = answer.await;
    }

    /// The writer's pending recount request, if any.
    pub(super) fn resync_requested(&self) -> Option<oneshot::Sender<()>> {
        let mut resync = self.resync_state();
        match std::mem::replace(&mut *resync, Resync::Idle) {
            Resync::Requested(done) => Some(done),
            other => {
                *resync = other;
                None
            }
        }
    }

    /// The consumer has stopped: a pending request is dropped (its writer
    /// goes on), and later ones return at once.
    pub(super) fn consumer_stopped(&self) {
        *self.resync_state() = Resync::ConsumerGone;
    }

    fn resync_state(&self) -> MutexGuard<'_, Resync> {
        self.resync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
pub(super) struct Handoff {
    records: VecDeque<Handed>,
    /// Events in `records`.
    events: usize,
    /// Most events `records` may hold.
    bound: usize,
    /// The position the writer appended last; `None` if it cannot know (at
    /// start: an earlier run's batches; after a failed append, which may
    /// have stored rows after all).
    last: Option<i64>,
}

#[derive(Debug)]
struct Handed {
    /// The position appended just before this record, if known.
    after: Option<i64>,
    record: LogRecord,
}

/// What the consumer should do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Process these records (from the hand-off).
    Process(Vec<LogRecord>),
    /// Read the log after the cursor.
    Read,
    /// Nothing was appended past the cursor: wait.
    Wait,
}

impl Handoff {
    /// An empty hand-off holding at most `bound` events.
    pub(super) fn with_bound(bound: usize) -> Self {
        Self {
            bound,
            ..Self::default()
        }
    }

    /// The writer appended `events` at `position`.
    pub(super) fn offer(&mut self, position: i64, events: Vec<Event>) {
        let after = self.last.replace(position);
        if self.events + events.len() > self.bound {
            // Skipped: the consumer will read it from the log.
            return;
        }
        self.events += events.len();
        self.records.push_back(Handed {
            after,
            record: LogRecord::new(position, events),
        });
    }

    /// An append failed; it may have stored rows after all.
    pub(super) fn lose_track(&mut self) {
        self.last = None;
    }

    /// What a consumer whose cursor is at `cursor` does next, taking up to
    /// `limit` records and, past the first, up to `max_events` events.
    pub(super) fn next(&mut self, cursor: i64, limit: usize, max_events: u64) -> Next {
        while self
            .records
            .front()
            .is_some_and(|h| h.record.position <= cursor)
        {
            self.pop();
        }
        let mut at = cursor;
        let mut taken = Vec::new();
        let mut events = 0;
        while taken.len() < limit
            && self.records.front().is_some_and(|h| {
                h.after.is_some_and(|after| after <= at)
                    && (taken.is_empty() || events + h.record.event_count() <= max_events)
            })
        {
            let Some(record) = self.pop() else { break };
            at = record.position;
            events += record.event_count();
            taken.push(record);
        }
        if !taken.is_empty() {
            Next::Process(taken)
        } else if self.records.is_empty() && self.last.is_some_and(|last| last <= cursor) {
            Next::Wait
        } else {
            Next::Read
        }
    }

    fn pop(&mut self) -> Option<LogRecord> {
        let handed = self.records.pop_front()?;
        self.events -= handed.record.events.len();
        Some(handed.record)
    }
}
