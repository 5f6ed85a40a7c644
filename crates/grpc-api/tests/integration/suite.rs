//! RPC behaviour, in process: the services over real SQLite or PostgreSQL
//! (`test_support::backend_tests!`), behind the same layers the server
//! stacks, served on a loopback port inside the test and called with the
//! generated tonic clients.

use std::time::Duration;

use grpc_api::proto::{
    CreateOrderRequest, Event, GetOrderRequest, GetPrimaryWarehouseRequest, GetProductRequest,
    ListOrdersRequest, OrderLine, OrderStatus, Product, UpdateOrderStatusRequest, Warehouse,
};
use test_support::TestDb;
use tonic::{Code, Request};

pub use crate::details::clients_read_reasons_fields_and_metadata;
pub use crate::hostile::{
    a_duplicate_sku_answers_one_message_on_both_backends,
    an_idempotency_key_reused_for_another_order_is_refused,
    attribute_floods_are_refused_naming_the_event, error_messages_quote_a_bounded_prefix,
    nul_is_refused_in_every_text_field, page_tokens_are_opaque_and_bound_to_their_listing,
    undecodable_messages_mid_stream_are_invalid_argument,
    undecodable_requests_are_invalid_argument,
};
pub use crate::layers::{
    a_panicking_handler_answers_internal_and_the_connection_keeps_serving, idle_streams_are_ended,
    layer_errors_carry_reasons_and_retry_delays, requests_past_the_concurrency_limit_are_shed,
};
pub use crate::subscribe::{
    a_subscriber_behind_retention_is_told_never_skipped,
    an_expired_position_is_refused_with_the_oldest_kept,
    bad_subscriptions_are_invalid_argument_naming_the_field, subscriptions_filter_by_action,
    subscriptions_need_the_token, subscriptions_read_the_store_then_follow_it_live,
};
use crate::support::InProcess;

pub fn create(user: &str, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user.into(),
        lines: vec![
            OrderLine {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price_cents: 1_250,
            },
            OrderLine {
                product_id: "p-2".into(),
                quantity: 1,
                unit_price_cents: 99,
            },
        ],
        currency: "EUR".into(),
        idempotency_key: key.into(),
    }
}

fn code_and_message<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.unwrap_err();
    (status.code(), status.message().to_owned())
}

pub fn event(n: usize) -> Event {
    Event {
        event_id: format!("e2e-{n}"),
        user_id: format!("u-{}", n % 7),
        action: if n.is_multiple_of(2) {
            "login".into()
        } else {
            "add_to_cart".into()
        },
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + n as i64,
            nanos: 0,
        }),
        amount_cents: Some(n as i64),
        attributes: [("channel".to_owned(), "web".to_owned())].into(),
    }
}

pub async fn orders_happy_path_and_every_error_code(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let order = orders
        .create_order(create("u-1", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.total_cents, 2 * 1_250 + 99);
    assert_eq!((order.status(), order.version), (OrderStatus::Pending, 1));
    let fetched = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, order);

    // Pagination: newest first, empty token on the last page.
    for _ in 0..4 {
        orders.create_order(create("u-1", "")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = orders
            .list_orders(ListOrdersRequest {
                user_id: "u-1".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen.last(),
        Some(&order.order_id),
        "the first order comes last"
    );

    let cases: Vec<(Result<_, tonic::Status>, Code, &str)> = vec![
        (
            orders
                .create_order(CreateOrderRequest {
                    user_id: String::new(),
                    ..create("x", "")
                })
                .await,
            Code::InvalidArgument,
            "user_id",
        ),
        (
            orders
                .create_order(CreateOrderRequest {
                    currency: "eur".into(),
                    ..create("u", "")
                })
                .await,
            Code::InvalidArgument,
            "currency",
        ),
        (
            orders
                .create_order(CreateOrderRequest {
                    lines: vec![OrderLine {
                        product_id: "p".into(),
                        quantity: 0,
                        unit_price_cents: 1,
                    }],
                    ..create("u", "")
                })
                .await,
            Code::InvalidArgument,
            "lines[0].quantity",
        ),
        (
            orders
                .create_order(CreateOrderRequest {
                    lines: vec![OrderLine {
                        product_id: "p".into(),
                        quantity: 2,
                        unit_price_cents: i64::MAX,
                    }],
                    ..create("u", "")
                })
                .await,
            Code::InvalidArgument,
            "total_cents",
        ),
        (
            orders
                .create_order(CreateOrderRequest {
                    lines: vec![],
                    ..create("u", "")
                })
                .await,
            Code::InvalidArgument,
            "lines",
        ),
        (
            orders
                .get_order(GetOrderRequest {
                    order_id: "nope".into(),
                })
                .await,
            Code::InvalidArgument,
            "order_id",
        ),
        (
            orders
                .get_order(GetOrderRequest {
                    order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
                })
                .await,
            Code::NotFound,
            "not found",
        ),
    ];
    for (result, code, needle) in cases {
        let (got, message) = code_and_message(result);
        assert_eq!(got, code, "{message}");
        assert!(message.contains(needle), "{message:?} should name {needle}");
    }
}

pub async fn idempotent_create_and_optimistic_concurrency(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let first = orders
        .create_order(create("u-2", "retry-1"))
        .await
        .unwrap()
        .into_inner();
    let again = orders
        .create_order(create("u-2", "retry-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "the retry returns the original order");
    let listed = orders
        .list_orders(ListOrdersRequest {
            user_id: "u-2".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1, "nothing created twice");

    let update = |status: OrderStatus, version: u64| UpdateOrderStatusRequest {
        order_id: first.order_id.clone(),
        status: status.into(),
        expected_version: version,
    };
    let paid = orders
        .update_order_status(update(OrderStatus::Paid, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((paid.status(), paid.version), (OrderStatus::Paid, 2));
    let (code, message) = code_and_message(
        orders
            .update_order_status(update(OrderStatus::Shipped, 1))
            .await,
    );
    assert_eq!(code, Code::Aborted, "{message}");
    let (code, message) = code_and_message(
        orders
            .update_order_status(update(OrderStatus::Pending, 2))
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    let (code, _) = code_and_message(
        orders
            .update_order_status(update(OrderStatus::Unspecified, 2))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    // GetOrder (through the cache) sees the write at once.
    let fetched = orders
        .get_order(GetOrderRequest {
            order_id: first.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.version, 2);
}

pub fn product(id: &str, warehouses: &[(&str, bool)]) -> Product {
    Product {
        product_id: id.into(),
        sku: format!("SKU-{id}"),
        name: format!("Product {id}"),
        warehouses: warehouses
            .iter()
            .map(|(w, primary)| Warehouse {
                warehouse_id: (*w).into(),
                name: format!("W {w}"),
                is_primary: *primary,
            })
            .collect(),
    }
}

pub async fn catalog_primary_warehouse_gap_is_failed_precondition_and_the_connection_survives(
    db: &TestDb,
) {
    let server = InProcess::start(db, &[]).await;
    let mut catalog = server.catalog().await;
    let stored = catalog
        .upsert_product(product("kettle", &[("w1", false), ("w2", true)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.warehouses.len(), 2);
    let primary = catalog
        .get_primary_warehouse(GetPrimaryWarehouseRequest {
            product_id: "kettle".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(primary.warehouse_id, "w2");

    let (code, message) = code_and_message(
        catalog
            .upsert_product(product("bad", &[("a", true), ("b", true)]))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");

    catalog
        .upsert_product(product("legacy", &[("w9", false)]))
        .await
        .unwrap();
    let (code, message) = code_and_message(
        catalog
            .get_primary_warehouse(GetPrimaryWarehouseRequest {
                product_id: "legacy".into(),
            })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("legacy"), "{message}");
    // Same channel, next call fine.
    let fetched = catalog
        .get_product(GetProductRequest {
            product_id: "legacy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.warehouses.len(), 1);
}

pub async fn events_are_counted_exactly_per_stream(db: &TestDb) {
    let server = InProcess::start(db, &[("ORDERFLOW_OVERFLOW_POLICY", "block")]).await;
    let mut events = server.events().await;
    let stream = tokio_stream::iter((0..300).map(event));
    let counts = events.publish_events(stream).await.unwrap().into_inner();
    assert_eq!(
        (counts.accepted, counts.dropped, counts.dead_lettered),
        (300, 0, 0)
    );
    assert!(
        events
            .publish_event(event(1_000))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    let (code, message) = code_and_message(
        events
            .publish_event(Event {
                user_id: String::new(),
                ..event(1)
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("user_id"), "{message}");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        let settled = stats.processed
            + stats.filtered
            + stats.deduplicated
            + stats.dropped
            + stats.dead_lettered;
        assert!(settled <= stats.received);
        if stats.received == 301 && settled == 301 {
            assert_eq!(stats.processed, 301);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline did not settle: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn auth_guards_mutations_only(db: &TestDb) {
    let server = InProcess::start(db, &[("ORDERFLOW_AUTH_TOKEN", "s3cret")]).await;
    let mut orders = server.orders().await;
    let (code, _) = code_and_message(orders.create_order(create("u", "")).await);
    assert_eq!(code, Code::Unauthenticated);
    let mut wrong = Request::new(create("u", ""));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        code_and_message(orders.create_order(wrong).await).0,
        Code::Unauthenticated
    );
    let mut right = Request::new(create("u", ""));
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let order = orders.create_order(right).await.unwrap().into_inner();
    // Reads stay open.
    orders
        .get_order(GetOrderRequest {
            order_id: order.order_id,
        })
        .await
        .unwrap();
    let (code, _) = code_and_message(server.events().await.publish_event(event(1)).await);
    assert_eq!(code, Code::Unauthenticated);
}

pub async fn oversized_messages_are_resource_exhausted(db: &TestDb) {
    let server = InProcess::start(db, &[("ORDERFLOW_MAX_MESSAGE_BYTES", "2048")]).await;
    let mut orders = server.orders().await;
    let big = CreateOrderRequest {
        lines: (0..60)
            .map(|n| OrderLine {
                product_id: format!("{n:0>100}"),
                quantity: 1,
                unit_price_cents: 1,
            })
            .collect(),
        ..create("u", "")
    };
    let (code, message) = code_and_message(orders.create_order(big).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    let mut events = server.events().await;
    let mut huge = event(1);
    huge.attributes.insert("blob".into(), "x".repeat(4_096));
    let (code, message) = code_and_message(
        events
            .publish_events(tokio_stream::iter(vec![event(0), huge]))
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    // Normal-sized requests still work on the same server.
    orders.create_order(create("u", "")).await.unwrap();
}

pub async fn expired_deadlines_answer_deadline_exceeded(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut events = server.events().await;
    // A stream that sends one event and then stays open past its deadline.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(event(0)).await.unwrap();
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    // The header alone (not `set_timeout`, which also arms a client-side
    // timer that would answer CANCELLED locally): this checks what the
    // server answers.
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = std::time::Instant::now();
    let (code, message) = code_and_message(events.publish_events(request).await);
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
    // The server is fine afterwards.
    let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
    assert_eq!(
        stats.received, 1,
        "the event sent before the deadline was accepted"
    );
}
