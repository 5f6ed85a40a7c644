//! Several replicas on one PostgreSQL: a write through one is read through
//! the others (their caches hear of it through the change feed), and a
//! replica whose feed is cut or silent serves from the database instead of
//! a stale cache.

use std::time::{Duration, Instant};

use orderflow_proto::OrderClient;
use orderflow_proto::proto::{
    Event, EventBatch, GetOrderRequest, Order, OrderStatus, UpdateOrderStatusRequest,
};
use test_support::TestDb;
use tonic::Code;

use crate::proxy::{Mode, Proxy};
use crate::support::Server;

/// How long after a write's acknowledgement every replica must show it:
/// the change feed's lease (storage::listen::LEASE, 1 s) plus margin for a
/// loaded machine. With the feed up the delay is milliseconds
/// (`scripts/bench-coherence.sh` measures it).
const BOUND: Duration = Duration::from_secs(3);

async fn read(client: &mut OrderClient, id: &str) -> Order {
    client
        .get_order(GetOrderRequest {
            order_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads `id` through `client` until it shows `version`; fails after
/// [`BOUND`], or if any read goes back to an older version after a newer
/// one was seen.
async fn sees(client: &mut OrderClient, id: &str, version: u64) -> Duration {
    let started = Instant::now();
    let mut newest = 0;
    loop {
        let order = read(client, id).await;
        assert!(
            order.version >= newest,
            "a version went backwards: {} after {newest}",
            order.version
        );
        newest = order.version;
        if order.version >= version {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "still version {} of {id} {BOUND:?} after version {version} was acknowledged",
            order.version
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Creates an order through `a`, then walks it PENDING → PAID → SHIPPED →
/// DELIVERED, each write checked on every reader after the readers cached
/// the version before it.
async fn walk(a: &mut OrderClient, readers: &mut [OrderClient], user: &str) {
    let order = a
        .create_order(crate::suite::create(user, ""))
        .await
        .unwrap()
        .into_inner();
    let mut version = order.version;
    for status in [
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ] {
        // Each reader caches the current version (a miss, then hits).
        for reader in readers.iter_mut() {
            sees(reader, &order.order_id, version).await;
            assert_eq!(read(reader, &order.order_id).await.version, version);
        }
        let updated = a
            .update_order_status(UpdateOrderStatusRequest {
                order_id: order.order_id.clone(),
                status: status.into(),
                expected_version: version,
            })
            .await
            .unwrap()
            .into_inner();
        version = updated.version;
        for reader in readers.iter_mut() {
            sees(reader, &order.order_id, version).await;
        }
    }
}

pub async fn health(server: &Server, name: &str) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: name.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

pub async fn wait_health(server: &Server, name: &str, status: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(server, name).await != status {
        assert!(Instant::now() < deadline, "{name} never reached {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_replica_are_read_through_the_others_and_a_cut_feed_bypasses_the_cache()
{
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let scale = crate::outage::scale();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let a = Server::start(&db, &[]);
    // B's change feed goes through the proxy; its queries do not.
    let feed = proxy.url(db.url());
    // B and C find A holding the event log's lease: they serve orders and
    // take no events, at once (the wait is for restarts).
    let b = Server::start(
        &db,
        &[
            ("ORDERFLOW_CACHE_FEED_URL", &feed),
            ("ORDERFLOW_EVENT_LOG_LEASE_WAIT", "0s"),
        ],
    );
    let c = Server::start(&db, &[("ORDERFLOW_EVENT_LOG_LEASE_WAIT", "0s")]);
    for server in [&a, &b, &c] {
        wait_health(server, "order-cache", 1).await;
    }
    let mut writer = a.orders().await;
    let mut readers = vec![b.orders().await, c.orders().await];
    for i in 0..10 * scale {
        walk(&mut writer, &mut readers, &format!("u-{i}")).await;
    }

    // Cut B's feed: B reports it, and reads through B stay current (from
    // the database) while cut.
    for mode in [Mode::Cut, Mode::Blackhole] {
        proxy.set(mode);
        wait_health(&b, "order-cache", 2).await;
        let mut b_only = vec![b.orders().await];
        for i in 0..3 * scale {
            walk(&mut writer, &mut b_only, &format!("cut-{mode:?}-{i}")).await;
        }
        proxy.set(Mode::Up);
        wait_health(&b, "order-cache", 1).await;
        walk(&mut writer, &mut readers, &format!("back-{mode:?}")).await;
    }
}

fn batch(producer: &str, sequence: u64) -> EventBatch {
    EventBatch {
        producer_id: producer.to_owned(),
        sequence,
        events: (0..100)
            .map(|n| Event {
                event_id: format!("{producer}-{sequence}-{n}"),
                user_id: format!("u-{n}"),
                action: "purchase".into(),
                ..Event::default()
            })
            .collect(),
    }
}

/// One process at a time consumes the database event log. A second
/// replica that finds it held takes no events (UNAVAILABLE, saying why)
/// instead of consuming it too, which stored batches twice; a third that
/// waits for it takes over when the holder is killed, and processes what
/// the holder acknowledged and left, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_event_log_has_one_consumer_at_a_time() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // A commits its outputs slowly, so that it dies with a backlog.
    let a = Server::start(&db, &[("FAILPOINTS", "storage-log-commit=sleep(1500)")]);
    let b = Server::start(&db, &[("ORDERFLOW_EVENT_LOG_LEASE_WAIT", "1s")]);
    assert!(
        b.logs()
            .iter()
            .any(|l| l.contains("WARN")
                && l.contains("another process consumes the database event log")),
        "B says why it takes no events"
    );
    let mut from_b = b.events().await;
    let refused = from_b.publish_event_batch(batch("b", 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("another process consumes the database event log"),
        "{refused:?}"
    );
    let unary = from_b
        .publish_event(batch("b", 2).events.remove(0))
        .await
        .unwrap_err();
    assert_eq!(
        unary.code(),
        Code::Unavailable,
        "not queued in memory either: {unary:?}"
    );

    let mut to_a = a.events().await;
    for sequence in 1..=5 {
        let ack = to_a
            .publish_event_batch(batch("a", sequence))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ack.accepted, ack.duplicate), (100, false));
    }
    let url = db.url().to_owned();
    let c = std::thread::spawn(move || {
        Server::start_url(&url, &[("ORDERFLOW_EVENT_LOG_LEASE_WAIT", "60s")])
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!c.is_finished(), "C waits while A holds the lease");
    a.kill();
    let c = tokio::task::spawn_blocking(move || c.join().unwrap())
        .await
        .unwrap();
    let stats = crate::support::drained(&mut c.events().await, Duration::from_secs(60)).await;
    let seen = crate::support::stored_event_ids(&db);
    for sequence in 1..=5 {
        for n in 0..100 {
            let id = format!("a-{sequence}-{n}");
            assert_eq!(
                seen.get(&id),
                Some(&1),
                "{id} stored once; C's stats: {stats:?}"
            );
        }
    }
    assert_eq!(seen.len(), 500, "nothing but A's events");
    drop(b);
}
