//! The layers, through real RPCs: a panicking handler answers INTERNAL and
//! the connection keeps serving; `grpc-timeout` in each unit the spec
//! allows.

use std::time::Duration;

use domain::{NewOrder, Order, OrderId, OrderStatus, UserId};
use grpc_api::proto::GetOrderRequest;
use storage::{Created, Database, OrderPage, OrderRepository, StorageError};
use test_support::TestDb;
use tonic::{Code, Request};

use crate::support::InProcess;

/// The database, except that a lookup panics the first `panics` times, or
/// takes `delay`.
struct Rigged {
    db: Database,
    panics: std::sync::atomic::AtomicUsize,
    delay: Duration,
}

impl Rigged {
    fn new(db: &TestDb, panics: usize, delay: Duration) -> Self {
        Self {
            db: Database::open(db.config()),
            panics: panics.into(),
            delay,
        }
    }
}

impl OrderRepository for Rigged {
    type Found = Order;

    async fn find_order(&self, id: OrderId) -> Result<Order, StorageError> {
        let panicking = self
            .panics
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        assert!(!panicking, "rigged to panic: secret detail");
        tokio::time::sleep(self.delay).await;
        self.db.find_order(id).await
    }

    async fn create_order(&self, new: NewOrder) -> Result<Created, StorageError> {
        self.db.create_order(new).await
    }

    async fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> Result<Order, StorageError> {
        self.db.update_status(id, status, expected_version).await
    }

    async fn list_orders(
        &self,
        user_id: &UserId,
        page_size: u32,
        after: Option<OrderId>,
    ) -> Result<OrderPage, StorageError> {
        self.db.list_orders(user_id, page_size, after).await
    }
}

fn unknown_id() -> GetOrderRequest {
    GetOrderRequest {
        order_id: OrderId::generate().to_string(),
    }
}

pub async fn a_panicking_handler_answers_internal_and_the_connection_keeps_serving(db: &TestDb) {
    let server = InProcess::start_with(db, Rigged::new(db, 1, Duration::ZERO), &[]).await;
    let mut orders = server.orders().await;
    let status = orders.get_order(unknown_id()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "internal error", "no panic text leaks");
    // The same client, the same connection: the next call is answered.
    let status = orders.get_order(unknown_id()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn grpc_timeout_is_read_in_every_unit() {
    let db = TestDb::sqlite().await;
    // Each lookup takes 3 s; every deadline below is shorter, in a
    // different unit, so each must be parsed to be honoured.
    let server = InProcess::start_with(&db, Rigged::new(&db, 0, Duration::from_secs(3)), &[]).await;
    let mut orders = server.orders().await;
    for header in ["90000000n", "400000u", "400m", "1S"] {
        let mut request = Request::new(unknown_id());
        // The header alone: `set_timeout` would also arm the client's own
        // timer, which answers CANCELLED locally.
        request
            .metadata_mut()
            .insert("grpc-timeout", header.parse().unwrap());
        let started = std::time::Instant::now();
        let status = orders.get_order(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{header}: {status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{header}: not honoured"
        );
    }
    // Too many digits: not a deadline the server can honour, so none is
    // applied (the lookup runs to its end).
    let mut request = Request::new(unknown_id());
    request
        .metadata_mut()
        .insert("grpc-timeout", "123456789m".parse().unwrap());
    let status = orders.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Unary calls and streams have separate budgets: streams that hold every
/// stream permit (and never send) leave unary calls served; past either
/// budget a call is shed with RESOURCE_EXHAUSTED; health is never shed.
pub async fn requests_past_the_concurrency_limit_are_shed(db: &TestDb) {
    let server = InProcess::start_with(
        db,
        Rigged::new(db, 0, Duration::from_secs(2)),
        &[
            ("ORDERFLOW_MAX_CONCURRENT_REQUESTS", "1"),
            ("ORDERFLOW_MAX_OPEN_STREAMS", "1"),
        ],
    )
    .await;
    // One open stream holds the only stream permit; it sends one event and
    // then nothing.
    let mut events = server.events().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(crate::suite::event(0)).await.unwrap();
    let open = tokio::spawn(async move {
        events
            .publish_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = server.events().await;
    let status = second
        .publish_events(tokio_stream::iter([crate::suite::event(1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("open streams"), "{status:?}");

    // Unary calls are still served: the held stream cannot starve them.
    let mut orders = server.orders().await;
    let created = orders
        .create_order(crate::suite::create("u", ""))
        .await
        .unwrap()
        .into_inner();

    // A slow lookup holds the only unary permit; the next call is shed.
    let mut slow = server.orders().await;
    let lookup = tokio::spawn(async move { slow.get_order(unknown_id()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = orders
        .get_order(GetOrderRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("concurrent requests"),
        "{status:?}"
    );
    // Health is never shed.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(lookup.await.unwrap().unwrap_err().code(), Code::NotFound);
    drop(tx);
    assert_eq!(open.await.unwrap().unwrap().into_inner().accepted, 1);
    // Both permits are free again.
    orders
        .get_order(GetOrderRequest {
            order_id: created.order_id,
        })
        .await
        .unwrap();
    second
        .publish_events(tokio_stream::iter([crate::suite::event(2)]))
        .await
        .unwrap();
}

/// A stream that sends nothing for the idle timeout is ended with
/// DEADLINE_EXCEEDED, saying what was accepted before; so is a
/// bidirectional one.
pub async fn idle_streams_are_ended(db: &TestDb) {
    let server = InProcess::start(db, &[("ORDERFLOW_STREAM_IDLE_TIMEOUT", "300ms")]).await;
    let mut events = server.events().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(crate::suite::event(0)).await.unwrap();
    let status = events
        .publish_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("1 events accepted"), "{status:?}");
    drop(tx);

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(grpc_api::proto::EventBatch {
        producer_id: "idle".into(),
        sequence: 1,
        events: vec![crate::suite::event(1)],
    })
    .await
    .unwrap();
    let mut acks = events
        .stream_event_batches(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().map(|a| a.sequence), Some(1));
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(tx);
}

pub async fn layer_errors_carry_reasons_and_retry_delays(db: &TestDb) {
    use crate::details::{reason, retry_delay};
    use orderflow_proto::Reason;

    // The first lookup panics; every lookup takes 1 s; one request at once.
    let server = InProcess::start_with(
        db,
        Rigged::new(db, 1, Duration::from_secs(1)),
        &[
            ("ORDERFLOW_AUTH_TOKEN", "secret"),
            ("ORDERFLOW_MAX_CONCURRENT_REQUESTS", "1"),
            ("ORDERFLOW_MAX_MESSAGE_BYTES", "1024"),
        ],
    )
    .await;
    let mut orders = server.orders().await;

    let status = orders
        .create_order(crate::suite::create("u-layers", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), Reason::Unauthenticated);

    let status = orders.get_order(unknown_id()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(reason(&status), Reason::Internal);

    let mut request = Request::new(unknown_id());
    request
        .metadata_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let status = orders.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), Reason::DeadlineExceeded);
    assert_eq!(retry_delay(&status), None);

    // Wait out the timed-out lookup, then hold the one permit.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut holder = server.orders().await;
    let held = tokio::spawn(async move { holder.get_order(unknown_id()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = orders.get_order(unknown_id()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), Reason::Overloaded);
    assert!(retry_delay(&status).is_some(), "{status:?}");
    held.await.unwrap().unwrap_err();

    let mut big = Request::new(crate::suite::create(&"u".repeat(2000), ""));
    big.metadata_mut()
        .insert("authorization", "Bearer secret".parse().unwrap());
    let status = orders.create_order(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), Reason::MessageTooLarge);
    assert_eq!(retry_delay(&status), None, "retrying cannot help");
}
