//! Following the stored events through the real binary: subscribers that
//! resume across a SIGKILL see exactly `events export`, in its order; with
//! two replicas storing at once, subscribers on both see one sequence;
//! retention removes old events while ingest goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orderflow_proto::proto::{Event, SubscribeEventsRequest};
use orderflow_proto::{Client, Reason};
use test_support::TestDb;

use crate::kill::{BATCHES, EVENTS_PER_BATCH, produce};
use crate::support::Server;

const PRODUCERS: usize = 2;
const SUBSCRIBERS: usize = 3;

/// The event ids `events export` prints, in its order.
fn exported_ids(db: &TestDb) -> Vec<String> {
    crate::support::exported_ids_url(db.url())
}

/// Follows from the start until `total` events arrived; (position, id) of
/// each, in the order received.
fn follower(client: Client, total: usize) -> tokio::task::JoinHandle<Vec<(u64, String)>> {
    tokio::spawn(async move {
        let mut follow = client.follow(0).max_page(100);
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let page = tokio::time::timeout(Duration::from_secs(60), follow.next_page())
                .await
                .expect("a page within a minute")
                .expect("the subscription goes on");
            seen.extend(page.events.into_iter().map(|stored| {
                let id = stored.event.map(|e| e.event_id).unwrap_or_default();
                (stored.position, id)
            }));
        }
        seen
    })
}

fn assert_follows_export(seen: &[(u64, String)], exported: &[String], who: &str) {
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "{who}: positions strictly increase"
    );
    let ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), exported.len(), "{who}: as many as stored");
    assert!(
        ids.iter().zip(exported).all(|(a, b)| a == b),
        "{who}: the same events as the export, in its order"
    );
}

/// Producers stream acknowledged batches while three subscribers follow;
/// the server is killed mid-run and restarted on the same address. Each
/// subscriber (the client crate's `Follow`) resumes from its last position
/// and ends with exactly the exported events, in order: none missing, none
/// twice.
pub async fn subscribers_resume_across_a_kill_and_match_the_export(db: &TestDb) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("ORDERFLOW_LISTEN", listen.as_str())];
    let server = Server::start(db, &env);
    let total = PRODUCERS * usize::try_from(BATCHES * EVENTS_PER_BATCH).unwrap();
    let mut followers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        followers.push(follower(server.client().await, total));
    }

    let progress = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let client = server.events().await;
        producers.push(tokio::spawn(produce(
            client,
            producer,
            0,
            Arc::clone(&progress),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < BATCHES / 2 {
        assert!(Instant::now() < deadline, "no progress to kill at");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let mut acked = Vec::new();
    for producer in producers {
        acked.push(producer.await.unwrap());
    }

    let server = Server::start(db, &env);
    while acked.iter().any(|a| *a < BATCHES) {
        let mut again = Vec::new();
        for (producer, from) in acked.iter().enumerate() {
            let client = server.events().await;
            again.push(tokio::spawn(produce(
                client,
                producer,
                *from,
                Arc::clone(&progress),
            )));
        }
        acked.clear();
        for producer in again {
            acked.push(producer.await.unwrap());
        }
    }

    let mut seen = Vec::new();
    for follower in followers {
        seen.push(follower.await.unwrap());
    }
    assert!(server.terminate().success());
    let exported = exported_ids(db);
    assert_eq!(
        exported.len(),
        total,
        "every acknowledged event stored once"
    );
    for (n, seen) in seen.iter().enumerate() {
        assert_follows_export(seen, &exported, &format!("subscriber {n}"));
    }
}

/// Two replicas store events at once (each its own pipeline, one
/// PostgreSQL); a subscriber on each sees the same sequence, equal to the
/// export: positions follow commit order across processes, and each replica
/// wakes for the other's commits.
pub async fn subscribers_on_two_replicas_see_one_sequence(db: &TestDb) {
    if db.postgres_schema().is_none() {
        return; // One SQLite file serves one replica.
    }
    // Replicas share an event log on JetStream (the database log has one
    // consumer: README, "Acknowledged ingest").
    if crate::nats::nats().await.is_none() {
        return;
    }
    let stream = crate::nats::Stream::new();
    let env = [
        ("ORDERFLOW_EVENT_LOG", crate::nats::NATS),
        ("ORDERFLOW_NATS_STREAM", stream.name.as_str()),
    ];
    let a = Server::start(db, &env);
    let b = Server::start(db, &env);
    let per_replica = 2_000;
    let total = 2 * per_replica;
    let followers = vec![
        follower(a.client().await, total),
        follower(b.client().await, total),
    ];
    let mut writers = Vec::new();
    for (name, server) in [("a", &a), ("b", &b)] {
        let mut events = server.events().await;
        writers.push(tokio::spawn(async move {
            for chunk in 0..per_replica / 100 {
                let batch: Vec<Event> = (0..100)
                    .map(|n| Event {
                        event_id: format!("{name}-{chunk}-{n}"),
                        user_id: format!("u-{n}"),
                        action: "login".into(),
                        ..Event::default()
                    })
                    .collect();
                let counts = events
                    .publish_events(tokio_stream::iter(batch))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(counts.accepted, 100);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut seen = Vec::new();
    for follower in followers {
        seen.push(follower.await.unwrap());
    }
    drop((a, b));
    let exported = exported_ids(db);
    assert_eq!(exported.len(), total);
    for (n, seen) in seen.iter().enumerate() {
        assert_follows_export(seen, &exported, &format!("replica {n}'s subscriber"));
    }
}

/// With a short retention, events age out while ingest goes on: the store
/// holds about a retention's worth, the removals are counted, and a
/// subscription from the first position is told it expired.
pub async fn retention_ages_events_out_while_ingest_goes_on(db: &TestDb) {
    let server = Server::start(db, &[("ORDERFLOW_EVENT_RETENTION", "2s")]);
    let mut events = server.events().await;
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(6) {
        let batch: Vec<Event> = (0..50)
            .map(|n| Event {
                event_id: format!("r-{sent}-{n}"),
                user_id: "u".into(),
                action: "login".into(),
                ..Event::default()
            })
            .collect();
        events
            .publish_events(tokio_stream::iter(batch))
            .await
            .unwrap();
        sent += 50;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last round of removals has run (every second for 2 s).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let metrics = crate::suite::scrape(&server).await;
    let expired = crate::event_log::metric(&metrics, "orderflow_events_expired_total").unwrap();
    let status = events
        .subscribe_events(SubscribeEventsRequest {
            after_position: 1,
            ..SubscribeEventsRequest::default()
        })
        .await
        .unwrap_err();
    assert!(server.terminate().success());
    let kept = exported_ids(db);
    let stored = kept.len();
    assert!(
        stored > 0 && stored < sent / 2,
        "about 2 s of 6 s kept: {stored} of {sent}"
    );
    // What is kept was sent, once each; the counter, read before the
    // server stopped, may lag the last round of removals.
    let sent_ids: std::collections::HashSet<String> = (0..sent / 50)
        .flat_map(|b| (0..50).map(move |n| format!("r-{}-{n}", b * 50)))
        .collect();
    let distinct: std::collections::HashSet<&String> = kept.iter().collect();
    assert_eq!(distinct.len(), stored, "each kept event once");
    assert!(kept.iter().all(|id| sent_ids.contains(id)));
    assert!(
        expired > 0.0 && expired as usize <= sent - stored,
        "{expired} counted removed, {} removed",
        sent - stored
    );
    assert_eq!(
        orderflow_proto::reason(&status),
        Some(Reason::PositionExpired)
    );
    assert!(orderflow_proto::oldest_position(&status).unwrap() > 1);
}

/// `orderflow events follow` prints what is stored, then what is stored
/// next, as JSON lines with the event in its stored form, like `tail -f`.
pub async fn events_follow_prints_stored_then_new_events(db: &TestDb) {
    use std::io::BufRead as _;

    let server = Server::start(db, &[]);
    let mut events = server.events().await;
    let publish = |from: usize| orderflow_proto::proto::EventBatch {
        producer_id: "follow".into(),
        sequence: u64::try_from(from / 10 + 1).unwrap(),
        events: (from..from + 10)
            .map(|n| Event {
                event_id: format!("f-{n}"),
                user_id: "u".into(),
                action: "login".into(),
                ..Event::default()
            })
            .collect(),
    };
    events.publish_event_batch(publish(0)).await.unwrap();
    let mut follow = std::process::Command::new(crate::support::binary())
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .args(["events", "follow", "--server", &server.address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let read = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|_| {
                let line = received
                    .recv_timeout(Duration::from_secs(10))
                    .expect("a line in time");
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    };
    let stored = read(10);
    events.publish_event_batch(publish(10)).await.unwrap();
    let live = read(10);
    let _ = follow.kill();
    let _ = follow.wait();
    let ids: Vec<&str> = stored
        .iter()
        .chain(&live)
        .map(|line| line["event"]["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("f-{n}")).collect();
    assert_eq!(ids, expected);
    let positions: Vec<u64> = stored
        .iter()
        .chain(&live)
        .map(|line| line["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(stored[0]["stored_at"].as_str().unwrap().ends_with('Z'));
    drop(server);
}
