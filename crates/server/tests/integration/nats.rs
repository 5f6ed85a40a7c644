//! The event log on NATS JetStream, shared by three replicas: producers
//! stream acknowledged batches through two of them, one of those is
//! SIGKILLed mid-run and restarted, every unacknowledged batch is re-sent
//! with its sequence; the stored events are then exactly the acknowledged
//! ones. Then NATS is cut off through a proxy. NATS is the real server on
//! 127.0.0.1:4222 (`.ci/run` starts it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use test_support::TestDb;

use crate::kill::{BATCHES, EVENTS_PER_BATCH, produce};
use crate::support::Server;

pub const NATS: &str = "nats://127.0.0.1:4222";
const PRODUCERS: usize = 4;

/// `None` (skipping, saying why) without a NATS server, unless
/// `ORDERFLOW_REQUIRE_NATS=1`.
pub async fn nats() -> Option<async_nats::Client> {
    match async_nats::connect(NATS).await {
        Ok(client) => Some(client),
        Err(error) => {
            assert!(
                std::env::var("ORDERFLOW_REQUIRE_NATS").as_deref() != Ok("1"),
                "ORDERFLOW_REQUIRE_NATS=1 but NATS is not reachable at {NATS}: {error}"
            );
            eprintln!("skipped: no NATS at {NATS} ({error})");
            None
        }
    }
}

/// Deletes the test's stream when dropped.
pub struct Stream {
    pub name: String,
}

impl Stream {
    /// A stream name of its own for one test.
    pub fn new() -> Self {
        Self {
            name: format!("ORDERFLOW_TEST_{}", rand::random::<u32>()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::support::on_own_runtime(async move {
            if let Ok(client) = async_nats::connect(NATS).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&name)
                    .await;
            }
        });
    }
}

/// A PostgreSQL test database and a stream of the test's own; `None`
/// (skipping) without either.
async fn setup() -> Option<(TestDb, Stream)> {
    let db = TestDb::postgres().await?;
    nats().await?;
    Some((db, Stream::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_jetstream_log_exactly_once_through_a_sigkill() {
    let Some((db, stream)) = setup().await else {
        return;
    };
    let env = [
        ("ORDERFLOW_EVENT_LOG", NATS),
        ("ORDERFLOW_NATS_STREAM", stream.name.as_str()),
        // The killed replica's pulled batches go to the other one soon.
        ("ORDERFLOW_NATS_ACK_WAIT", "2s"),
    ];
    // B writes the binary form, A and C JSON lines (a cluster mid-switch):
    // every replica consumes both.
    let mut binary = env.to_vec();
    binary.push(("ORDERFLOW_NATS_LOG_FORMAT", "binary"));
    let a = Server::start(&db, &env);
    let b = Server::start(&db, &binary);
    // A third replica takes no producers: it only consumes its share.
    let c = Server::start(&db, &env);
    // Producers alternate between A and B.
    let progress = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let server = if producer % 2 == 0 { &a } else { &b };
        let client = server.events().await;
        producers.push(tokio::spawn(produce(
            client,
            producer,
            0,
            Arc::clone(&progress),
        )));
    }
    let total = PRODUCERS as u64 * BATCHES;
    let kill_at = rand::random_range(total / 10..total / 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < kill_at {
        assert!(Instant::now() < deadline, "no progress to kill at");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.kill();
    let mut acked = Vec::new();
    for handle in producers {
        acked.push(handle.await.unwrap());
    }
    eprintln!("killed B after {kill_at} acks; acknowledged up to {acked:?}");
    assert!(acked.iter().sum::<u64>() < total, "killed mid-run");

    // B again; every producer resumes after its last ack, on its replica.
    let b = Server::start(&db, &binary);
    let mut producers = Vec::new();
    for (producer, from) in acked.iter().enumerate() {
        let server = if producer % 2 == 0 { &a } else { &b };
        let client = server.events().await;
        producers.push(tokio::spawn(produce(
            client,
            producer,
            *from,
            Arc::clone(&progress),
        )));
    }
    for handle in producers {
        assert_eq!(handle.await.unwrap(), BATCHES);
    }

    // Both replicas consume; wait until the store holds every event.
    let expected = PRODUCERS as u64 * BATCHES * EVENTS_PER_BATCH;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = crate::support::stored_event_ids(&db);
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "stored twice: {twice:?}");
        if seen.len() as u64 == expected {
            break;
        }
        if Instant::now() >= deadline {
            for server in [&a, &b, &c] {
                for line in server
                    .logs()
                    .iter()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .take(8)
                {
                    eprintln!("DEBUG {line}");
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} events stored",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing arrives late and doubles up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = crate::support::stored_event_ids(&db);
    assert_eq!(seen.len() as u64, expected);
    assert!(seen.values().all(|n| *n == 1), "an event stored twice");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert!(c.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_out_of_reach_answers_unavailable_and_not_serving_then_recovers() {
    use orderflow_proto::proto::EventBatch;
    let Some((db, stream)) = setup().await else {
        return;
    };
    let proxy = crate::proxy::Proxy::start("127.0.0.1:4222").await;
    let through = format!("nats://127.0.0.1:{}", proxy.port);
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_EVENT_LOG", through.as_str()),
            ("ORDERFLOW_NATS_STREAM", stream.name.as_str()),
        ],
    );
    let mut events = server.events().await;
    let batch = |sequence: u64| EventBatch {
        sequence,
        ..crate::kill::batch(0, sequence)
    };
    events.publish_event_batch(batch(1)).await.unwrap();

    proxy.set(crate::proxy::Mode::Cut);
    crate::replicas::wait_health(&server, "orderflow.v1.EventService", 2).await;
    let started = Instant::now();
    let mut request = tonic::Request::new(batch(2));
    request.set_timeout(Duration::from_secs(5));
    let status = events.publish_event_batch(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        orderflow_proto::reason(&status),
        Some(orderflow_proto::Reason::EventLogUnavailable)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the deadline"
    );
    // Orders do not need NATS.
    assert_eq!(crate::replicas::health(&server, "readiness").await, 1);

    proxy.set(crate::proxy::Mode::Up);
    crate::replicas::wait_health(&server, "orderflow.v1.EventService", 1).await;
    let ack = events
        .publish_event_batch(batch(2))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.duplicate);
    let expected = 2 * EVENTS_PER_BATCH as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::support::stored_event_ids(&db).len() < expected {
        assert!(
            Instant::now() < deadline,
            "the batches were not processed after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(crate::support::stored_event_ids(&db).len(), expected);
}

/// Sequences on JetStream follow the same rules as on the database log,
/// beyond the stream's duplicate window (1 s here): a retry of a batch whose
/// outputs are committed is answered `duplicate` and stored nothing, one
/// that skips ahead is SEQUENCE_GAP with the sequence expected, and a copy
/// that reaches the stream anyway (published by hand with the batch's
/// `Nats-Msg-Id` after the window) is not committed twice. Before, the
/// retry after the window was stored a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_sequences_hold_beyond_the_duplicate_window() {
    use orderflow_proto::proto::EventBatchAck;

    let Some((db, stream)) = setup().await else {
        return;
    };
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_EVENT_LOG", NATS),
            ("ORDERFLOW_NATS_STREAM", stream.name.as_str()),
            ("ORDERFLOW_NATS_DUPLICATE_WINDOW", "1s"),
        ],
    );
    let mut events = server.events().await;
    let mut send = async |sequence: u64| {
        events
            .publish_event_batch(crate::kill::batch(9, sequence))
            .await
            .map(tonic::Response::into_inner)
    };
    let first: EventBatchAck = send(1).await.unwrap();
    assert!(!first.duplicate);
    let stored_once = |db: &TestDb| {
        let seen = crate::support::stored_event_ids(db);
        (0..EVENTS_PER_BATCH).all(|n| seen.get(&format!("p9-s1-{n}")) == Some(&1))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored_once(&db) {
        assert!(Instant::now() < deadline, "batch 1 never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the window, JetStream has forgotten the id.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let retry = send(1).await.unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.accepted, 0);
    let gap = send(3).await.unwrap_err();
    assert_eq!(orderflow_proto::expected_sequence(&gap), Some(2), "{gap:?}");
    assert!(!send(2).await.unwrap().duplicate);

    // A copy of batch 2 reaches the stream after the window (as a retry
    // racing the first copy's consumption would): the consumer skips it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let client = nats().await.unwrap();
    let copy = crate::kill::batch(9, 2);
    let lines: String = copy
        .events
        .iter()
        .map(|e| {
            format!(
                "{{\"event_id\":\"{}-copy\",\"user_id\":\"{}\",\"action\":\"purchase\",\"amount_cents\":100,\"attributes\":{{}}}}\n",
                e.event_id, e.user_id
            )
        })
        .collect();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{}/2", copy.producer_id).as_str());
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream
        .publish_with_headers(
            format!("orderflow.events.{}", stream.name),
            headers,
            lines.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        !ack.duplicate,
        "the window is over: JetStream took the copy"
    );
    // Until the consumer has taken and acknowledged every message.
    let js_stream = jetstream.get_stream(&stream.name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = js_stream.consumer_info("orderflow-pipeline").await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never consumed: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.terminate().success());
    let seen = crate::support::stored_event_ids(&db);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    assert!(
        !seen.keys().any(|id| id.ends_with("-copy")),
        "the copy of batch 2 was committed"
    );
    assert_eq!(seen.len() as u64, 2 * EVENTS_PER_BATCH);
}

/// The stream is bounded in bytes as well as in batches
/// (`ORDERFLOW_NATS_MAX_BYTES`, 16 KiB here), and a stream that an earlier
/// release created without a byte bound gets it on start. A batch that
/// would take the stream past it answers UNAVAILABLE `EVENT_LOG_UNAVAILABLE`
/// and is stored nowhere; one that fits goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_stream_is_bounded_in_bytes() {
    use async_nats::jetstream::stream;
    use orderflow_proto::proto::{Event, EventBatch};

    let Some((db, name)) = setup().await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(nats().await.unwrap());
    jetstream
        .create_stream(stream::Config {
            name: name.name.clone(),
            subjects: vec![format!("orderflow.events.{}", name.name)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_messages: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_EVENT_LOG", NATS),
            ("ORDERFLOW_NATS_STREAM", name.name.as_str()),
            ("ORDERFLOW_NATS_MAX_BYTES", "16KiB"),
        ],
    );
    let mut events = server.events().await;
    let info = jetstream
        .get_stream(name.name.as_str())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.max_bytes, 16 * 1024, "{:?}", info.config);
    assert_eq!(info.config.max_messages, 100_000);

    let small = crate::kill::batch(0, 1);
    let ack = events
        .publish_event_batch(small)
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.duplicate);
    // About 40 KB as JSON lines: more than the whole stream may hold.
    let big = EventBatch {
        producer_id: "big".into(),
        sequence: 1,
        events: (0..400)
            .map(|n| Event {
                event_id: format!("big-{n}"),
                user_id: format!("u-{n}"),
                action: "purchase".into(),
                amount_cents: Some(100),
                ..Event::default()
            })
            .collect(),
    };
    let status = events.publish_event_batch(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        orderflow_proto::reason(&status),
        Some(orderflow_proto::Reason::EventLogUnavailable)
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::support::stored_event_ids(&db).len() < EVENTS_PER_BATCH as usize {
        assert!(
            Instant::now() < deadline,
            "the small batch was not processed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = crate::support::stored_event_ids(&db);
    assert_eq!(stored.len(), EVENTS_PER_BATCH as usize, "{stored:?}");
    assert!(!stored.keys().any(|id| id.starts_with("big-")));
}
