//! The running engine: exact accounting under sustained overload for every
//! policy, bounded queues, graceful drain, and sink failures.

use std::sync::Arc;
use std::time::Duration;

use domain::Event;
use transform_engine::{
    Admission, Engine, EngineConfig, EventLog as _, IngestError, LogBatch, LogConfig, LogError,
    MemoryLog, MemorySink, OverflowPolicy, PipelineSpec, PipelineStats,
};

/// Consumer: 2 workers × 16 events per 10 ms write = 3,200 events/s.
/// Producer: 32 events per 1 ms = 32,000 events/s, ten times faster.
const WORKERS: usize = 2;
const BATCH: usize = 16;
const CAPACITY: usize = 64;
const BURST: usize = 4_000;

fn config(policy: OverflowPolicy) -> EngineConfig {
    EngineConfig {
        workers: WORKERS,
        queue_capacity: CAPACITY,
        batch_size: BATCH,
        policy,
        pipeline: PipelineSpec::from_toml(crate::TWELVE_STEPS).unwrap(),
    }
}

/// Events with unique ids, cycling the fixture's shapes.
fn events(n: usize) -> Vec<Event> {
    let shapes = crate::legacy_events();
    (0..n)
        .map(|i| {
            let mut event = shapes[i % shapes.len()].clone();
            event.event_id = Some(domain::EventId::parse(format!("burst-{i}")).unwrap());
            event
        })
        .collect()
}

#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    dropped: u64,
    dead_lettered: u64,
}

/// Runs the overload for one policy and checks the identity at every sample
/// and at the end.
async fn overload(
    policy: OverflowPolicy,
) -> (PipelineStats, Tally, Arc<MemorySink>, Arc<MemorySink>) {
    let store = Arc::new(MemorySink::new());
    store.set_delay(Duration::from_millis(10));
    let letters = Arc::new(MemorySink::new());
    let engine = Engine::start(config(policy), Arc::clone(&store), Arc::clone(&letters));
    let ingest = engine.ingest();
    let engine = Arc::new(engine);

    // Watch the accounting while the burst runs.
    let watcher = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let mut samples = 0u64;
            loop {
                let stats = engine.stats();
                assert!(stats.balanced(), "identity broken mid-run: {stats:?}");
                assert!(
                    stats.queue_depth <= stats.queue_capacity,
                    "queue over capacity: {stats:?}"
                );
                // Queued (the overflow queue included) + one batch per
                // worker being written (the dead-letter worker included).
                let writers = WORKERS + usize::from(policy == OverflowPolicy::DeadLetter);
                let bound = stats.queue_capacity + (writers * BATCH) as u64;
                assert!(
                    stats.in_flight <= bound,
                    "in flight {} > {bound}",
                    stats.in_flight
                );
                samples += 1;
                tokio::time::sleep(Duration::from_micros(500)).await;
                if stats.received == BURST as u64 && stats.in_flight == 0 {
                    return samples;
                }
            }
        })
    };

    let mut tally = Tally::default();
    for (n, event) in events(BURST).into_iter().enumerate() {
        match ingest.submit(event).await.unwrap() {
            Admission::Accepted => tally.accepted += 1,
            Admission::Dropped => tally.dropped += 1,
            Admission::DeadLettered => tally.dead_lettered += 1,
        }
        if n % 32 == 31 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let samples = watcher.await.unwrap();
    assert!(samples > 100, "only {samples} samples");
    let engine = Arc::into_inner(engine).unwrap();
    let stats = engine.shutdown().await;
    (stats, tally, store, letters)
}

fn assert_exact(stats: &PipelineStats, tally: &Tally, store: &MemorySink, letters: &MemorySink) {
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.received, BURST as u64);
    assert_eq!(
        stats.processed,
        store.event_count() as u64,
        "processed = events in the store"
    );
    assert_eq!(
        stats.dead_lettered,
        letters.letters().len() as u64,
        "dead-lettered = letters stored"
    );
    assert_eq!(
        tally.accepted + tally.dropped + tally.dead_lettered,
        BURST as u64,
        "each submit got one answer"
    );
    assert_eq!(stats.dropped, tally.dropped, "sheds counted once");
}

#[tokio::test(start_paused = true)]
async fn overload_with_block_sheds_nothing_and_pushes_back() {
    let (stats, tally, store, letters) = overload(OverflowPolicy::Block).await;
    assert_exact(&stats, &tally, &store, &letters);
    assert_eq!((stats.dropped, tally.accepted), (0, BURST as u64));
}

#[tokio::test(start_paused = true)]
async fn overload_with_block_timeout_sheds_after_waiting() {
    let (stats, tally, store, letters) =
        overload(OverflowPolicy::BlockTimeout(Duration::from_millis(2))).await;
    assert_exact(&stats, &tally, &store, &letters);
    assert!(stats.dropped > 0 && tally.accepted > 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn overload_with_drop_newest_counts_every_shed_event() {
    let (stats, tally, store, letters) = overload(OverflowPolicy::DropNewest).await;
    assert_exact(&stats, &tally, &store, &letters);
    assert!(
        stats.dropped > BURST as u64 / 2,
        "most of a 10x burst is shed: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn overload_with_dead_letter_keeps_every_shed_event() {
    let (stats, tally, store, letters) = overload(OverflowPolicy::DeadLetter).await;
    assert_exact(&stats, &tally, &store, &letters);
    assert_eq!(stats.dropped, 0);
    let shed = letters
        .letters()
        .iter()
        .filter(|l| l.reason == "ingest queue full")
        .count() as u64;
    assert_eq!(shed, tally.dead_lettered);
    assert!(shed > BURST as u64 / 2, "{stats:?}");
}

/// Shutdown in the middle of a burst: every event ingest accepted ends up
/// in the store or the dead-letter store.
#[tokio::test(start_paused = true)]
async fn shutdown_mid_burst_loses_nothing_accepted() {
    let store = Arc::new(MemorySink::new());
    store.set_delay(Duration::from_millis(10));
    let letters = Arc::new(MemorySink::new());
    let engine = Engine::start(
        config(OverflowPolicy::Block),
        Arc::clone(&store),
        Arc::clone(&letters),
    );
    let ingest = engine.ingest();
    let producer = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for event in events(BURST) {
            let id = event.event_id.clone();
            match ingest.submit(event).await {
                Ok(Admission::Accepted) => accepted.push(id),
                Ok(other) => panic!("Block never sheds: {other:?}"),
                Err(IngestError::ShuttingDown) => break,
            }
        }
        accepted
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = engine.shutdown().await;
    let accepted = producer.await.unwrap();
    assert!(
        !accepted.is_empty() && accepted.len() < BURST,
        "shut down mid-burst: {}",
        accepted.len()
    );
    assert!(stats.balanced() && stats.in_flight == 0, "{stats:?}");
    assert_eq!(stats.received, accepted.len() as u64);
    // The pipeline filters and de-duplicates some; every accepted event is
    // accounted for, and everything kept is in the store.
    let settled = stats.processed + stats.filtered + stats.deduplicated + stats.dead_lettered;
    assert_eq!(settled, accepted.len() as u64);
    assert_eq!(stats.processed, store.event_count() as u64);
    let stored: std::collections::HashSet<_> =
        store.events().into_iter().map(|e| e.event_id).collect();
    assert_eq!(stored.len(), store.event_count(), "nothing stored twice");
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_store_dead_letters_and_both_down_counts_dropped() {
    let store = Arc::new(MemorySink::new());
    let letters = Arc::new(MemorySink::new());
    let spec = PipelineSpec::default();
    let cfg = EngineConfig {
        workers: 1,
        batch_size: 8,
        pipeline: spec,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::clone(&store), Arc::clone(&letters));
    let ingest = engine.ingest();

    // Transient: ten failures (about 11 s of backoff, as in a database
    // restart), then the write succeeds; nothing is dead-lettered.
    store.fail_next(10);
    for event in events(8) {
        ingest.submit(event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(store.event_count(), 8, "retried into the store");
    assert!(letters.letters().is_empty());

    // The store refuses the batch for good: it goes to the dead-letter
    // store.
    store.refuse_next(1);
    for event in events(16).into_iter().skip(8) {
        ingest.submit(event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let letters_now = letters.letters();
    assert_eq!(letters_now.len(), 8);
    assert!(
        letters_now[0].reason.starts_with("event store refused"),
        "{}",
        letters_now[0].reason
    );

    // Both down at shutdown: counted as dropped, never silently lost.
    store.fail_next(usize::MAX);
    letters.fail_next(usize::MAX);
    for event in events(24).into_iter().skip(16) {
        ingest.submit(event).await.unwrap();
    }
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.dropped),
        (8, 8, 8)
    );
}

/// A write whose confirmation is lost is repeated under the same write id,
/// so it is stored once; if no confirmation ever comes, the dead-letter
/// fallback under that id learns the append did commit, and nothing is
/// dead-lettered.
#[tokio::test(start_paused = true)]
async fn unconfirmed_writes_are_stored_exactly_once() {
    // One sink for both roles, so it keeps one record of write ids, as the
    // database's `applied_writes` does.
    let sink = Arc::new(MemorySink::new());
    let cfg = EngineConfig {
        workers: 1,
        batch_size: 8,
        pipeline: PipelineSpec::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::clone(&sink), Arc::clone(&sink));
    let ingest = engine.ingest();

    // The first attempt commits but is not confirmed; the repeat confirms.
    sink.unconfirm_next(1);
    for event in events(8) {
        ingest.submit(event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.event_count(), 8, "stored once, not twice");

    // No attempt is ever confirmed: the fallback finds the batch stored.
    sink.unconfirm_next(3);
    for event in events(16).into_iter().skip(8) {
        ingest.submit(event).await.unwrap();
    }
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(sink.event_count(), 16);
    assert!(sink.letters().is_empty(), "{:?}", sink.letters());
    assert_eq!((stats.processed, stats.dead_lettered), (16, 0));
}

#[tokio::test]
async fn workers_stay_alive_while_running_and_aggregates_read_while_running() {
    let store = Arc::new(MemorySink::new());
    let engine = Engine::start(
        EngineConfig::default(),
        Arc::clone(&store),
        Arc::new(MemorySink::new()),
    );
    assert!(engine.is_alive());
    for event in crate::legacy_events() {
        engine.ingest().submit(event).await.unwrap();
    }
    while engine.stats().in_flight > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows = engine.aggregates();
    let count: u64 = rows.iter().map(|r| r.totals.count).sum();
    assert_eq!(
        count, 500,
        "per_action counted every event across both workers: {rows:?}"
    );
    assert!(engine.is_alive(), "workers still running after the work");
    let stats = engine.shutdown().await;
    assert_eq!(stats.processed, 500);
}

#[test]
fn overflow_policies_parse_and_print() {
    for text in ["block", "block-timeout:250ms", "drop-newest", "dead-letter"] {
        let policy: OverflowPolicy = text.parse().unwrap();
        assert_eq!(policy.to_string(), text);
    }
    assert_eq!(
        "block-timeout:250".parse::<OverflowPolicy>().unwrap(),
        OverflowPolicy::BlockTimeout(Duration::from_millis(250))
    );
    let error = "shed".parse::<OverflowPolicy>().unwrap_err();
    assert!(
        error.contains("\"shed\" is not an overflow policy"),
        "{error}"
    );
}

/// An engine (default pipeline, memory sinks) with `log` attached.
async fn with_log<L: transform_engine::EventLog>(
    log: Arc<L>,
    config: LogConfig,
) -> (Engine, transform_engine::LogIngest) {
    let sink = Arc::new(MemorySink::new());
    let mut engine = Engine::start(EngineConfig::default(), Arc::clone(&sink), sink);
    let ingest = engine.attach_log(log, config).await.unwrap();
    (engine, ingest)
}

fn batch(producer: Option<(&str, u64)>, events: Vec<Event>) -> LogBatch {
    LogBatch {
        producer: producer.map(|(id, sequence)| (id.to_owned(), sequence)),
        events,
    }
}

/// Acknowledged batches go through the pipeline exactly once: retries of a
/// durable sequence are duplicates, and the outputs are committed with the
/// log position.
#[tokio::test]
async fn acknowledged_batches_are_processed_exactly_once() {
    let log = Arc::new(MemoryLog::new());
    let (engine, ingest) = with_log(Arc::clone(&log), LogConfig::default()).await;
    let all = events(30);
    for (n, chunk) in all.chunks(10).enumerate() {
        let sequence = n as u64 + 1;
        let ack = ingest
            .submit(batch(Some(("p", sequence)), chunk.to_vec()), None)
            .await
            .unwrap();
        assert_eq!((ack.accepted, ack.duplicate), (10, false));
        // The retry after a lost response.
        let again = ingest
            .submit(batch(Some(("p", sequence)), chunk.to_vec()), None)
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicate), (0, true));
    }
    while engine.stats().log_backlog > 0 || engine.stats().in_flight > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = engine.stats();
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!((stats.received, stats.processed), (30, 30));
    assert_eq!(log.events(), all, "every event once, in order");
    engine.shutdown().await;
}

/// A full backlog pushes back: a submitter with a wait gives up with
/// `Full` (RESOURCE_EXHAUSTED), and room comes back once the consumer has
/// committed.
#[tokio::test(start_paused = true)]
async fn a_full_backlog_refuses_after_the_wait_and_recovers() {
    let log = Arc::new(MemoryLog::new());
    // A backlog already at the bound when the engine starts: an earlier
    // run's acknowledged batches, not yet processed.
    log.append(&[batch(None, events(10_000))]).await.unwrap();
    let (engine, ingest) = with_log(
        Arc::clone(&log),
        LogConfig {
            max_backlog: 10_000,
            ..LogConfig::default()
        },
    )
    .await;
    assert_eq!(engine.stats().log_backlog, 10_000);
    let refused = ingest
        .submit(batch(None, events(1)), Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(refused, LogError::Full(10_000)), "{refused:?}");
    // Waiting lets the consumer process the backlog and free the room.
    let ack = ingest
        .submit(batch(None, events(1)), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(ack.accepted, 1);
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(
        stats.received, 10_001,
        "the earlier run's backlog counts as received"
    );
}

/// A record the log cannot decode (a damaged row left by an earlier run)
/// is kept aside with its position and error, its events count as
/// dead-lettered, and the records after it are processed: the log moves on
/// instead of retrying the read for ever.
#[tokio::test]
async fn a_damaged_record_is_kept_aside_and_the_log_moves_on() {
    let log = Arc::new(MemoryLog::new());
    let all = events(9);
    for (n, chunk) in all.chunks(3).enumerate() {
        log.append(&[batch(Some(("p", n as u64 + 1)), chunk.to_vec())])
            .await
            .unwrap();
    }
    log.damage(2, "byte 7: not a varint");
    let (engine, ingest) = with_log(Arc::clone(&log), LogConfig::default()).await;
    ingest
        .submit(batch(Some(("p", 4)), events(12)[9..].to_vec()), None)
        .await
        .unwrap();
    while engine.stats().log_backlog > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.in_flight),
        (9, 3, 0),
        "the damaged record's three events dead-lettered, the rest processed"
    );
    assert_eq!(log.damaged(), [(2, "byte 7: not a varint".to_owned())]);
    let stored: Vec<Event> = log.events();
    let expected: Vec<Event> = all[..3]
        .iter()
        .chain(&all[6..])
        .chain(&events(12)[9..])
        .cloned()
        .collect();
    assert_eq!(stored, expected);
}

/// Outputs the store refuses for good are dead-lettered with the range, so
/// every acknowledged event still ends in exactly one outcome and the log
/// moves on.
#[tokio::test]
async fn refused_outputs_are_dead_lettered_and_the_log_moves_on() {
    let log = Arc::new(MemoryLog::new());
    log.refuse_outputs(1);
    let (engine, ingest) = with_log(Arc::clone(&log), LogConfig::default()).await;
    ingest
        .submit(batch(Some(("p", 1)), events(5)), None)
        .await
        .unwrap();
    while engine.stats().log_backlog > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ingest
        .submit(batch(Some(("p", 2)), events(8)[5..].to_vec()), None)
        .await
        .unwrap();
    while engine.stats().log_backlog > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(
        (stats.dead_lettered, stats.processed, stats.in_flight),
        (5, 3, 0)
    );
    assert_eq!(log.letters().len(), 5);
    assert!(
        log.letters()[0]
            .reason
            .starts_with("event store refused the batch")
    );
    assert_eq!(log.events().len(), 3, "the next range is stored as usual");
}

/// The event store down for minutes while the engine runs: the batch is
/// neither dead-lettered nor dropped; it is stored once the store is back.
#[tokio::test(start_paused = true)]
async fn an_event_store_down_for_minutes_loses_nothing_while_running() {
    let store = Arc::new(MemorySink::new());
    let letters = Arc::new(MemorySink::new());
    let cfg = EngineConfig {
        workers: 1,
        batch_size: 8,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::clone(&store), Arc::clone(&letters));
    let ingest = engine.ingest();
    // About two minutes of failures (2 s apart once backed off).
    store.fail_next(60);
    for event in events(8) {
        ingest.submit(event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(store.event_count(), 8, "stored once the store was back");
    assert!(
        letters.letters().is_empty(),
        "an outage dead-letters nothing"
    );
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.dropped),
        (8, 0, 0)
    );
}

/// A [`MemoryLog`] that counts the consumer's reads and holds its commits
/// until the test opens the gate.
struct Watched {
    log: MemoryLog,
    reads: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Watched {
    fn new(open: bool) -> Self {
        Self {
            log: MemoryLog::new(),
            reads: std::sync::atomic::AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(if open { 1 << 20 } else { 0 }),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl transform_engine::EventLog for Watched {
    async fn append(
        &self,
        batches: &[LogBatch],
    ) -> Result<Vec<transform_engine::Appended>, transform_engine::SinkError> {
        self.log.append(batches).await
    }

    async fn read(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<transform_engine::LogRecord>, transform_engine::SinkError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.log.read(after, limit).await
    }

    async fn commit(
        &self,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[domain::DeadLetter],
        damaged: &[(i64, String)],
    ) -> Result<(), transform_engine::SinkError> {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.log
            .commit(after, through, events, letters, damaged)
            .await
    }

    async fn cursor(&self) -> Result<i64, transform_engine::SinkError> {
        self.log.cursor().await
    }

    async fn backlog(&self) -> Result<u64, transform_engine::SinkError> {
        self.log.backlog().await
    }
}

async fn drained(engine: &Engine) {
    while engine.stats().log_backlog > 0 || engine.stats().in_flight > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The consumer is handed the batches the writer appended: after the first
/// (which it cannot tell is the next one after an earlier run's), it never
/// reads the log, and still commits every event once, in order.
#[tokio::test]
async fn appended_batches_reach_the_consumer_without_reading_the_log() {
    let log = Arc::new(Watched::new(true));
    let (engine, ingest) = with_log(Arc::clone(&log), LogConfig::default()).await;
    let all = events(200);
    for (n, chunk) in all.chunks(10).enumerate() {
        let ack = ingest
            .submit(batch(Some(("p", n as u64 + 1)), chunk.to_vec()), None)
            .await
            .unwrap();
        assert_eq!(ack.accepted, 10);
    }
    drained(&engine).await;
    assert_eq!(log.log.events(), all, "every event once, in order");
    assert!(
        log.reads() <= 2,
        "20 batches took {} reads of the log",
        log.reads()
    );
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
}

/// Past the hand-off's bound the writer keeps appending but stops handing
/// over; the consumer reads those batches from the log, then takes the
/// hand-off again, and nothing is skipped or doubled.
#[tokio::test]
async fn past_the_hand_off_bound_the_consumer_reads_the_log() {
    let log = Arc::new(Watched::new(false));
    let (engine, ingest) = with_log(
        Arc::clone(&log),
        LogConfig {
            read_batches: 1,
            handoff_events: 10_000,
            ..LogConfig::default()
        },
    )
    .await;
    let all = events(28_000);
    let mut chunks = all.chunks(4_000);
    // Six batches while the consumer's first commit is held: two fit the
    // hand-off, four do not.
    for (n, chunk) in chunks.by_ref().take(6).enumerate() {
        ingest
            .submit(batch(Some(("p", n as u64 + 1)), chunk.to_vec()), None)
            .await
            .unwrap();
    }
    log.gate.add_permits(1 << 20);
    drained(&engine).await;
    let read_back = log.reads();
    // And one more once it has caught up: handed over again.
    let last = chunks.next().unwrap();
    ingest
        .submit(batch(Some(("p", 7)), last.to_vec()), None)
        .await
        .unwrap();
    drained(&engine).await;
    assert_eq!(log.log.events(), all, "every event once, in order");
    assert!(
        (5..=6).contains(&read_back),
        "the first batch and the four past the bound come from the log, the second from memory: {read_back} reads"
    );
    assert_eq!(log.reads(), read_back, "the seventh batch was handed over");
    let stats = engine.shutdown().await;
    assert!(stats.balanced(), "{stats:?}");
}
