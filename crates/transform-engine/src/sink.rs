//! Where the engine writes: the sink traits `storage` implements for the
//! real event and dead-letter stores, and in-memory sinks for tests,
//! benchmarks and the overload example.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::{DeadLetter, Event};

/// A sink write that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again may help (the store was unreachable).
    pub retryable: bool,
}

/// Where processed events go: appended in order, all of a batch or none.
pub trait EventSink: Send + Sync + 'static {
    /// Appends `events` atomically.
    fn append(&self, events: &[Event]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Where events that cannot be processed go, with the reason.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores `letters` atomically.
    fn dead_letter(
        &self,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// An in-memory sink that can be made slow or failing on demand.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
    letters: Mutex<Vec<DeadLetter>>,
    /// Pause before each write (a slow consumer).
    delay: Mutex<Duration>,
    /// Fail this many upcoming writes (retryable).
    failures: AtomicUsize,
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
                retryable: true,
            });
        }
        Ok(())
    }
}

impl EventSink for MemorySink {
    async fn append(&self, events: &[Event]) -> Result<(), SinkError> {
        self.gate().await?;
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}

impl DeadLetterSink for MemorySink {
    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        self.gate().await?;
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(letters);
        Ok(())
    }
}

impl<T: EventSink> EventSink for std::sync::Arc<T> {
    fn append(&self, events: &[Event]) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).append(events)
    }
}

impl<T: DeadLetterSink> DeadLetterSink for std::sync::Arc<T> {
    fn dead_letter(
        &self,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).dead_letter(letters)
    }
}
