//! Hostile input: bodies that are not protobuf, strings that are not UTF-8,
//! NUL bytes, megabyte values echoed back, and attribute floods. Each gets
//! INVALID_ARGUMENT with a short message naming the field; none reaches the
//! database or costs more than a bounded amount of work.

use std::collections::HashMap;

use grpc_api::proto::{self, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, OrderLine};
use http::uri::PathAndQuery;
use prost::Message as _;
use test_support::TestDb;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Request, Status};

use crate::support::InProcess;

/// Sends bytes as they are, so a test can send what no generated client
/// would; responses are not decoded (every call here expects an error).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        bytes::Buf::advance(buf, bytes::Buf::remaining(buf));
        Ok(Some(()))
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Not protobuf: a varint that never ends.
const GARBAGE: &[u8] = &[0xff, 0xff, 0xff];

/// Field 1 as a length-delimited string of bytes that are not UTF-8.
const NOT_UTF8: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];

async fn unary(server: &InProcess, path: &'static str, body: &[u8]) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(body.to_vec()),
        PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|_| ())
}

pub async fn undecodable_requests_are_invalid_argument(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    for path in [
        "/orderflow.v1.OrderService/CreateOrder",
        "/orderflow.v1.OrderService/GetOrder",
        "/orderflow.v1.OrderService/ListOrders",
        "/orderflow.v1.OrderService/UpdateOrderStatus",
        "/orderflow.v1.CatalogService/UpsertProduct",
        "/orderflow.v1.CatalogService/GetProduct",
        "/orderflow.v1.CatalogService/GetPrimaryWarehouse",
        "/orderflow.v1.EventService/PublishEvent",
        "/orderflow.v1.EventService/PublishEventBatch",
        "/orderflow.v1.EventService/GetPipelineStats",
        // A standard service, on tonic-prost's codec: DecodeErrorLayer.
        "/grpc.health.v1.Health/Check",
    ] {
        for body in [GARBAGE, NOT_UTF8] {
            let answer = unary(&server, path, body).await;
            // GetPipelineStats takes Empty, which has no field 1 to be bad
            // UTF-8: an unknown field is skipped, and the call succeeds.
            if path.ends_with("GetPipelineStats") && body == NOT_UTF8 {
                assert!(answer.is_ok(), "{path}: {answer:?}");
                continue;
            }
            let status = answer.expect_err("a body that does not decode is refused");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {body:?}: {status:?}"
            );
            assert!(
                status.message().contains("decode"),
                "{path}: the message says what failed: {status:?}"
            );
            // The standard service's status is rewritten whole, details too.
            assert_eq!(
                crate::details::reason(&status),
                orderflow_proto::Reason::MalformedRequest,
                "{path}"
            );
        }
    }
    // A UTF-8 error names the field.
    let status = unary(&server, "/orderflow.v1.OrderService/GetOrder", NOT_UTF8)
        .await
        .unwrap_err();
    assert!(status.message().contains("order_id"), "{status:?}");
}

pub async fn undecodable_messages_mid_stream_are_invalid_argument(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let event = proto::Event {
        user_id: "u-1".into(),
        action: "login".into(),
        ..Default::default()
    };

    // Client streaming: one good event, then bytes that are not an Event.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let messages = vec![event.encode_to_vec(), NOT_UTF8.to_vec()];
    let status = grpc
        .client_streaming(
            Request::new(tokio_stream::iter(messages)),
            PathAndQuery::from_static("/orderflow.v1.EventService/PublishEvents"),
            Raw,
        )
        .await
        .expect_err("the bad message ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Bidirectional: the good batch is acknowledged, then the stream ends.
    let batch = proto::EventBatch {
        producer_id: "hostile".into(),
        sequence: 1,
        events: vec![event],
    };
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let messages = vec![batch.encode_to_vec(), GARBAGE.to_vec()];
    let mut acks = grpc
        .streaming(
            Request::new(tokio_stream::iter(messages)),
            PathAndQuery::from_static("/orderflow.v1.EventService/StreamEventBatches"),
            Raw,
        )
        .await
        .unwrap()
        .into_inner();
    assert!(
        acks.message().await.unwrap().is_some(),
        "the first batch is acknowledged"
    );
    let status = acks.message().await.expect_err("then the stream fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

pub async fn nul_is_refused_in_every_text_field(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let line = OrderLine {
        product_id: "p-1".into(),
        quantity: 1,
        unit_price_cents: 100,
    };
    let request = |user_id: &str, product_id: &str, key: &str| CreateOrderRequest {
        user_id: user_id.into(),
        currency: "EUR".into(),
        lines: vec![OrderLine {
            product_id: product_id.into(),
            ..line.clone()
        }],
        idempotency_key: key.into(),
    };
    for (request, field) in [
        (request("u\0ser", "p-1", ""), "user_id"),
        (request("user", "p\0", ""), "lines[0].product_id"),
        (request("user", "p-1", "k\0"), "idempotency_key"),
    ] {
        let status = orders.create_order(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    let status = orders
        .list_orders(ListOrdersRequest {
            user_id: "u\0ser".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("user_id"), "{status:?}");

    let mut events = server.events().await;
    let status = events
        .publish_event(proto::Event {
            user_id: "u-1".into(),
            action: "login".into(),
            attributes: HashMap::from([("k".into(), "v\0".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("attributes"), "{status:?}");
}

/// A message quotes at most this many bytes of a value (64 characters of at
/// most four bytes, escaped, plus the surrounding words).
const MESSAGE_BOUND: usize = 1024;

pub async fn error_messages_quote_a_bounded_prefix(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let huge = "X".repeat(1 << 20);

    let status = orders
        .create_order(CreateOrderRequest {
            user_id: "user".into(),
            currency: huge.clone(),
            lines: vec![OrderLine {
                product_id: "p-1".into(),
                quantity: 1,
                unit_price_cents: 100,
            }],
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    let status_of = |s: &Status| (s.code(), s.message().len());
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{:?}",
        status_of(&status)
    );
    assert!(
        status.message().len() < MESSAGE_BOUND,
        "{:?}",
        status_of(&status)
    );
    assert!(
        status.message().contains("currency"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains(&(1usize << 20).to_string()),
        "the length is given: {}",
        status.message()
    );

    let status = orders
        .get_order(GetOrderRequest {
            order_id: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{:?}",
        status_of(&status)
    );
    assert!(
        status.message().len() < MESSAGE_BOUND,
        "{:?}",
        status_of(&status)
    );

    let status = orders
        .list_orders(ListOrdersRequest {
            user_id: "user".into(),
            page_token: "t".repeat(10 << 10),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{:?}",
        status_of(&status)
    );
    assert!(
        status.message().len() < MESSAGE_BOUND,
        "{:?}",
        status_of(&status)
    );
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );
}

pub async fn attribute_floods_are_refused_naming_the_event(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut events = server.events().await;
    let flood: HashMap<String, String> = (0..100_000)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    let status = events
        .publish_event(proto::Event {
            user_id: "u-1".into(),
            action: "login".into(),
            attributes: flood.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("attributes"), "{status:?}");
    assert!(
        status.message().contains("256"),
        "the cap is named: {status:?}"
    );

    // In a batch, the message names the event.
    let good = proto::Event {
        user_id: "u-1".into(),
        action: "login".into(),
        ..Default::default()
    };
    let status = events
        .publish_event_batch(proto::EventBatch {
            producer_id: String::new(),
            sequence: 1,
            events: vec![
                good.clone(),
                proto::Event {
                    attributes: flood,
                    ..good.clone()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("events[1].attributes"),
        "{status:?}"
    );

    // Bytes count too: 16 attributes of 8 KiB each is over 64 KiB.
    let wide: HashMap<String, String> = (0..16)
        .map(|i| (format!("k{i}"), "v".repeat(8 << 10)))
        .collect();
    let status = events
        .publish_event(proto::Event {
            attributes: wide,
            ..good.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // At the cap, accepted.
    let full: HashMap<String, String> = (0..256).map(|i| (format!("k{i}"), "v".into())).collect();
    let accepted = events
        .publish_event(proto::Event {
            attributes: full,
            ..good
        })
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.accepted);
}

pub async fn a_duplicate_sku_answers_one_message_on_both_backends(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut catalog = server.catalog().await;
    catalog
        .upsert_product(crate::suite::product("first", &[("w1", true)]))
        .await
        .unwrap();
    let second = proto::Product {
        sku: "SKU-first".into(),
        ..crate::suite::product("second", &[("w1", true)])
    };
    let status = catalog.upsert_product(second).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    // Exactly this on both backends: no table, index or constraint name.
    assert_eq!(
        status.message(),
        "duplicate sku: another product has this sku"
    );
}

/// Page tokens are opaque (not the order id) and page only the listing
/// that issued them: another user_id or page_size is INVALID_ARGUMENT.
pub async fn page_tokens_are_opaque_and_bound_to_their_listing(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let order = orders
            .create_order(crate::suite::create("pager", ""))
            .await
            .unwrap()
            .into_inner();
        ids.push(order.order_id);
    }
    let list = |user: &str, size: u32, token: &str| ListOrdersRequest {
        user_id: user.into(),
        page_size: size,
        page_token: token.into(),
    };
    let first = orders
        .list_orders(list("pager", 2, ""))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    assert!(
        ids.iter().all(|id| !token.contains(id.as_str())),
        "the token does not show an order id: {token}"
    );
    let second = orders
        .list_orders(list("pager", 2, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.orders.len(), 1);
    assert_eq!(second.orders[0].order_id, ids[0], "the oldest comes last");

    for (request, what) in [
        (list("someone-else", 2, &token), "another user"),
        (list("pager", 3, &token), "another page size"),
        (list("pager", 2, "not-a-token"), "garbage"),
        (list("pager", 2, &ids[0]), "a raw order id"),
    ] {
        let status = orders.list_orders(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("page_token"),
            "{what}: {status:?}"
        );
    }
}

/// An idempotency key sent again with a different request is
/// FAILED_PRECONDITION naming the key; an identical retry still returns the
/// original order.
pub async fn an_idempotency_key_reused_for_another_order_is_refused(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;
    let first = orders
        .create_order(crate::suite::create("keyed", "key-1"))
        .await
        .unwrap()
        .into_inner();
    let retry = orders
        .create_order(crate::suite::create("keyed", "key-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, first);
    let mut different = crate::suite::create("keyed", "key-1");
    different.lines[0].quantity += 1;
    let status = orders.create_order(different).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("\"key-1\""), "{status:?}");
    let other_currency = CreateOrderRequest {
        currency: "USD".into(),
        ..crate::suite::create("keyed", "key-1")
    };
    let status = orders.create_order(other_currency).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // The same key for another user is another key.
    orders
        .create_order(crate::suite::create("keyed-2", "key-1"))
        .await
        .unwrap();
}
