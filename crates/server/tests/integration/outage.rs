//! PostgreSQL outage, end to end: a TCP proxy between the server and
//! PostgreSQL that the test cuts and restores (how crates.io tests an
//! unhealthy database). During the outage health is NOT_SERVING, RPCs that
//! need the database answer UNAVAILABLE within their budget, and cache hits
//! still succeed; after it, SERVING again without a restart.

use std::time::{Duration, Instant};

use orderflow_proto::proto::{CreateOrderRequest, GetOrderRequest, OrderLine};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use test_support::TestDb;

use crate::proxy::{Mode, Proxy};
use crate::support::Server;

pub async fn health(client: &mut HealthClient<tonic::transport::Channel>) -> i32 {
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

pub async fn wait_for(
    client: &mut HealthClient<tonic::transport::Channel>,
    want: i32,
    stage: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(client).await != want {
        assert!(
            Instant::now() < deadline,
            "{stage}: health never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_not_serving_unavailable_and_recovers() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432").await;
    // The same database and schema, reached through the proxy.
    let through = proxy.url(db.url());
    let server = Server::start_url(&through, &[("ORDERFLOW_DB_TIMEOUT", "1s")]);
    let mut health_client = HealthClient::new(server.channel().await);
    wait_for(&mut health_client, 1, "start").await;

    let mut orders = server.orders().await;
    let order = orders
        .create_order(CreateOrderRequest {
            user_id: "u".into(),
            lines: vec![OrderLine {
                product_id: "p".into(),
                quantity: 1,
                unit_price_cents: 5,
            }],
            currency: "EUR".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    proxy.set(Mode::Cut);
    wait_for(&mut health_client, 2, "outage").await; // NOT_SERVING
    // Liveness stays SERVING: the process works, only a dependency is away.
    let live = health_client
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.status, 1, "liveness during the outage");
    // The cached order is not served either: with the change feed cut too,
    // this replica cannot know whether another one changed it (a partition
    // looks the same as an outage from here), so it reads the database.
    let cached = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(cached.code(), Code::Unavailable, "{cached:?}");
    // A miss needs the database: UNAVAILABLE within the budget.
    let started = Instant::now();
    let missing = orders
        .get_order(GetOrderRequest {
            order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unavailable, "{missing:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    proxy.set(Mode::Up);
    wait_for(&mut health_client, 1, "recovery").await; // SERVING again, same process
    orders
        .get_order(GetOrderRequest {
            order_id: order.order_id,
        })
        .await
        .unwrap();
}

/// How many times larger the fault suite runs: `ORDERFLOW_FAULT_SCALE=10`
/// for the full form by hand; 1 (the quick form) in CI.
pub fn scale() -> usize {
    std::env::var("ORDERFLOW_FAULT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn order_request(user: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user.into(),
        lines: vec![OrderLine {
            product_id: "p".into(),
            quantity: 2,
            unit_price_cents: 5,
        }],
        currency: "EUR".into(),
        idempotency_key: String::new(),
    }
}

/// Starts the server on `db` through a fresh proxy.
async fn behind_proxy(db: &TestDb, env: &[(&str, &str)]) -> (Proxy, Server) {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let server = Server::start_url(&proxy.url(db.url()), env);
    (proxy, server)
}

/// A black-holed database (nothing gets through, nothing is refused)
/// answers within the budget, never hangs a call, and recovers; every
/// acknowledged order reads back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_postgres_answers_within_the_budget_and_recovers() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (proxy, server) = behind_proxy(&db, &[("ORDERFLOW_DB_TIMEOUT", "1s")]).await;
    let mut health_client = HealthClient::new(server.channel().await);
    wait_for(&mut health_client, 1, "start").await;
    let mut orders = server.orders().await;
    let before = orders
        .create_order(order_request("u"))
        .await
        .unwrap()
        .into_inner();

    proxy.set(Mode::Blackhole);
    wait_for(&mut health_client, 2, "black hole").await;
    for _ in 0..3 * scale() {
        // A hung call would hit this guard instead of answering.
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            orders.create_order(order_request("u")),
        )
        .await
        .expect("answered, not hung");
        let status = answer.unwrap_err();
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown),
            "{status:?}"
        );
        let missing = tokio::time::timeout(
            Duration::from_secs(15),
            orders.get_order(GetOrderRequest {
                order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            }),
        )
        .await
        .expect("answered, not hung");
        assert_eq!(missing.unwrap_err().code(), Code::Unavailable);
    }

    proxy.set(Mode::Up);
    wait_for(&mut health_client, 1, "recovery").await;
    let read = orders
        .get_order(GetOrderRequest {
            order_id: before.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, before, "the acknowledged order is unchanged");
    orders.create_order(order_request("u")).await.unwrap();
}

/// A slow database (each chunk of traffic delayed) is slow, not broken:
/// concurrent writes and reads all succeed and read back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_postgres_still_answers_every_call() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (proxy, server) = behind_proxy(&db, &[]).await;
    let mut health_client = HealthClient::new(server.channel().await);
    wait_for(&mut health_client, 1, "start").await;
    proxy.set(Mode::Slow(Duration::from_millis(20)));
    let channel = server.channel().await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut orders = orderflow_proto::proto::order_service_client::OrderServiceClient::new(
                channel.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for _ in 0..4 * scale() {
                    let order = orders
                        .create_order(order_request(&format!("slow-{w}")))
                        .await
                        .expect("a slow database still answers");
                    acknowledged.push(order.into_inner());
                }
                acknowledged
            })
        })
        .collect();
    let mut orders = server.orders().await;
    for writer in writers {
        for order in writer.await.unwrap() {
            let read = orders
                .get_order(GetOrderRequest {
                    order_id: order.order_id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(read, order);
        }
    }
    proxy.set(Mode::Up);
}

/// Accepted means durable, through a PostgreSQL cut. Streams before and
/// after it answer for every event (accepted or shed by the overflow
/// policy). During it, each PublishEvent answers accepted (then it is
/// durable), UNAVAILABLE `EVENT_LOG_UNAVAILABLE` (not stored: retry), or
/// UNKNOWN `OUTCOME_UNKNOWN` (perhaps stored); never accepted while only in
/// memory. Once it is over and the pipeline has settled, every event
/// answered accepted is stored exactly once, each stream stored exactly its
/// accepted count, nothing is stored twice, and processed means stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_during_a_postgres_cut_are_all_accounted_for() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (proxy, server) = behind_proxy(&db, &[("ORDERFLOW_DB_TIMEOUT", "500ms")]).await;
    let mut health_client = HealthClient::new(server.channel().await);
    wait_for(&mut health_client, 1, "start").await;
    let mut events = server.events().await;
    let n = 300 * scale();
    let ids = |from: usize, count: usize| (from..from + count).collect::<Vec<_>>();
    let mut streams = Vec::new();
    let before = ids(0, n);
    let answer = events
        .publish_events(tokio_stream::iter(
            before.clone().into_iter().map(crate::suite::event),
        ))
        .await
        .unwrap()
        .into_inner();
    streams.push((before, answer));

    proxy.set(Mode::Cut);
    wait_for(&mut health_client, 2, "outage").await;
    let (mut accepted, mut perhaps) = (Vec::new(), Vec::new());
    for i in ids(n, 30) {
        match events.publish_event(crate::suite::event(i)).await {
            Ok(answer) => {
                assert!(answer.get_ref().accepted);
                accepted.push(i);
            }
            Err(status) => {
                let reason = orderflow_proto::reason(&status);
                assert!(
                    matches!(
                        (status.code(), reason),
                        (
                            tonic::Code::Unavailable,
                            Some(orderflow_proto::Reason::EventLogUnavailable)
                        ) | (
                            tonic::Code::Unknown,
                            Some(orderflow_proto::Reason::OutcomeUnknown)
                        )
                    ),
                    "during the cut: {status:?}"
                );
                perhaps.push(i);
            }
        }
    }
    assert!(!perhaps.is_empty(), "the cut refused some events");
    proxy.set(Mode::Up);
    wait_for(&mut health_client, 1, "recovery").await;
    let after = ids(n + 30, n);
    let answer = events
        .publish_events(tokio_stream::iter(
            after.clone().into_iter().map(crate::suite::event),
        ))
        .await
        .unwrap()
        .into_inner();
    streams.push((after, answer));
    for (sent, answer) in &streams {
        assert_eq!(
            answer.accepted + answer.dropped + answer.dead_lettered,
            sent.len() as u64,
            "every event of a stream was answered for: {answer:?}"
        );
    }

    // Wait until every accepted event has settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        let settled = stats.processed
            + stats.filtered
            + stats.deduplicated
            + stats.dropped
            + stats.dead_lettered;
        if settled == stats.received && stats.log_backlog == 0 {
            break stats;
        }
        assert!(Instant::now() < deadline, "never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let seen = crate::support::stored_event_ids(&db);
    let stored = |i: &usize| seen.get(&format!("e2e-{i}")).copied().unwrap_or(0);
    assert!(seen.values().all(|times| *times == 1), "stored twice");
    assert_eq!(
        seen.len() as u64,
        stats.processed,
        "processed means stored: {stats:?}"
    );
    for i in &accepted {
        assert_eq!(stored(i), 1, "e2e-{i} was answered accepted during the cut");
    }
    for (sent, answer) in &streams {
        let kept = sent.iter().filter(|i| stored(i) == 1).count() as u64;
        assert_eq!(
            kept, answer.accepted,
            "a stream's accepted events: {answer:?}"
        );
    }
    eprintln!(
        "during the cut: {} accepted, {} refused or unconfirmed ({} of those stored)",
        accepted.len(),
        perhaps.len(),
        perhaps.iter().filter(|i| stored(i) == 1).count()
    );
}
