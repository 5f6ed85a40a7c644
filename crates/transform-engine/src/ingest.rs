//! Ingest: the bounded queue in front of the workers and what happens when
//! it is full.

use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain::Event;
use foldhash::fast::FixedState;
use tokio::sync::mpsc;

use crate::stats::Counters;

/// What ingest does with an event when the queue is full. Each choice
/// trades producer latency against completeness differently; none lets
/// memory grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Wait for room, however long. Nothing is shed, and overload pushes back
    /// to producers (their calls slow down); a stuck consumer stalls them
    /// until their own deadlines fire.
    Block,
    /// Wait for room up to the duration, then shed the event (counted as
    /// dropped; a unary publish answers RESOURCE_EXHAUSTED). Pushes back on
    /// short bursts, bounds how long a producer can be held.
    BlockTimeout(Duration),
    /// Never wait: shed the newest event at once, count it, and warn at most
    /// once a second (never per event). Lowest producer latency; loses data
    /// under overload, visibly.
    DropNewest,
    /// Never wait: hand the event to a small bounded overflow queue that a
    /// dead-letter worker drains into the dead-letter store in batches, for
    /// replay later. Loses nothing while that store keeps up; when the
    /// overflow queue is full too, the event is dropped (counted, warned).
    /// A shed event's count is final once written: if the dead-letter store
    /// fails as well, it is counted dropped (logged as an error).
    DeadLetter,
}

impl Default for OverflowPolicy {
    /// Block up to 500 ms: absorbs bursts without shedding, yet no producer
    /// is held longer than a typical client deadline's fraction.
    fn default() -> Self {
        Self::BlockTimeout(Duration::from_millis(500))
    }
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Block => f.write_str("block"),
            Self::BlockTimeout(d) => write!(f, "block-timeout:{}ms", d.as_millis()),
            Self::DropNewest => f.write_str("drop-newest"),
            Self::DeadLetter => f.write_str("dead-letter"),
        }
    }
}

impl FromStr for OverflowPolicy {
    type Err = String;

    /// `block`, `block-timeout:MS`, `drop-newest` or `dead-letter`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(Self::Block),
            "drop-newest" => Ok(Self::DropNewest),
            "dead-letter" => Ok(Self::DeadLetter),
            other => other
                .strip_prefix("block-timeout:")
                .and_then(|ms| ms.trim_end_matches("ms").parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| Self::BlockTimeout(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    format!("{other:?} is not an overflow policy (block, block-timeout:MS, drop-newest, dead-letter)")
                }),
        }
    }
}

/// What became of a submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for the pipeline.
    Accepted,
    /// Shed by the overflow policy.
    Dropped,
    /// Queue full: queued for the dead-letter store (policy `DeadLetter`).
    DeadLettered,
}

/// Ingest refused the event outright (not counted as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The engine is draining for shutdown and takes no new events.
    #[error("the event pipeline is shutting down")]
    ShuttingDown,
}

/// The producer side of the engine. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    /// One bounded queue per worker; an event goes to the worker its id (or
    /// user id) hashes to, so repeats of one id always meet the same
    /// de-duplication window. Each holds `queue_capacity / workers` events:
    /// the bound on memory, and what a full queue means.
    queues: Vec<mpsc::Sender<Event>>,
    /// Under [`OverflowPolicy::DeadLetter`], where shed events wait for the
    /// dead-letter worker: bounded like a worker queue (a full one drops
    /// the event), and never waited on. `None` under the other policies.
    overflow: Option<mpsc::Sender<Event>>,
    policy: OverflowPolicy,
    counters: Arc<Counters>,
    closed: AtomicBool,
    hasher: FixedState,
    warn: DropWarning,
}

impl Ingest {
    pub(crate) fn new(
        queues: Vec<mpsc::Sender<Event>>,
        overflow: Option<mpsc::Sender<Event>>,
        policy: OverflowPolicy,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues,
                overflow,
                policy,
                counters,
                closed: AtomicBool::new(false),
                hasher: FixedState::default(),
                warn: DropWarning::new(),
            }),
        }
    }

    /// The overflow policy in force.
    pub fn policy(&self) -> OverflowPolicy {
        self.inner.policy
    }

    /// Offers one event. Cancel-safe: if the caller gives up while waiting
    /// for room, the event was never counted or queued.
    pub async fn submit(&self, event: Event) -> Result<Admission, IngestError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(IngestError::ShuttingDown);
        }
        let Some(queue) = self.queue_for(&event) else {
            return Err(IngestError::ShuttingDown);
        };
        // Reserve a slot first and count the event before it is queued, so a
        // worker can never settle an event the counters have not seen.
        let permit = match inner.policy {
            OverflowPolicy::Block => queue
                .reserve()
                .await
                .map_err(|_| IngestError::ShuttingDown)?,
            OverflowPolicy::BlockTimeout(wait) => {
                match tokio::time::timeout(wait, queue.reserve()).await {
                    Ok(permit) => permit.map_err(|_| IngestError::ShuttingDown)?,
                    Err(_) => return Ok(self.shed(event)),
                }
            }
            OverflowPolicy::DropNewest | OverflowPolicy::DeadLetter => match queue.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => return Ok(self.shed(event)),
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err(IngestError::ShuttingDown);
                }
            },
        };
        inner.counters.admit();
        permit.send(event);
        Ok(Admission::Accepted)
    }

    fn queue_for(&self, event: &Event) -> Option<&mpsc::Sender<Event>> {
        let queues = &self.inner.queues;
        let key = event
            .event_id
            .as_ref()
            .map_or(event.user_id.as_str(), |id| id.as_str());
        let hash = self.inner.hasher.hash_one(key);
        let index = usize::try_from(hash % queues.len().max(1) as u64).unwrap_or(0);
        queues.get(index)
    }

    /// Sheds one event by the overflow policy, never waiting: into the
    /// dead-letter queue under [`OverflowPolicy::DeadLetter`] while it has
    /// room, else dropped; counted either way. For events that found no
    /// room elsewhere (the event log's backlog).
    pub fn shed(&self, event: Event) -> Admission {
        let inner = &self.inner;
        if let Some(overflow) = &inner.overflow
            && let Ok(permit) = overflow.try_reserve()
        {
            inner.counters.admit();
            permit.send(event);
            return Admission::DeadLettered;
        }
        inner.counters.shed();
        inner.warn.dropped();
        Admission::Dropped
    }

    /// Counters and queue state now (what GetPipelineStats answers).
    pub fn stats(&self) -> crate::PipelineStats {
        let (queue_depth, queue_capacity) = self.depth();
        crate::PipelineStats {
            queue_depth,
            queue_capacity,
            ..self.inner.counters.snapshot()
        }
    }

    /// Stops taking events; queued ones still drain.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Events queued now, and the total capacity (the overflow queue
    /// included).
    pub(crate) fn depth(&self) -> (u64, u64) {
        self.inner.queues.iter().chain(&self.inner.overflow).fold(
            (0, 0),
            |(depth, capacity), queue| {
                let max = queue.max_capacity() as u64;
                (
                    depth + max.saturating_sub(queue.capacity() as u64),
                    capacity + max,
                )
            },
        )
    }
}

const NEVER: u64 = u64::MAX;

/// A warning for shed events, logged at most once a second with the count
/// since the last one: overload must be visible, but never one line per
/// event.
struct DropWarning {
    started: Instant,
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl DropWarning {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
            pending: AtomicU64::new(0),
        }
    }

    fn dropped(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= 1_000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let count = self.pending.swap(0, Ordering::Relaxed);
            tracing::warn!(
                dropped = count,
                "event queue full: shedding events (overflow policy drop)"
            );
        }
    }
}
