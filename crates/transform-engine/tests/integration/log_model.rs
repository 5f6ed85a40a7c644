//! A model-based test of the acknowledged-ingest log (proptest state
//! machines).
//!
//! Random sequences of what clients and the machine do: submits (by two
//! producers and anonymously, with next, repeated and skipping sequences,
//! with and without deadlines), calls cancelled at whatever await point they
//! are at, appends held or failed (before or after storing), commits held,
//! let through or failed (before or after landing), time passing, and
//! crashes with a restart over the same durable log. Half the cases run
//! with two commits on their way at once (`EventLog::overlapping_commits`),
//! the other half one at a time. Each step runs on a paused current-thread runtime, so a
//! failing case replays the same interleaving and shrinks to a short one.
//!
//! After every step: the backlog within its bound, and every permit
//! accounted for (free + held by batches on their way + backlog = bound, when
//! no submitter is part-way through taking permits); every (producer,
//! sequence) stored at most once and each producer's stored sequences
//! contiguous; every acknowledged batch already durable. At the end, with
//! everything let through: each stored event processed exactly once, and
//! the whole bound free again, and the outputs committed in the order the
//! events were stored.
//!
//! Why proptest's state machines, not loom or shuttle: the bugs this hunts
//! live in the order of client behaviour (a deadline while a batch waits, a
//! retry after a gap) against the writer and the consumer, not in memory
//! orderings; a deterministic single-threaded runtime explores those orders,
//! and proptest shrinks a failure to the few steps that matter. loom would
//! need tokio's internals modelled; shuttle its own primitives in the engine.
//!
//! `LOG_MODEL_CASES` sets the number of cases (default 64, the quick form
//! CI runs); `scripts/log-model.sh` runs the long form.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{DeadLetter, Event, EventId};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use transform_engine::{
    Ack, Appended, Engine, EngineConfig, EventLog, LogBatch, LogConfig, LogError, LogIngest,
    LogRecord, MemorySink, PipelineSpec, SinkError, SinkErrorKind, check_sequence,
};

/// The backlog bound (the least the engine allows: one largest batch).
const MAX_BACKLOG: u64 = 10_000;
/// Named producers; a submit may also come without a producer id.
const PRODUCERS: u8 = 2;

// ---------------------------------------------------------------- the log

/// How the next append fails, if it does.
const APPEND_OK: u8 = 0;
/// Fails before storing anything (unavailable).
const APPEND_FAIL_BEFORE: u8 = 1;
/// Stores the batches, then reports a failure (an unknown outcome).
const APPEND_FAIL_AFTER: u8 = 2;
/// How the next commit fails, if it does: as the appends (before landing,
/// or after, an unknown outcome).
const COMMIT_OK: u8 = 0;
const COMMIT_FAIL_BEFORE: u8 = 1;
const COMMIT_FAIL_AFTER: u8 = 2;

/// The durable log of the model: survives a crash of the "process" (the
/// runtime), checks producers' sequences as the database log does, and can
/// be held (appends, commits) or made to fail by the test.
struct ModelLog {
    durable: Mutex<Durable>,
    /// Each append takes one permit first: closed, appends wait (batches
    /// pile up behind the writer with their callers waiting).
    appends: Gate,
    /// Each commit takes one permit first: closed, the backlog stays.
    commits: Gate,
    fail_next: AtomicU8,
    fail_commit: AtomicU8,
    /// What `overlapping_commits` says.
    overlap: bool,
}

#[derive(Default)]
struct Durable {
    records: VecDeque<LogRecord>,
    next: i64,
    producers: HashMap<String, u64>,
    cursor: i64,
    /// Every batch ever stored, in order: (producer, sequence).
    stored: Vec<Option<(String, u64)>>,
    /// The ids of every event ever stored.
    stored_ids: Vec<String>,
    /// The ids of every event committed as an output.
    outputs: Vec<String>,
}

struct Gate(Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Self(Semaphore::new(0))
    }
}

impl Gate {
    async fn pass(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }

    fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

impl ModelLog {
    fn new(overlap: bool) -> Self {
        Self {
            durable: Mutex::default(),
            appends: Gate::default(),
            commits: Gate::default(),
            fail_next: AtomicU8::new(APPEND_OK),
            fail_commit: AtomicU8::new(COMMIT_OK),
            overlap,
        }
    }

    fn durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.durable.lock().unwrap()
    }
}

fn unavailable() -> SinkError {
    SinkError {
        message: "model: append failed".to_owned(),
        kind: SinkErrorKind::Unavailable,
    }
}

impl EventLog for ModelLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        self.appends.pass().await;
        let fail = self.fail_next.swap(APPEND_OK, Ordering::SeqCst);
        if fail == APPEND_FAIL_BEFORE {
            return Err(unavailable());
        }
        let mut d = self.durable();
        let mut outcomes = Vec::new();
        for batch in batches {
            if let Some((producer, sequence)) = &batch.producer {
                let last = d.producers.get(producer).copied();
                if let Some(refused) = check_sequence(last, *sequence) {
                    outcomes.push(refused);
                    continue;
                }
                d.producers.insert(producer.clone(), *sequence);
            }
            d.next += 1;
            let position = d.next;
            d.records
                .push_back(LogRecord::new(position, batch.events.clone()));
            d.stored.push(batch.producer.clone());
            let ids: Vec<String> = batch.events.iter().map(id_of).collect();
            d.stored_ids.extend(ids);
            outcomes.push(Appended::New { position });
        }
        if fail == APPEND_FAIL_AFTER {
            return Err(SinkError {
                message: "model: append not confirmed".to_owned(),
                kind: SinkErrorKind::OutcomeUnknown,
            });
        }
        Ok(outcomes)
    }

    async fn read(&self, after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        let d = self.durable();
        Ok(d.records
            .iter()
            .filter(|r| r.position > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn commit(
        &self,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        damaged: &[(i64, String)],
    ) -> Result<(), SinkError> {
        self.commits.pass().await;
        assert!(
            letters.is_empty() && damaged.is_empty(),
            "nothing in the model dead-letters"
        );
        let fail = self.fail_commit.swap(COMMIT_OK, Ordering::SeqCst);
        if fail == COMMIT_FAIL_BEFORE {
            return Err(unavailable());
        }
        let mut d = self.durable();
        if d.cursor >= through {
            return Ok(());
        }
        if d.cursor != after {
            // As the database log: only with two commits on their way may
            // the later one arrive before the earlier landed; it stores
            // nothing.
            assert!(self.overlap, "a commit starts from the cursor");
            assert!(d.cursor < after, "a commit of a range the cursor passed");
            return Err(unavailable());
        }
        d.outputs.extend(events.iter().map(id_of));
        d.cursor = through;
        while d.records.front().is_some_and(|r| r.position <= through) {
            d.records.pop_front();
        }
        if fail == COMMIT_FAIL_AFTER {
            return Err(SinkError {
                message: "model: commit not confirmed".to_owned(),
                kind: SinkErrorKind::OutcomeUnknown,
            });
        }
        Ok(())
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        Ok(self.durable().cursor)
    }

    async fn backlog(&self) -> Result<u64, SinkError> {
        let d = self.durable();
        Ok(d.records.iter().map(|r| r.events.len() as u64).sum())
    }

    fn overlapping_commits(&self) -> bool {
        self.overlap
    }
}

fn id_of(event: &Event) -> String {
    event
        .event_id
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------- the reference

/// What the generator needs to know: the highest sequence each producer
/// has used, so it can send the next, repeat one, or skip ahead.
#[derive(Debug, Clone, Default)]
struct Model {
    issued: [u64; PRODUCERS as usize],
    anonymous: u64,
    /// Whether the log lets two commits be on their way (fixed per case).
    overlap: bool,
}

#[derive(Debug, Clone)]
enum Step {
    /// A call of `submit`, abandoned by its client after `deadline`.
    Submit {
        producer: Option<(u8, u64)>,
        /// Anonymous batches are told apart by this.
        tag: u64,
        events: u16,
        /// The server's wait for room in a full backlog.
        wait: Option<Duration>,
        /// The client's deadline.
        deadline: Option<Duration>,
    },
    /// The client drops its call wherever it is.
    Cancel(usize),
    /// Let this many appends through.
    LetAppends(u8),
    /// Let this many commits through.
    LetCommits(u8),
    /// The next append fails, having stored its batches or not.
    FailAppend { stored: bool },
    /// The next commit fails, having landed or not.
    FailCommit { landed: bool },
    /// Time passes.
    Advance(Duration),
    /// The process dies (every task with it) and starts again over the log.
    Restart,
}

fn millis(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

impl ReferenceStateMachine for Model {
    type State = Self;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Self> {
        any::<bool>()
            .prop_map(|overlap| Self {
                overlap,
                ..Self::default()
            })
            .boxed()
    }

    fn transitions(state: &Self) -> BoxedStrategy<Step> {
        let issued = state.issued;
        let anonymous = state.anonymous;
        let sequence = (0..PRODUCERS).prop_flat_map(move |p| {
            let last = issued[p as usize];
            let choices = prop_oneof![
                6 => Just(last + 1),
                2 => 1..=last.max(1),
                1 => Just(last + 2),
            ];
            choices.prop_map(move |sequence| Some((p, sequence)))
        });
        let producer = prop_oneof![4 => sequence, 1 => Just(None)];
        let submit = (
            producer,
            1u16..=4_000,
            proptest::option::of(millis(0..=50)),
            proptest::option::of(millis(1..=300)),
        )
            .prop_map(move |(producer, events, wait, deadline)| Step::Submit {
                producer,
                tag: anonymous + 1,
                events,
                wait,
                deadline,
            });
        prop_oneof![
            8 => submit,
            3 => any::<usize>().prop_map(Step::Cancel),
            3 => (1u8..=3).prop_map(Step::LetAppends),
            3 => (1u8..=3).prop_map(Step::LetCommits),
            1 => any::<bool>().prop_map(|stored| Step::FailAppend { stored }),
            1 => any::<bool>().prop_map(|landed| Step::FailCommit { landed }),
            2 => millis(1..=400).prop_map(Step::Advance),
            1 => Just(Step::Restart),
        ]
        .boxed()
    }

    fn apply(mut state: Self, step: &Step) -> Self {
        if let Step::Submit { producer, tag, .. } = step {
            state.anonymous = state.anonymous.max(*tag);
            if let Some((p, sequence)) = producer {
                let issued = &mut state.issued[usize::from(*p)];
                *issued = (*issued).max(*sequence);
            }
        }
        state
    }
}

// ------------------------------------------------------ the system tested

/// One run of the server process: a runtime of its own, so a crash is
/// dropping it with every task on it.
struct Process {
    runtime: Runtime,
    engine: Option<Engine>,
    ingest: LogIngest,
}

struct Call {
    handle: JoinHandle<Option<Result<Ack, LogError>>>,
    producer: Option<(String, u64)>,
    first_id: String,
}

struct System {
    log: Arc<ModelLog>,
    process: Option<Process>,
    calls: Vec<Call>,
    /// Batches acknowledged as new or duplicate: (producer, sequence).
    acknowledged: Vec<Option<(String, u64)>>,
}

fn start(log: &Arc<ModelLog>) -> Process {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (engine, ingest) = runtime.block_on(async {
        let config = EngineConfig {
            workers: 1,
            pipeline: PipelineSpec::from_toml("").unwrap(),
            ..EngineConfig::default()
        };
        let mut engine = Engine::start(
            config,
            Arc::new(MemorySink::new()),
            Arc::new(MemorySink::new()),
        );
        let ingest = engine
            .attach_log(
                Arc::clone(log),
                LogConfig {
                    max_backlog: MAX_BACKLOG as usize,
                    ..LogConfig::default()
                },
            )
            .await
            .unwrap();
        (engine, ingest)
    });
    let mut process = Process {
        runtime,
        engine: Some(engine),
        ingest,
    };
    process.settle();
    process
}

impl Process {
    /// Lets every task run until none can move without time passing.
    fn settle(&mut self) {
        self.runtime.block_on(async {
            for _ in 0..64 {
                tokio::task::yield_now().await;
            }
        });
    }
}

fn events(name: &str, n: u16) -> Vec<Event> {
    let template = crate::legacy_events().swap_remove(0);
    (0..n)
        .map(|i| {
            let mut event = template.clone();
            event.event_id = Some(EventId::parse(format!("{name}-{i}")).unwrap());
            event
        })
        .collect()
}

impl System {
    fn process(&mut self) -> &mut Process {
        let log = &self.log;
        self.process.get_or_insert_with(|| start(log))
    }

    /// Records the calls that finished, checking that what was
    /// acknowledged is durable at that moment.
    fn reap(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        let mut i = 0;
        while i < self.calls.len() {
            if !self.calls[i].handle.is_finished() {
                i += 1;
                continue;
            }
            let call = self.calls.swap_remove(i);
            let outcome = process.runtime.block_on(call.handle);
            let Ok(Some(Ok(ack))) = outcome else {
                continue;
            };
            let d = self.log.durable();
            let durable = match &call.producer {
                // A duplicate: the producer's record is at or past it (the
                // batch itself, or, for a sequence below a producer's first
                // batch, one the contract lets stand for it).
                Some((producer, sequence)) if ack.duplicate => d
                    .stored
                    .iter()
                    .flatten()
                    .any(|(p, s)| p == producer && s >= sequence),
                Some(key) => d.stored.contains(&Some(key.clone())),
                None => d.stored_ids.contains(&call.first_id),
            };
            assert!(
                durable,
                "acknowledged but not durable: {:?} {ack:?}",
                call.producer
            );
            drop(d);
            self.acknowledged.push(call.producer);
        }
    }

    fn check(&self) {
        if let Some(process) = &self.process {
            let ingest = &process.ingest;
            assert!(
                ingest.backlog() <= ingest.max_backlog(),
                "backlog {} above its bound {}",
                ingest.backlog(),
                ingest.max_backlog()
            );
            let bound = ingest.bound();
            let total = bound.free + bound.held + bound.backlog;
            assert!(
                total <= bound.max + bound.debt,
                "permits over the bound: {bound:?}"
            );
            assert!(
                bound.waiting > 0 || total == bound.max + bound.debt,
                "permits lost or doubled: {bound:?}"
            );
        }
        let d = self.log.durable();
        let mut seen = HashSet::new();
        let mut per_producer: HashMap<&str, Vec<u64>> = HashMap::new();
        for (producer, sequence) in d.stored.iter().flatten() {
            assert!(
                seen.insert((producer, sequence)),
                "{producer}/{sequence} stored twice"
            );
            per_producer.entry(producer).or_default().push(*sequence);
        }
        for (producer, sequences) in per_producer {
            for pair in sequences.windows(2) {
                assert_eq!(
                    pair[1],
                    pair[0] + 1,
                    "{producer}: sequence {} stored after {}, skipping over the gap",
                    pair[1],
                    pair[0]
                );
            }
        }
    }
}

struct LogTest;

impl StateMachineTest for LogTest {
    type SystemUnderTest = System;
    type Reference = Model;

    fn init_test(model: &Model) -> System {
        let log = Arc::new(ModelLog::new(model.overlap));
        let process = start(&log);
        System {
            log,
            process: Some(process),
            calls: Vec::new(),
            acknowledged: Vec::new(),
        }
    }

    fn apply(mut system: System, _: &Model, step: Step) -> System {
        match step {
            Step::Submit {
                producer,
                tag,
                events: n,
                wait,
                deadline,
            } => {
                let producer = producer.map(|(p, sequence)| (format!("p{p}"), sequence));
                let name = match &producer {
                    Some((p, sequence)) => format!("{p}-{sequence}"),
                    None => format!("anonymous-{tag}"),
                };
                let batch = LogBatch {
                    producer: producer.clone(),
                    events: events(&name, n),
                };
                let process = system.process();
                let ingest = process.ingest.clone();
                let handle = process.runtime.spawn(async move {
                    let call = ingest.submit(batch, wait);
                    match deadline {
                        Some(deadline) => tokio::time::timeout(deadline, call).await.ok(),
                        None => Some(call.await),
                    }
                });
                system.calls.push(Call {
                    handle,
                    producer,
                    first_id: format!("{name}-0"),
                });
            }
            Step::Cancel(i) => {
                if !system.calls.is_empty() {
                    let call = system.calls.swap_remove(i % system.calls.len());
                    call.handle.abort();
                }
            }
            Step::LetAppends(n) => system.log.appends.open(usize::from(n)),
            Step::LetCommits(n) => system.log.commits.open(usize::from(n)),
            Step::FailAppend { stored } => system.log.fail_next.store(
                if stored {
                    APPEND_FAIL_AFTER
                } else {
                    APPEND_FAIL_BEFORE
                },
                Ordering::SeqCst,
            ),
            Step::FailCommit { landed } => system.log.fail_commit.store(
                if landed {
                    COMMIT_FAIL_AFTER
                } else {
                    COMMIT_FAIL_BEFORE
                },
                Ordering::SeqCst,
            ),
            Step::Advance(by) => {
                let process = system.process();
                process.runtime.block_on(tokio::time::advance(by));
            }
            Step::Restart => {
                // Every call dies with the process, unanswered.
                system.calls.clear();
                system.process = None;
                system.process();
            }
        }
        system.process().settle();
        system.reap();
        system
    }

    fn check_invariants(system: &System, _: &Model) {
        system.check();
    }

    fn teardown(mut system: System, _: Model) {
        // Let everything through and wait for the backlog to drain.
        system.log.appends.open(1 << 20);
        system.log.commits.open(1 << 20);
        system.log.fail_next.store(APPEND_OK, Ordering::SeqCst);
        system.log.fail_commit.store(COMMIT_OK, Ordering::SeqCst);
        for _ in 0..100 {
            let process = system.process();
            process
                .runtime
                .block_on(tokio::time::advance(Duration::from_secs(1)));
            process.settle();
            system.reap();
            system.check();
            let idle = system.calls.is_empty()
                && system
                    .process
                    .as_ref()
                    .is_some_and(|p| p.ingest.backlog() == 0);
            if idle {
                break;
            }
        }
        let process = system.process();
        assert_eq!(process.ingest.backlog(), 0, "the backlog drained");
        let bound = process.ingest.bound();
        assert_eq!(
            bound.free, bound.max,
            "the whole bound free again: {bound:?}"
        );
        let d = system.log.durable();
        // Every event passes the (empty) pipeline, so the outputs are the
        // stored events, each once, in the order stored.
        assert_eq!(
            d.outputs, d.stored_ids,
            "each stored event processed exactly once, in log order"
        );
        drop(d);
        if let Some(mut process) = system.process.take()
            && let Some(engine) = process.engine.take()
        {
            process.runtime.block_on(engine.shutdown());
        }
    }
}

fn cases() -> u32 {
    std::env::var("LOG_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn the_log_keeps_its_promises_under_any_client(sequential 1..40 => LogTest);
}

/// The case the model found on the code before the bound moved with the
/// batch (docs/log-model.md): a caller whose deadline expires while its
/// batch waits for the append gave its room back, the batch was appended
/// anyway, and the next batch took the same room: 12,000 events in a
/// backlog bounded at 10,000.
#[test]
fn a_deadline_while_the_batch_waits_keeps_the_bound() {
    let submit = |producer: u8, deadline: Option<Duration>| Step::Submit {
        producer: Some((producer, 1)),
        tag: 0,
        events: 6_000,
        wait: None,
        deadline,
    };
    let steps = vec![
        submit(0, Some(Duration::from_millis(1))),
        Step::Advance(Duration::from_millis(2)),
        submit(1, None),
        Step::LetAppends(2),
    ];
    LogTest::test_sequential(Config::default(), Model::default(), steps, None);
}
