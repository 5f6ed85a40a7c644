//! Where the engine writes: the sink traits the server implements over the
//! real event and dead-letter stores, and an in-memory sink for tests,
//! benchmarks and the overload example.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::{DeadLetter, Event, WriteId};

/// A sink write that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What went wrong.
    pub message: String,
    /// What the failure says about the write.
    pub kind: SinkErrorKind,
}

/// What a failed write says about its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Nothing was written (the store was unreachable): trying again may help.
    Unavailable,
    /// The write was sent but not confirmed: it may have been applied. The
    /// engine repeats it only under the same [`WriteId`], which the sink
    /// must treat idempotently, so the repeat settles the outcome instead of
    /// writing twice.
    OutcomeUnknown,
    /// The store is out of space: nothing was written; trying again helps
    /// once space returns.
    StorageFull,
    /// The store refused the rows; trying again will not help.
    Rejected,
}

impl SinkError {
    /// Whether repeating the same write (same [`WriteId`]) may succeed.
    pub fn retryable(&self) -> bool {
        self.kind != SinkErrorKind::Rejected
    }
}

/// What a successful sink write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored now.
    Stored,
    /// An earlier attempt with the same write id stored it here.
    AlreadyStored,
    /// An earlier write with the same id went to the other sink: a
    /// dead-letter write standing in for an append that did commit after all.
    StoredElsewhere,
}

/// Where processed events go: appended in order, all of a batch or none.
pub trait EventSink: Send + Sync + 'static {
    /// Appends `events` atomically, idempotently per `write`: a repeat with
    /// the same id stores nothing again.
    fn append(
        &self,
        write: WriteId,
        events: &[Event],
    ) -> impl Future<Output = Result<Written, SinkError>> + Send;
}

/// Where events that cannot be processed go, with the reason.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores `letters` atomically, idempotently per `write`. The engine
    /// dead-letters a batch whose append failed under the append's id; a
    /// sink that shares one record of ids between the two answers
    /// [`Written::StoredElsewhere`] if the append had committed after all.
    fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<Written, SinkError>> + Send;
}

/// An in-memory sink that can be made slow or failing on demand.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
    letters: Mutex<Vec<DeadLetter>>,
    /// Write ids applied so far, and whether each went to the events.
    applied: Mutex<HashMap<WriteId, bool>>,
    /// Pause before each write (a slow consumer).
    delay: Mutex<Duration>,
    /// Fail this many upcoming writes (retryable).
    failures: AtomicUsize,
    /// Refuse this many upcoming writes for good.
    refusals: AtomicUsize,
    /// Apply this many upcoming writes but answer `OutcomeUnknown`.
    unconfirmed: AtomicUsize,
}

impl MemorySink {
    /// An empty, fast sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write first sleeps `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self
            .delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delay;
    }

    /// The next `n` writes fail as retryable.
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes are refused for good
    /// ([`SinkErrorKind::Rejected`]).
    pub fn refuse_next(&self, n: usize) {
        self.refusals.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes are applied but answered as
    /// [`SinkErrorKind::OutcomeUnknown`] (a commit whose confirmation was
    /// lost).
    pub fn unconfirm_next(&self, n: usize) {
        self.unconfirmed.store(n, Ordering::SeqCst);
    }

    /// Events appended so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many events were appended.
    pub fn event_count(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Dead letters stored so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn gate(&self) -> Result<(), SinkError> {
        let delay = *self
            .delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(SinkError {
                message: "memory sink told to fail".to_owned(),
                kind: SinkErrorKind::Unavailable,
            });
        }
        let refused = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            return Err(SinkError {
                message: "memory sink told to refuse".to_owned(),
                kind: SinkErrorKind::Rejected,
            });
        }
        Ok(())
    }

    /// What a write that was applied (now or earlier) answers.
    fn confirm(&self, written: Written) -> Result<Written, SinkError> {
        let lost = self
            .unconfirmed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Err(SinkError {
                message: "memory sink told to lose the confirmation".to_owned(),
                kind: SinkErrorKind::OutcomeUnknown,
            });
        }
        Ok(written)
    }

    /// Claims `write` for the events (`to_events`) or the dead letters, as
    /// the database does in `applied_writes`; `None` if newly claimed.
    fn claim(&self, write: WriteId, to_events: bool) -> Option<Written> {
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match applied.get(&write) {
            Some(&earlier) if earlier == to_events => Some(Written::AlreadyStored),
            Some(_) => Some(Written::StoredElsewhere),
            None => {
                applied.insert(write, to_events);
                None
            }
        }
    }
}

impl EventSink for MemorySink {
    async fn append(&self, write: WriteId, events: &[Event]) -> Result<Written, SinkError> {
        self.gate().await?;
        if let Some(earlier) = self.claim(write, true) {
            return self.confirm(earlier);
        }
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(events);
        self.confirm(Written::Stored)
    }
}

impl DeadLetterSink for MemorySink {
    async fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> Result<Written, SinkError> {
        self.gate().await?;
        if let Some(earlier) = self.claim(write, false) {
            return self.confirm(earlier);
        }
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(letters);
        self.confirm(Written::Stored)
    }
}

impl<T: EventSink> EventSink for std::sync::Arc<T> {
    fn append(
        &self,
        write: WriteId,
        events: &[Event],
    ) -> impl Future<Output = Result<Written, SinkError>> + Send {
        (**self).append(write, events)
    }
}

impl<T: DeadLetterSink> DeadLetterSink for std::sync::Arc<T> {
    fn dead_letter(
        &self,
        write: WriteId,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<Written, SinkError>> + Send {
        (**self).dead_letter(write, letters)
    }
}
