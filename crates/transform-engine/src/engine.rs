//! The engine: N workers draining the ingest queues through their own
//! pipelines into the sinks, a dead-letter worker for events shed under
//! [`OverflowPolicy::DeadLetter`], and the shutdown that drains them all.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use domain::{DeadLetter, Event, WriteId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::PipelineSpec;
use crate::ingest::{Ingest, OverflowPolicy};
use crate::log::{EventLog, LogConfig, LogIngest};
use crate::pipeline::BatchOutcome;
use crate::sink::{DeadLetterSink, EventSink, SinkError, Written};
use crate::stats::{Counters, PipelineStats, Settled};
use crate::steps::{AggregateTable, Totals};

/// How the engine is sized and what it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Worker tasks, each with its own queue and pipeline. Default 2: one
    /// per core of the machine this was sized on; the sink's I/O, not the
    /// steps, is what they mostly wait on.
    pub workers: usize,
    /// Events the queues hold in total. Default 512: four batches of slack
    /// per worker keeps workers busy across a store round trip, while a full
    /// queue holds only ~256 KB of 500-byte events. (A 100,000-slot queue
    /// peaked at 110 MB under overload; see docs/benchmarks.md.) Under
    /// [`OverflowPolicy::DeadLetter`] the overflow queue holds as many as one
    /// worker's queue.
    pub queue_capacity: usize,
    /// Most events a worker takes per batch (and per store transaction).
    pub batch_size: usize,
    /// What ingest does when a queue is full.
    pub policy: OverflowPolicy,
    /// The steps.
    pub pipeline: PipelineSpec,
}

impl EngineConfig {
    /// The default [`Self::workers`].
    pub const DEFAULT_WORKERS: usize = 2;
    /// The default [`Self::queue_capacity`].
    pub const DEFAULT_QUEUE_CAPACITY: usize = 512;
    /// The default [`Self::batch_size`].
    pub const DEFAULT_BATCH_SIZE: usize = 64;
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: Self::DEFAULT_WORKERS,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            policy: OverflowPolicy::default(),
            pipeline: PipelineSpec::default(),
        }
    }
}

/// How long a sink write that fails as retryable is repeated before the
/// worker says so (an ERROR) and, while the server runs, starts over: the
/// worker's queue fills meanwhile and ingest pushes back as its overflow
/// policy says.
const SINK_RETRY_FOR: Duration = Duration::from_secs(30);
/// Once shutdown has begun, a failing write is tried this many times in
/// all instead, so draining ends within the server's grace period.
const SINK_ATTEMPTS_STOPPING: u32 = 3;
/// First retry delay; doubles per attempt up to [`SINK_BACKOFF_MAX`].
const SINK_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const SINK_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A running engine.
pub struct Engine {
    ingest: Ingest,
    /// The acknowledged path, once a log is attached.
    log: Option<LogIngest>,
    counters: Arc<Counters>,
    workers: Vec<JoinHandle<()>>,
    /// Tells workers to stop taking new events and drain what is queued.
    shutdown: watch::Sender<bool>,
    /// The workers' view of `shutdown`, for tasks started later.
    stop: watch::Receiver<bool>,
    /// The steps, for the log consumer's own pipeline.
    pipeline: PipelineSpec,
    aggregates: Vec<(Arc<str>, Arc<Mutex<AggregateTable>>)>,
}

/// One aggregation key's totals, summed over workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRow {
    /// The aggregate step's name.
    pub aggregate: Arc<str>,
    /// The key; `None` for the catch-all.
    pub key: Option<Arc<str>>,
    /// The totals.
    pub totals: Totals,
}

impl Engine {
    /// Starts the workers on the current tokio runtime.
    pub fn start<S: EventSink, D: DeadLetterSink>(
        config: EngineConfig,
        sink: Arc<S>,
        dead: Arc<D>,
    ) -> Self {
        let workers = config.workers.max(1);
        let batch_size = config.batch_size.max(1);
        let per_queue = (config.queue_capacity / workers).max(1);
        let counters = Arc::new(Counters::default());
        let (shutdown, stop) = watch::channel(false);
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers + 1);
        let mut aggregates = Vec::new();
        for id in 0..workers {
            let (tx, rx) = mpsc::channel(per_queue);
            queues.push(tx);
            let pipeline = config.pipeline.build();
            aggregates.extend(pipeline.aggregates());
            let worker = Worker {
                id,
                pipeline,
                sink: Arc::clone(&sink),
                dead: Arc::clone(&dead),
                counters: Arc::clone(&counters),
                batch_size,
                stop: stop.clone(),
            };
            handles.push(tokio::spawn(worker.run(Draining::new(rx, stop.clone()))));
        }
        let overflow = (config.policy == OverflowPolicy::DeadLetter).then(|| {
            let (tx, rx) = mpsc::channel(per_queue);
            let worker = DeadLetterWorker {
                dead,
                counters: Arc::clone(&counters),
                batch_size,
                stop: stop.clone(),
            };
            handles.push(tokio::spawn(worker.run(Draining::new(rx, stop.clone()))));
            tx
        });
        let ingest = Ingest::new(queues, overflow, config.policy, Arc::clone(&counters));
        Self {
            ingest,
            log: None,
            pipeline: config.pipeline,
            stop,
            counters,
            workers: handles,
            shutdown,
            aggregates,
        }
    }

    /// The producer handle.
    pub fn ingest(&self) -> Ingest {
        self.ingest.clone()
    }

    /// Attaches a durable event log: starts its writer (group commit) and
    /// its consumer (the pipeline, outputs committed with the log position),
    /// resuming after the log's committed cursor. The consumer's events
    /// count in this engine's stats.
    pub async fn attach_log<L: EventLog>(
        &mut self,
        log: Arc<L>,
        config: LogConfig,
    ) -> Result<LogIngest, SinkError> {
        let pipeline = self.pipeline.build();
        self.aggregates.extend(pipeline.aggregates());
        let tasks = crate::log::start(
            log,
            config,
            pipeline,
            Arc::clone(&self.counters),
            self.stop.clone(),
        )
        .await?;
        self.workers.extend(tasks.handles);
        self.log = Some(tasks.ingest.clone());
        Ok(tasks.ingest)
    }

    /// The acknowledged path, if a log is attached.
    pub fn log_ingest(&self) -> Option<LogIngest> {
        self.log.clone()
    }

    /// Counters and queue state now; the accounting identity holds.
    pub fn stats(&self) -> PipelineStats {
        // Depth first: an event counted in flight may have just left the
        // queue, never the other way round.
        let (queue_depth, queue_capacity) = self.ingest.depth();
        PipelineStats {
            queue_depth,
            queue_capacity,
            log_backlog: self.log.as_ref().map_or(0, LogIngest::backlog),
            ..self.counters.snapshot()
        }
    }

    /// Whether every worker (the dead-letter worker included) is still
    /// running (health checks ask this).
    pub fn is_alive(&self) -> bool {
        !self.workers.is_empty() && self.workers.iter().all(|w| !w.is_finished())
    }

    /// Aggregate totals so far, summed over workers, sorted by name and key.
    pub fn aggregates(&self) -> Vec<AggregateRow> {
        let mut rows: std::collections::BTreeMap<(Arc<str>, Option<Arc<str>>), Totals> =
            Default::default();
        for (name, table) in &self.aggregates {
            let (keys, other) = table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot();
            let mut add = |key: Option<Arc<str>>, t: Totals| {
                let row = rows.entry((Arc::clone(name), key)).or_default();
                row.count += t.count;
                row.sum_cents = row.sum_cents.saturating_add(t.sum_cents);
            };
            for (key, totals) in keys {
                add(Some(key), totals);
            }
            if other.count > 0 {
                add(None, other);
            }
        }
        rows.into_iter()
            .map(|((aggregate, key), totals)| AggregateRow {
                aggregate,
                key,
                totals,
            })
            .collect()
    }

    /// Stops taking events, lets the workers drain every accepted event
    /// (processed or dead-lettered), and returns the final counts. Callers
    /// bound how long they wait (the server's grace period).
    pub async fn shutdown(self) -> PipelineStats {
        self.ingest.close();
        let _ = self.shutdown.send(true);
        for worker in self.workers {
            if let Err(error) = worker.await {
                tracing::error!(%error, "a pipeline worker ended abnormally");
            }
        }
        PipelineStats {
            queue_depth: 0,
            queue_capacity: self.ingest.depth().1,
            ..self.counters.snapshot()
        }
    }
}

struct Worker<S, D> {
    id: usize,
    pipeline: crate::Pipeline,
    sink: Arc<S>,
    dead: Arc<D>,
    counters: Arc<Counters>,
    batch_size: usize,
    /// Whether shutdown has begun (shortens retries).
    stop: watch::Receiver<bool>,
}

impl<S: EventSink, D: DeadLetterSink> Worker<S, D> {
    async fn run(mut self, mut queue: Draining<Event>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut out = BatchOutcome::default();
        while queue.next(&mut batch, self.batch_size).await {
            let events = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
            let settled = self.handle(events, &mut out).await;
            self.counters.settle(settled);
            out.clear();
        }
        tracing::debug!(worker = self.id, "pipeline worker drained");
    }

    /// Runs one batch through the pipeline and the sinks; every event of it
    /// ends in exactly one outcome.
    async fn handle(&mut self, events: Vec<Event>, out: &mut BatchOutcome) -> Settled {
        let taken = events.len() as u64;
        let pipeline = &mut self.pipeline;
        // Steps do not panic by construction (lints, checked arithmetic);
        // if one ever does, the batch's unaccounted events are counted as
        // dropped and the worker lives on.
        let run =
            std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.process_batch(events, out)));
        let mut settled = Settled {
            filtered: out.filtered,
            deduplicated: out.deduplicated,
            ..Settled::default()
        };
        if run.is_err() {
            let lost = taken.saturating_sub(out.total());
            tracing::error!(
                worker = self.id,
                lost,
                "a pipeline step panicked; the batch's unsettled events are lost"
            );
            settled.dropped += lost;
        }
        if !out.kept.is_empty() {
            settled += self.store(&mut out.kept).await;
        }
        if !out.dead.is_empty() {
            settled += dead_letter(&*self.dead, &out.dead, &self.stop).await;
        }
        settled
    }
}

impl<S: EventSink, D: DeadLetterSink> Worker<S, D> {
    /// Writes `kept` to the event store under one write id throughout, so
    /// the batch lands in exactly one store however the attempts end.
    ///
    /// An unavailable store is waited for while the server runs (the queue
    /// fills meanwhile and ingest pushes back): an outage is not a reason to
    /// dead-letter good events. A store that refuses the batch for good, or
    /// is still away once shutdown has begun, sends it to the dead-letter
    /// store; if that one will not take it either (for good, or before
    /// shutdown ends), the events are counted dropped, with an ERROR.
    async fn store(&self, kept: &mut Vec<Event>) -> Settled {
        let write = WriteId::generate();
        let count = kept.len() as u64;
        let mut settled = Settled::default();
        loop {
            let error = match with_retries(&self.stop, || self.sink.append(write, kept)).await {
                // An earlier dead-letter attempt committed after all.
                Ok(Written::StoredElsewhere) => {
                    settled.dead_lettered += count;
                    break;
                }
                Ok(_) => {
                    settled.processed += count;
                    break;
                }
                Err(error) if error.retryable() && !*self.stop.borrow() => {
                    tracing::error!(%error, count, "the event store is still unavailable; still trying these events");
                    continue;
                }
                Err(error) => error,
            };
            let reason = format!("event store refused the batch: {error}");
            let letters: Vec<DeadLetter> = kept
                .iter()
                .map(|event| DeadLetter {
                    event: event.clone(),
                    reason: reason.clone(),
                })
                .collect();
            match with_retries(&self.stop, || self.dead.dead_letter(write, &letters)).await {
                // The append committed after all (its outcome was unknown):
                // the events are stored, not dead.
                Ok(Written::StoredElsewhere) => {
                    settled.processed += count;
                    break;
                }
                Ok(_) => {
                    settled.dead_lettered += count;
                    break;
                }
                Err(error) if *self.stop.borrow() || !error.retryable() => {
                    tracing::error!(%error, count, "neither store took these events; they are lost");
                    settled.dropped += count;
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, count, "the dead-letter store does not take these events; still trying");
                }
            }
        }
        kept.clear();
        settled
    }
}

/// Drains the overflow queue under [`OverflowPolicy::DeadLetter`] into the
/// dead-letter store, a batch per write.
struct DeadLetterWorker<D> {
    dead: Arc<D>,
    counters: Arc<Counters>,
    batch_size: usize,
    stop: watch::Receiver<bool>,
}

impl<D: DeadLetterSink> DeadLetterWorker<D> {
    async fn run(self, mut queue: Draining<Event>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut letters = Vec::with_capacity(self.batch_size);
        while queue.next(&mut batch, self.batch_size).await {
            letters.extend(batch.drain(..).map(|event| DeadLetter {
                event,
                reason: "ingest queue full".to_owned(),
            }));
            let settled = dead_letter(&*self.dead, &letters, &self.stop).await;
            self.counters.settle(settled);
            letters.clear();
        }
        tracing::debug!("dead-letter worker drained");
    }
}

/// A queue read until shutdown has drained it: after the first stop signal
/// the queue refuses new sends, and what is already in it is still handed
/// out.
pub(crate) struct Draining<T> {
    rx: mpsc::Receiver<T>,
    stop: watch::Receiver<bool>,
    draining: bool,
}

impl<T> Draining<T> {
    pub(crate) fn new(rx: mpsc::Receiver<T>, stop: watch::Receiver<bool>) -> Self {
        Self {
            rx,
            stop,
            draining: false,
        }
    }

    /// Moves up to `limit` queued items into `batch`; `false` once the queue
    /// is closed and empty.
    pub(crate) async fn next(&mut self, batch: &mut Vec<T>, limit: usize) -> bool {
        loop {
            tokio::select! {
                received = self.rx.recv_many(batch, limit) => return received > 0,
                changed = self.stop.changed(), if !self.draining => {
                    // Refuse new sends; keep receiving what is queued.
                    let _ = changed;
                    self.rx.close();
                    self.draining = true;
                }
            }
        }
    }
}

/// Writes `letters` (one write id for every attempt) and says how they
/// settled: dead-lettered, or, when the store would not take them before
/// shutdown, dropped (logged). While the server runs it keeps trying.
async fn dead_letter<D: DeadLetterSink>(
    dead: &D,
    letters: &[DeadLetter],
    stop: &watch::Receiver<bool>,
) -> Settled {
    let write = WriteId::generate();
    let count = letters.len() as u64;
    loop {
        match with_retries(stop, || dead.dead_letter(write, letters)).await {
            Ok(_) => {
                return Settled {
                    dead_lettered: count,
                    ..Settled::default()
                };
            }
            Err(error) if *stop.borrow() || !error.retryable() => {
                tracing::error!(%error, count, "the dead-letter store did not take these events; they are lost");
                return Settled {
                    dropped: count,
                    ..Settled::default()
                };
            }
            Err(error) => {
                tracing::error!(%error, count, "the dead-letter store does not take these events; still trying");
            }
        }
    }
}

/// Runs `write` until it succeeds, fails for good, or has failed for
/// [`SINK_RETRY_FOR`] (after shutdown began: [`SINK_ATTEMPTS_STOPPING`]
/// attempts). Every attempt is the same write (same id), so repeating one
/// whose outcome was unknown cannot store it twice.
async fn with_retries<F, Fut>(
    stop: &watch::Receiver<bool>,
    mut write: F,
) -> Result<Written, SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Written, SinkError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = SINK_BACKOFF;
    let mut attempt = 1;
    loop {
        match write().await {
            Ok(written) => return Ok(written),
            Err(error) if error.retryable() => {
                let stopping = *stop.borrow();
                let give_up = if stopping {
                    attempt >= SINK_ATTEMPTS_STOPPING
                } else {
                    started.elapsed() + delay > SINK_RETRY_FOR
                };
                if give_up {
                    return Err(error);
                }
                tracing::warn!(%error, kind = ?error.kind, attempt, retry_in = ?delay, "sink write failed; repeating it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SINK_BACKOFF_MAX);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}
