//! Acknowledged ingest against SIGKILL: producers stream batches, the
//! server is killed at a random moment (or while a failpoint holds it inside
//! a group commit, or inside the commit of the outputs), restarted on the
//! same database, and the producers re-send every batch they hold no ack
//! for, with the same sequence. Afterwards the stored events are exactly the
//! acknowledged ones (the built-in pipeline keeps every event): none
//! missing, none twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orderflow_proto::proto::{Event, EventBatch};
use rand::Rng as _;
use test_support::TestDb;
use tokio_stream::StreamExt as _;

use crate::support::Server;

const PRODUCERS: usize = 3;
pub const BATCHES: u64 = 100;
pub const EVENTS_PER_BATCH: u64 = 20;

pub fn batch(producer: usize, sequence: u64) -> EventBatch {
    sized_batch(producer, sequence, EVENTS_PER_BATCH)
}

fn sized_batch(producer: usize, sequence: u64, events: u64) -> EventBatch {
    EventBatch {
        producer_id: format!("producer-{producer}"),
        sequence,
        events: (0..events)
            .map(|n| Event {
                event_id: format!("p{producer}-s{sequence}-{n}"),
                user_id: format!("u-{n}"),
                action: "purchase".into(),
                amount_cents: Some(100),
                ..Event::default()
            })
            .collect(),
    }
}

/// Streams the batches after `acked` until all are acknowledged or the
/// stream breaks, counting each ack in `progress`; returns the last
/// acknowledged sequence.
pub async fn produce(
    client: orderflow_proto::EventClient,
    producer: usize,
    acked: u64,
    progress: Arc<AtomicU64>,
) -> u64 {
    produce_sized(client, producer, acked, progress, EVENTS_PER_BATCH).await
}

async fn produce_sized(
    mut client: orderflow_proto::EventClient,
    producer: usize,
    mut acked: u64,
    progress: Arc<AtomicU64>,
    events: u64,
) -> u64 {
    let requests: Vec<EventBatch> = (acked + 1..=BATCHES)
        .map(|s| sized_batch(producer, s, events))
        .collect();
    if requests.is_empty() {
        return acked;
    }
    let Ok(response) = client
        .stream_event_batches(tokio_stream::iter(requests))
        .await
    else {
        return acked;
    };
    let mut acks = response.into_inner();
    while let Some(Ok(ack)) = acks.next().await {
        assert_eq!(ack.sequence, acked + 1, "acks come in the order sent");
        acked = ack.sequence;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    acked
}

/// Starts one streaming producer per entry of `acked`, each resuming after
/// its last acknowledged sequence.
async fn start_producers(
    server: &Server,
    acked: &[u64],
    progress: &Arc<AtomicU64>,
    events: u64,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut producers = Vec::new();
    for (producer, from) in acked.iter().enumerate() {
        let client = server.events().await;
        let progress = Arc::clone(progress);
        producers.push(tokio::spawn(produce_sized(
            client, producer, *from, progress, events,
        )));
    }
    producers
}

async fn join(producers: Vec<tokio::task::JoinHandle<u64>>) -> Vec<u64> {
    let mut acked = Vec::new();
    for handle in producers {
        acked.push(handle.await.unwrap());
    }
    acked
}

/// The load of one kill test: events per batch, and the server's settings.
struct Load<'a> {
    events: u64,
    env: &'a [(&'a str, &'a str)],
}

const SMALL: Load<'static> = Load {
    events: EVENTS_PER_BATCH,
    env: &[],
};

async fn kill_and_recover(db: &TestDb, failpoint: Option<&str>, load: &Load<'_>) {
    let mut env: Vec<(&str, &str)> = failpoint.map(|f| ("FAILPOINTS", f)).into_iter().collect();
    env.extend_from_slice(load.env);
    let server = Server::start(db, &env);
    // Kill mid-stream: once a random number of batches (at least one, not
    // all) has been acknowledged.
    let progress = Arc::new(AtomicU64::new(0));
    let producers = start_producers(&server, &[0; PRODUCERS], &progress, load.events).await;
    let total = PRODUCERS as u64 * BATCHES;
    let kill_at = rand::rng().random_range(1..total / 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < kill_at {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress to kill at"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    let acked = join(producers).await;
    eprintln!("killed after {kill_at} acks; acknowledged up to {acked:?}");
    assert!(acked.iter().sum::<u64>() < total, "killed mid-stream");

    // Restart; every unacknowledged batch is sent again.
    let server = Server::start(db, load.env);
    let acked = join(start_producers(&server, &acked, &progress, load.events).await).await;
    assert!(acked.iter().all(|a| *a == BATCHES), "{acked:?}");

    // Wait for the pipeline to catch up, then stop cleanly.
    let mut events = server.events().await;
    crate::support::drained(&mut events, Duration::from_secs(30)).await;
    assert!(server.terminate().success());

    let seen = crate::support::stored_event_ids(db);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let expected = PRODUCERS as u64 * BATCHES * load.events;
    assert_eq!(
        seen.len() as u64,
        expected,
        "every acknowledged event, once"
    );
    for producer in 0..PRODUCERS {
        for sequence in 1..=BATCHES {
            for n in 0..load.events {
                let id = format!("p{producer}-s{sequence}-{n}");
                assert!(seen.contains_key(&id), "{id} missing");
            }
        }
    }
}

pub async fn acknowledged_batches_survive_sigkill_exactly_once(db: &TestDb) {
    kill_and_recover(db, None, &SMALL).await;
}

pub async fn acknowledged_batches_survive_sigkill_in_a_group_commit(db: &TestDb) {
    kill_and_recover(db, Some("storage-log-append=sleep(300)"), &SMALL).await;
}

pub async fn acknowledged_batches_survive_sigkill_while_outputs_commit(db: &TestDb) {
    kill_and_recover(db, Some("storage-log-commit=sleep(300)"), &SMALL).await;
}

/// The same with the backlog at its bound most of the time (60,000 events
/// against a bound of 10,000), so that on PostgreSQL the consumer keeps two
/// commits on their way (each range at most half the bound), each held
/// 100 ms before it lands: the kill finds one of them, or both, mid-commit.
pub async fn acknowledged_batches_survive_sigkill_with_two_commits_on_their_way(db: &TestDb) {
    let load = Load {
        events: 200,
        env: &[("ORDERFLOW_LOG_MAX_BACKLOG", "10000")],
    };
    kill_and_recover(db, Some("storage-log-commit=sleep(100)"), &load).await;
}

/// Order writes against SIGKILL: 16 writers create orders and mark half of
/// them paid, concurrently, until the server is killed at a random moment;
/// after a restart every acknowledged order reads back as acknowledged. An
/// update in flight at the kill may have committed without its answer, so
/// such an order may read back one version later, paid, and nothing else.
/// `ORDERFLOW_FAULT_SCALE` rounds (1 in CI).
pub async fn acknowledged_orders_survive_sigkill_under_concurrent_writers(db: &TestDb) {
    use orderflow_proto::proto::order_service_client::OrderServiceClient;
    use orderflow_proto::proto::{GetOrderRequest, Order, OrderStatus, UpdateOrderStatusRequest};

    let rounds = std::env::var("ORDERFLOW_FAULT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize);
    for round in 0..rounds {
        let server = Server::start(db, &[]);
        let channel = server.channel().await;
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let mut orders = OrderServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    // (acknowledged state, whether an update was in flight)
                    let mut seen: Vec<(Order, bool)> = Vec::new();
                    for n in 0.. {
                        let request = crate::suite::create(&format!("kill-{round}-{w}-{n}"), "");
                        let Ok(created) = orders.create_order(request).await else {
                            break;
                        };
                        let order = created.into_inner();
                        if n % 2 == 1 {
                            seen.push((order, false));
                            continue;
                        }
                        let update = orders
                            .update_order_status(UpdateOrderStatusRequest {
                                order_id: order.order_id.clone(),
                                status: OrderStatus::Paid.into(),
                                expected_version: order.version,
                            })
                            .await;
                        match update {
                            Ok(paid) => seen.push((paid.into_inner(), false)),
                            Err(_) => {
                                seen.push((order, true));
                                break;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let kill_after = rand::rng().random_range(300..1200);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill();
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(writer.await.unwrap());
        }
        assert!(
            !acknowledged.is_empty(),
            "writes were acknowledged before the kill"
        );

        let restarted = Server::start(db, &[]);
        let mut orders = restarted.orders().await;
        for (order, in_flight) in acknowledged {
            let read = orders
                .get_order(GetOrderRequest {
                    order_id: order.order_id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if read != order {
                assert!(
                    in_flight,
                    "changed without a write in flight: {order:?} -> {read:?}"
                );
                assert_eq!(
                    (read.version, read.status),
                    (order.version + 1, i32::from(OrderStatus::Paid)),
                    "only the in-flight update may have landed"
                );
            }
        }
        drop(restarted);
    }
}

/// Streams answered OK: each one's event ids and its accepted count.
type Complete = Arc<std::sync::Mutex<Vec<(Vec<String>, u64)>>>;

/// Events one call sent, and what it answered.
#[derive(Default)]
struct Answered {
    /// Ids answered accepted: each must be stored exactly once.
    accepted: Vec<String>,
    /// Ids sent without such an answer (shed, refused, or cut off by the
    /// kill): each stored at most once.
    other: Vec<String>,
}

fn event(id: String) -> Event {
    Event {
        event_id: id,
        user_id: "u-kill".into(),
        action: "purchase".into(),
        amount_cents: Some(100),
        ..Event::default()
    }
}

/// PublishEvent in a loop until the server is gone.
async fn publish_one_at_a_time(
    mut client: orderflow_proto::EventClient,
    prefix: String,
    progress: Arc<AtomicU64>,
) -> Answered {
    let mut answered = Answered::default();
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        match client.publish_event(event(id.clone())).await {
            Ok(answer) if answer.get_ref().accepted => {
                answered.accepted.push(id);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => answered.other.push(id),
            Err(status) => {
                answered.other.push(id);
                if status.code() == tonic::Code::Unavailable
                    || status.code() == tonic::Code::Unknown
                    || status.code() == tonic::Code::Cancelled
                {
                    return answered;
                }
            }
        }
    }
    answered
}

/// PublishEvents, streams of 50, until the server is gone. A stream that
/// ends OK accounts for each event it sent (accepted, dropped or
/// dead-lettered), and its accepted ones are its durable ones.
async fn publish_streams(
    mut client: orderflow_proto::EventClient,
    prefix: String,
    progress: Arc<AtomicU64>,
    complete: Complete,
) -> Answered {
    let mut answered = Answered::default();
    for round in 0.. {
        let ids: Vec<String> = (0..50).map(|n| format!("{prefix}-{round}-{n}")).collect();
        let events: Vec<Event> = ids.iter().cloned().map(event).collect();
        match client.publish_events(tokio_stream::iter(events)).await {
            Ok(counts) => {
                let counts = counts.into_inner();
                assert_eq!(
                    counts.accepted + counts.dropped + counts.dead_lettered,
                    50,
                    "{counts:?}"
                );
                progress.fetch_add(counts.accepted, Ordering::Relaxed);
                complete
                    .lock()
                    .unwrap()
                    .push((ids.clone(), counts.accepted));
                answered.other.extend(ids);
            }
            Err(_) => {
                answered.other.extend(ids);
                return answered;
            }
        }
    }
    answered
}

/// Waits until the pipeline holds nothing: the log's backlog is empty and
/// every received event is settled.
async fn settled(events: &mut orderflow_proto::EventClient) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = events.get_pipeline_stats(()).await.unwrap().into_inner();
        let done = s.processed + s.filtered + s.deduplicated + s.dropped + s.dead_lettered;
        if s.log_backlog == 0 && s.received == done {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PublishEvent and PublishEvents ("accepted means durable") against
/// SIGKILL, under every overflow policy: 8 unary callers and 2 streams
/// publish, the server is killed at a random moment, restarted, and
/// stopped once it has settled. (What each policy sheds at a full backlog:
/// `faults::a_full_event_log_backlog_sheds_publish_event_by_policy`.) Every event answered accepted is stored exactly once; no
/// event is stored twice; each stream answered before the kill stored
/// exactly its accepted count.
pub async fn accepted_events_survive_sigkill_under_every_policy(db: &TestDb) {
    for policy in ["block", "block-timeout:20ms", "drop-newest", "dead-letter"] {
        let env = [("ORDERFLOW_OVERFLOW_POLICY", policy)];
        let server = Server::start(db, &env);
        let progress = Arc::new(AtomicU64::new(0));
        let complete: Complete = Arc::default();
        let tag = policy.replace(':', "-");
        let mut callers = Vec::new();
        for caller in 0..8 {
            callers.push(tokio::spawn(publish_one_at_a_time(
                server.events().await,
                format!("{tag}-unary{caller}"),
                Arc::clone(&progress),
            )));
        }
        for caller in 0..2 {
            callers.push(tokio::spawn(publish_streams(
                server.events().await,
                format!("{tag}-stream{caller}"),
                Arc::clone(&progress),
                Arc::clone(&complete),
            )));
        }
        let kill_at = rand::rng().random_range(50..600);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::Relaxed) < kill_at {
            assert!(
                std::time::Instant::now() < deadline,
                "{policy}: no progress to kill at"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.kill();
        let mut answered = Answered::default();
        for caller in callers {
            let one = caller.await.unwrap();
            answered.accepted.extend(one.accepted);
            answered.other.extend(one.other);
        }

        let server = Server::start(db, &env);
        settled(&mut server.events().await).await;
        assert!(server.terminate().success());

        let seen = crate::support::stored_event_ids(db);
        let mine = |id: &String| id.starts_with(&format!("{tag}-"));
        let twice: Vec<_> = seen.iter().filter(|(id, n)| mine(id) && **n > 1).collect();
        assert!(twice.is_empty(), "{policy}: stored twice: {twice:?}");
        let lost: Vec<_> = answered
            .accepted
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "{policy}: {} of {} events answered accepted are not stored, e.g. {:?}",
            lost.len(),
            answered.accepted.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        for (ids, accepted) in complete.lock().unwrap().iter() {
            let stored = ids.iter().filter(|id| seen.contains_key(*id)).count() as u64;
            assert_eq!(
                stored, *accepted,
                "{policy}: a stream answered before the kill"
            );
        }
        let stored_mine = seen.keys().filter(|id| mine(id)).count();
        eprintln!(
            "{policy}: killed after {kill_at} accepted; {} unary accepted, {} other sent, {} streams complete, {stored_mine} stored",
            answered.accepted.len(),
            answered.other.len(),
            complete.lock().unwrap().len()
        );
    }
}
