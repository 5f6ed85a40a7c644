//! Acknowledged ingest: batches are appended to a durable [`EventLog`]
//! before they are acknowledged, and a consumer runs them through the
//! pipeline and commits the outputs together with its log position.
//!
//! - **Durable before the ack.** [`LogIngest::submit`] hands a batch to the
//!   log writer, which appends every batch waiting at that moment in one
//!   call (group commit across streams) and answers each only after the
//!   append returned.
//! - **Exactly once.** The log records each producer's last durable
//!   sequence in the append; a retry at or below it is a duplicate and
//!   stores nothing. The consumer commits a range's outputs and its new
//!   cursor atomically, and a commit whose range the cursor already covers
//!   stores nothing, so a restart resumes exactly after the committed
//!   outputs and a repeated commit cannot store twice.
//! - **Bounded.** Events acknowledged but not yet processed (the backlog)
//!   hold permits of one semaphore; at the bound, submitters wait (a stream
//!   stops reading), or give up after their wait ([`LogError::Full`]).
//! - **Handed over, not read back.** A log this process owns gives the
//!   consumer the batches the writer just appended, in memory (see
//!   `Handoff`): reading back and decoding what it was just given was most
//!   of a database log consumer's work. The log stays the truth: whatever
//!   the hand-off cannot vouch for (after a restart, a failed append, or
//!   past its bound) the consumer reads from the log.
//!
//! The log is a trait so that a database log and a broker's log can stand
//! behind the same front door.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use domain::{DeadLetter, Event};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::engine::Draining;
use crate::pipeline::BatchOutcome;
use crate::sink::{SinkError, SinkErrorKind};
use crate::stats::{Counters, Settled};

/// Most events in one batch (the contract's bound).
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// A batch to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// The producer and the batch's sequence number, for exactly-once
    /// retries; `None` without a producer id.
    pub producer: Option<(String, u64)>,
    /// The events, validated.
    pub events: Vec<Event>,
}

/// What the log did with an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Durable now, at this position.
    New {
        /// Where the batch is in the log (what [`EventLog::read`] would
        /// say); positions grow in append order.
        position: i64,
    },
    /// A retry of a batch already durable: nothing stored.
    Duplicate,
}

/// A batch read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its position; positions grow in append order.
    pub position: i64,
    /// The events.
    pub events: Vec<Event>,
}

/// A durable, ordered log of batches with one consumer cursor.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `batches` durably (all in one go where the log can), answering
    /// per batch and in order.
    fn append(
        &self,
        batches: &[LogBatch],
    ) -> impl Future<Output = Result<Vec<Appended>, SinkError>> + Send;

    /// Up to `limit` batches after position `after`, in order.
    fn read(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LogRecord>, SinkError>> + Send;

    /// Commits the outputs of the log up to `through` with the cursor,
    /// atomically; a range the cursor already covers stores nothing.
    fn commit(
        &self,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The committed cursor (0: nothing committed yet).
    fn cursor(&self) -> impl Future<Output = Result<i64, SinkError>> + Send;

    /// Events after the cursor.
    fn backlog(&self) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Whether several processes append to and consume this log (a
    /// broker's). Then the log bounds its own backlog (an append past its
    /// limit fails), this process's permits bound only its appends in
    /// flight, and a process's counters cover the events it appended and
    /// those it processed, which need not be the same. `false`: one process
    /// owns the log, as the database log is owned.
    fn shared(&self) -> bool {
        false
    }
}

/// How the acknowledged path is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Most events acknowledged but not yet processed; at the bound,
    /// submitters wait. At least [`MAX_BATCH_EVENTS`], so any batch fits.
    /// Default 100,000: a few seconds of work for the consumer.
    pub max_backlog: usize,
    /// Most batches a consumer reads and commits at once.
    pub read_batches: u32,
    /// Most appended events kept in memory for the consumer (a log this
    /// process owns); past it, the consumer reads the rest from the log.
    /// Default: [`Self::DEFAULT_MAX_BACKLOG`], so with the default bound a
    /// full backlog is all handed over. Reading it back instead cost more
    /// CPU and more peak memory (decoding the rows) than holding the events:
    /// at 32,768, 7-9% fewer events/s and a 15-30 MB higher peak
    /// (docs/benchmarks.md).
    pub handoff_events: usize,
}

impl LogConfig {
    /// The default [`Self::max_backlog`].
    pub const DEFAULT_MAX_BACKLOG: usize = 100_000;
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_backlog: Self::DEFAULT_MAX_BACKLOG,
            read_batches: 64,
            handoff_events: Self::DEFAULT_MAX_BACKLOG,
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The backlog stayed at its bound for the whole wait.
    #[error("the event log backlog is full ({0} events); retry later")]
    Full(u64),
    /// The engine is shutting down.
    #[error("the event pipeline is shutting down")]
    ShuttingDown,
    /// The log refused or failed the append.
    #[error(transparent)]
    Log(#[from] SinkError),
}

/// The acknowledgement of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Events taken (0 for a duplicate).
    pub accepted: u64,
    /// A retry of a batch already durable.
    pub duplicate: bool,
}

type Reply = oneshot::Sender<Result<Appended, SinkError>>;

/// The front door of acknowledged ingest. Cheap to clone.
#[derive(Clone)]
pub struct LogIngest {
    /// To the log writer, which appends what waits here in one go. Bounded
    /// by the backlog permits in practice (a batch waits for its permits
    /// before it is queued); the channel's own bound is a second fence.
    writer: mpsc::Sender<(LogBatch, Reply)>,
    /// One permit per event acknowledged and not yet processed.
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

/// What the writer, the consumer and the front door share.
struct Shared {
    counters: Arc<Counters>,
    /// Events acknowledged and not yet processed.
    backlog: AtomicU64,
    /// Wakes the consumer after an append.
    appended: Notify,
    max_backlog: u64,
    /// [`EventLog::shared`].
    shared_log: bool,
    /// Appended batches on their way to the consumer; unused for a shared
    /// log, whose batches any process may consume.
    handoff: Mutex<Handoff>,
}

/// Batches the writer appended, handed to the consumer in memory.
///
/// Each record carries the position appended just before it, and the
/// consumer takes a record only when its cursor is at or past that position:
/// then nothing lies between what it committed and the record. Otherwise
/// (the first batch after a start, the first after a failed append, one
/// after a batch skipped at the bound) it reads from the log, and drops the
/// records its cursor has passed. Only the writer appends to a log this
/// process owns, so it knows every position in order.
#[derive(Debug, Default)]
struct Handoff {
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
enum Next {
    /// Process these records (from the hand-off).
    Process(Vec<LogRecord>),
    /// Read the log after the cursor.
    Read,
    /// Nothing was appended past the cursor: wait.
    Wait,
}

impl Handoff {
    /// The writer appended `events` at `position`.
    fn offer(&mut self, position: i64, events: Vec<Event>) {
        let after = self.last.replace(position);
        if self.events + events.len() > self.bound {
            // Skipped: the consumer will read it from the log.
            return;
        }
        self.events += events.len();
        self.records.push_back(Handed {
            after,
            record: LogRecord { position, events },
        });
    }

    /// An append failed; it may have stored rows after all.
    fn lose_track(&mut self) {
        self.last = None;
    }

    /// What a consumer whose cursor is at `cursor` does next, taking up to
    /// `limit` records.
    fn next(&mut self, cursor: i64, limit: usize) -> Next {
        while self
            .records
            .front()
            .is_some_and(|h| h.record.position <= cursor)
        {
            self.pop();
        }
        let mut at = cursor;
        let mut taken = Vec::new();
        while taken.len() < limit
            && self
                .records
                .front()
                .is_some_and(|h| h.after.is_some_and(|after| after <= at))
        {
            let Some(record) = self.pop() else { break };
            at = record.position;
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

impl LogIngest {
    /// Appends `batch` and answers once it is durable. Waits for room in the
    /// backlog up to `wait` (`None`: as long as it takes).
    pub async fn submit(&self, batch: LogBatch, wait: Option<Duration>) -> Result<Ack, LogError> {
        self.enqueue(batch, wait).await?.durable().await
    }

    /// The first half of [`Self::submit`]: waits for room (up to `wait`),
    /// then queues `batch` for the log writer. Batches are appended in the
    /// order they are enqueued, so a stream enqueues one batch after the
    /// other and awaits their acks in that order while reading on.
    pub async fn enqueue(
        &self,
        batch: LogBatch,
        wait: Option<Duration>,
    ) -> Result<Pending, LogError> {
        let events = batch.events.len();
        let count = u32::try_from(events).map_err(|_| LogError::Full(self.backlog()))?;
        let acquire = Arc::clone(&self.permits).acquire_many_owned(count);
        let permit = match wait {
            None => acquire.await,
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .map_err(|_| LogError::Full(self.backlog()))?,
        }
        .map_err(|_| LogError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send((batch, reply))
            .await
            .map_err(|_| LogError::ShuttingDown)?;
        Ok(Pending {
            events: events as u64,
            permit,
            answer,
            shared_log: self.shared.shared_log,
        })
    }

    /// Events acknowledged and not yet processed.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// The bound on [`Self::backlog`].
    pub fn max_backlog(&self) -> u64 {
        self.shared.max_backlog
    }
}

/// A batch queued for the log: await [`Pending::durable`] for its ack.
#[derive(Debug)]
pub struct Pending {
    events: u64,
    /// Its share of the backlog bound, returned if it never joins the log.
    permit: OwnedSemaphorePermit,
    answer: oneshot::Receiver<Result<Appended, SinkError>>,
    /// A shared log bounds its own backlog: the permits come back now.
    shared_log: bool,
}

impl Pending {
    /// Waits until the batch is durable (or refused).
    pub async fn durable(self) -> Result<Ack, LogError> {
        match self.answer.await.map_err(|_| LogError::ShuttingDown)?? {
            Appended::New { .. } => {
                // The permits now belong to the backlog; the consumer
                // returns them once the events are processed. A shared log
                // bounds its backlog itself, and any process may consume
                // them: they come back at once.
                if !self.shared_log {
                    self.permit.forget();
                }
                Ok(Ack {
                    accepted: self.events,
                    duplicate: false,
                })
            }
            Appended::Duplicate => Ok(Ack {
                accepted: 0,
                duplicate: true,
            }),
        }
    }
}

/// The writer and consumer tasks of one engine's log.
pub(crate) struct LogTasks {
    pub(crate) ingest: LogIngest,
    pub(crate) handles: Vec<JoinHandle<()>>,
}

/// Starts the log writer and the consumer over `log`, counting into
/// `counters`; `pipeline` is the consumer's own.
pub(crate) async fn start<L: EventLog>(
    log: Arc<L>,
    config: LogConfig,
    pipeline: crate::Pipeline,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> Result<LogTasks, SinkError> {
    let max_backlog = config.max_backlog.max(MAX_BATCH_EVENTS);
    let shared_log = log.shared();
    // A shared log's backlog is everyone's: not this process's to count.
    let backlog = if shared_log { 0 } else { log.backlog().await? };
    let cursor = log.cursor().await?;
    // What an earlier run acknowledged and did not process is received and
    // in flight for this one.
    counters.admit_many(backlog);
    let free = max_backlog.saturating_sub(usize::try_from(backlog).unwrap_or(usize::MAX));
    let shared = Arc::new(Shared {
        counters,
        backlog: AtomicU64::new(backlog),
        appended: Notify::new(),
        max_backlog: max_backlog as u64,
        shared_log,
        handoff: Mutex::new(Handoff {
            bound: config.handoff_events.min(max_backlog),
            ..Handoff::default()
        }),
    });
    let (writer, queue) = mpsc::channel(1_024);
    let ingest = LogIngest {
        writer,
        permits: Arc::new(Semaphore::new(free)),
        shared: Arc::clone(&shared),
    };
    let writer = tokio::spawn(write(
        Arc::clone(&log),
        queue,
        Arc::clone(&shared),
        stop.clone(),
    ));
    let consumer = Consumer {
        log,
        pipeline,
        shared,
        permits: Arc::clone(&ingest.permits),
        cursor,
        read_batches: config.read_batches.max(1),
    };
    let consumer = tokio::spawn(consumer.run(stop));
    Ok(LogTasks {
        ingest,
        handles: vec![writer, consumer],
    })
}

/// Appends whatever waits in `queue` in one call per round (group commit)
/// and answers each submitter. On shutdown it stops taking batches and
/// appends (and answers) those already queued.
async fn write<L: EventLog>(
    log: Arc<L>,
    queue: mpsc::Receiver<(LogBatch, Reply)>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    const GROUP: usize = 256;
    let mut waiting = Vec::with_capacity(GROUP);
    let mut queue = Draining::new(queue, stop);
    while queue.next(&mut waiting, GROUP).await {
        let (batches, replies): (Vec<LogBatch>, Vec<Reply>) = waiting.drain(..).unzip();
        // Counted before the append commits, so the consumer (which may read
        // the rows the moment they commit) never settles an event the
        // counters have not seen; what does not join the log is retracted.
        let offered: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        shared.admit(offered);
        match log.append(&batches).await {
            Ok(outcomes) => {
                let mut repeated = 0u64;
                let mut handed = Vec::new();
                for ((batch, reply), outcome) in batches.into_iter().zip(replies).zip(outcomes) {
                    match outcome {
                        Appended::Duplicate => repeated += batch.events.len() as u64,
                        Appended::New { position } if !shared.shared_log => {
                            handed.push((position, batch.events));
                        }
                        Appended::New { .. } => {}
                    }
                    let _ = reply.send(Ok(outcome));
                }
                shared.retract(repeated);
                if !handed.is_empty() {
                    let mut handoff = shared.handoff();
                    for (position, events) in handed {
                        handoff.offer(position, events);
                    }
                }
                shared.appended.notify_one();
            }
            Err(error) => {
                shared.retract(offered);
                shared.handoff().lose_track();
                tracing::warn!(%error, batches = batches.len(), "event log append failed; no batch of the group was acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
    tracing::debug!("event log writer drained");
}

impl Shared {
    fn handoff(&self) -> std::sync::MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `n` events are joining the log: received, in flight, in the backlog.
    fn admit(&self, n: u64) {
        self.counters.admit_many(n);
        self.backlog.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` admitted events did not join the log after all (duplicates, a
    /// failed append): as if never received.
    fn retract(&self, n: u64) {
        if n > 0 {
            self.counters.retract(n);
            self.leave_backlog(n);
        }
    }

    /// `n` events left the backlog.
    fn leave_backlog(&self, n: u64) {
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }
}

/// Reads the log after its cursor, runs the pipeline, commits outputs and
/// cursor together.
struct Consumer<L> {
    log: Arc<L>,
    pipeline: crate::Pipeline,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    cursor: i64,
    read_batches: u32,
}

/// How long an idle consumer waits before looking at the log again even
/// without a wake-up (appends by another process).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Delay before repeating a failed read or commit; doubles up to a second.
const RETRY: Duration = Duration::from_millis(50);

impl<L: EventLog> Consumer<L> {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut out = BatchOutcome::default();
        let mut delay = RETRY;
        loop {
            if *stop.borrow() {
                break;
            }
            let next = if self.shared.shared_log {
                Next::Read
            } else {
                self.shared
                    .handoff()
                    .next(self.cursor, self.read_batches as usize)
            };
            let records = match next {
                Next::Process(records) => records,
                Next::Wait => Vec::new(),
                Next::Read => match self.log.read(self.cursor, self.read_batches).await {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::warn!(%error, "reading the event log failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let Some(through) = records.last().map(|r| r.position) else {
                tokio::select! {
                    () = self.shared.appended.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let taken: u64 = records.iter().map(|r| r.events.len() as u64).sum();
            for record in records {
                self.pipeline.process_batch(record.events, &mut out);
            }
            // The same commit until it lands: it is idempotent, so a repeat
            // after an unknown outcome cannot store twice.
            loop {
                match self.log.commit(through, &out.kept, &out.dead).await {
                    Ok(()) => break,
                    Err(error) if error.kind != SinkErrorKind::Rejected => {
                        tracing::warn!(%error, through, "committing the event log's outputs failed; repeating it");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                    Err(error) if !out.kept.is_empty() => {
                        // Outputs the store refuses for good: the range
                        // moves on with everything dead-lettered.
                        tracing::error!(%error, through, "the store refused the outputs; dead-lettering the range");
                        let reason = format!("event store refused the batch: {error}");
                        let kept = std::mem::take(&mut out.kept);
                        out.dead.extend(kept.into_iter().map(|event| DeadLetter {
                            event,
                            reason: reason.clone(),
                        }));
                    }
                    Err(error) => {
                        // Even the dead letters are refused: nothing moves
                        // until an operator fixes the store; keep trying,
                        // slowly, and say so.
                        tracing::error!(%error, through, "the store refuses the dead letters too; the event log is stuck until it takes them");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            delay = RETRY;
            self.cursor = through;
            self.shared.counters.settle(Settled {
                processed: out.kept.len() as u64,
                filtered: out.filtered,
                deduplicated: out.deduplicated,
                dead_lettered: out.dead.len() as u64,
                dropped: 0,
            });
            self.shared.leave_backlog(taken);
            if !self.shared.shared_log {
                self.permits.add_permits(
                    usize::try_from(taken)
                        .unwrap_or(usize::MAX)
                        .min(Semaphore::MAX_PERMITS),
                );
            }
            out.clear();
        }
        tracing::debug!(cursor = self.cursor, "event log consumer stopped");
    }
}

/// An in-memory [`EventLog`] for tests and benchmarks: durable only as long
/// as the process, with the same exactly-once rules as the database log.
#[derive(Debug, Default)]
pub struct MemoryLog {
    state: Mutex<MemoryLogState>,
    /// Refuse (as `Rejected`) this many upcoming commits that carry events.
    refusals: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct MemoryLogState {
    records: VecDeque<LogRecord>,
    next: i64,
    producers: std::collections::HashMap<String, u64>,
    cursor: i64,
    events: Vec<Event>,
    letters: Vec<DeadLetter>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryLogState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The next `n` commits that carry processed events are refused for
    /// good ([`SinkErrorKind::Rejected`]), as a store that rejects the rows.
    pub fn refuse_outputs(&self, n: usize) {
        self.refusals.store(n, Ordering::SeqCst);
    }

    /// Events committed as outputs so far.
    pub fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }

    /// Dead letters committed so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.with(|s| s.letters.clone())
    }
}

impl EventLog for MemoryLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        Ok(self.with(|s| {
            batches
                .iter()
                .map(|batch| {
                    if let Some((producer, sequence)) = &batch.producer {
                        let last = s.producers.entry(producer.clone()).or_default();
                        if *last >= *sequence {
                            return Appended::Duplicate;
                        }
                        *last = *sequence;
                    }
                    s.next += 1;
                    let position = s.next;
                    s.records.push_back(LogRecord {
                        position,
                        events: batch.events.clone(),
                    });
                    Appended::New { position }
                })
                .collect()
        }))
    }

    async fn read(&self, after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        Ok(self.with(|s| {
            s.records
                .iter()
                .filter(|r| r.position > after)
                .take(limit as usize)
                .cloned()
                .collect()
        }))
    }

    async fn commit(
        &self,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
    ) -> Result<(), SinkError> {
        let refused = !events.is_empty()
            && self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if refused {
            return Err(SinkError {
                message: "memory log told to refuse the outputs".to_owned(),
                kind: SinkErrorKind::Rejected,
            });
        }
        self.with(|s| {
            if s.cursor >= through {
                return;
            }
            s.events.extend_from_slice(events);
            s.letters.extend_from_slice(letters);
            s.cursor = through;
            while s.records.front().is_some_and(|r| r.position <= through) {
                s.records.pop_front();
            }
        });
        Ok(())
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        Ok(self.with(|s| s.cursor))
    }

    async fn backlog(&self) -> Result<u64, SinkError> {
        Ok(self.with(|s| {
            s.records
                .iter()
                .filter(|r| r.position > s.cursor)
                .map(|r| r.events.len() as u64)
                .sum()
        }))
    }
}
