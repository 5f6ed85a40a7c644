//! Machine-readable errors, read as a client reads them: every status
//! carries a `google.rpc.ErrorInfo` (domain `orderflow.v1`, a stable
//! reason, metadata), INVALID_ARGUMENT a `BadRequest` naming the field its
//! message names, and what a retry can cure a `RetryInfo`.

use std::time::Duration;

use domain::{DomainError, IdempotencyKey, OrderStatus as DomainStatus, ProductId};
use grpc_api::proto::{
    CreateOrderRequest, EventBatch, GetOrderRequest, GetPrimaryWarehouseRequest, OrderStatus,
    UpdateOrderStatusRequest,
};
use grpc_api::status;
use orderflow_proto::Reason;
use storage::{Conflict, StorageError};
use test_support::TestDb;
use tonic::{Code, Status};
use transform_engine::{IngestError, LogError, SinkError, SinkErrorKind};

use crate::suite::{create, event, product};
use crate::support::InProcess;

/// The orderflow reason in `status`; fails the test when there is none.
pub fn reason(status: &Status) -> Reason {
    orderflow_proto::reason(status)
        .unwrap_or_else(|| panic!("no orderflow.v1 ErrorInfo in {status:?}"))
}

/// `ErrorInfo.metadata[key]`.
fn meta(status: &Status, key: &str) -> String {
    let details = orderflow_proto::details(status);
    let info = details.error_info().expect("ErrorInfo");
    info.metadata
        .get(key)
        .unwrap_or_else(|| panic!("no metadata {key:?} in {info:?}"))
        .clone()
}

/// The one `BadRequest` field violation's field.
pub fn bad_field(status: &Status) -> String {
    let details = orderflow_proto::details(status);
    let request = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert_eq!(request.field_violations.len(), 1, "{request:?}");
    request.field_violations[0].field.clone()
}

/// `RetryInfo.retry_delay`, when there is one.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    orderflow_proto::details(status)
        .retry_info()
        .and_then(|info| info.retry_delay)
}

/// Checks the rules every status follows: the reason matches, an
/// INVALID_ARGUMENT naming a field names it in `BadRequest` and in the
/// message, UNAVAILABLE always has a retry delay.
fn check(status: &Status, code: Code, expected: Reason) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), expected, "{status:?}");
    if expected == Reason::InvalidField {
        let field = bad_field(status);
        assert!(status.message().contains(&field), "{field} in {status:?}");
    }
    if code == Code::Unavailable {
        assert!(retry_delay(status).is_some(), "{status:?}");
    }
}

#[test]
fn every_mapped_error_has_its_reason() {
    let order = || "o-1".to_owned();
    let storage_cases = [
        (
            StorageError::NotFound {
                entity: "order",
                id: order(),
            },
            Code::NotFound,
            Reason::NotFound,
        ),
        (
            Conflict::StaleVersion {
                id: order(),
                expected: 1,
                actual: 3,
            }
            .into(),
            Code::Aborted,
            Reason::StaleVersion,
        ),
        (
            Conflict::Duplicate("sku: another product has this sku".into()).into(),
            Code::AlreadyExists,
            Reason::DuplicateKey,
        ),
        (
            StorageError::Invalid("a value breaks a rule".into()),
            Code::InvalidArgument,
            Reason::RuleBroken,
        ),
        (
            StorageError::Unavailable("refused".into()),
            Code::Unavailable,
            Reason::DatabaseUnavailable,
        ),
        (
            StorageError::Misconfigured("read-only".into()),
            Code::Unavailable,
            Reason::DatabaseUnavailable,
        ),
        (
            StorageError::OutcomeUnknown("commit lost".into()),
            Code::Unknown,
            Reason::OutcomeUnknown,
        ),
        (
            StorageError::Internal("bug".into()),
            Code::Internal,
            Reason::Internal,
        ),
    ];
    for (error, code, expected) in storage_cases {
        check(&status::storage(error), code, expected);
    }
    let stale = status::storage(
        Conflict::StaleVersion {
            id: order(),
            expected: 1,
            actual: 3,
        }
        .into(),
    );
    assert_eq!(meta(&stale, "actual_version"), "3");
    assert_eq!(meta(&stale, "expected_version"), "1");
    let duplicate = status::storage(Conflict::Duplicate("sku: taken".into()).into());
    assert_eq!(meta(&duplicate, "key"), "sku");

    let domain_cases = [
        (
            DomainError::invalid("lines[2].quantity", "must be at least 1"),
            Code::InvalidArgument,
            Reason::InvalidField,
        ),
        (
            DomainError::IllegalTransition {
                from: DomainStatus::Delivered,
                to: DomainStatus::Pending,
            },
            Code::FailedPrecondition,
            Reason::IllegalTransition,
        ),
        (
            DomainError::NoPrimaryWarehouse(ProductId::parse("p-1").unwrap()),
            Code::FailedPrecondition,
            Reason::NoPrimaryWarehouse,
        ),
        (
            DomainError::IdempotencyKeyReused(IdempotencyKey::parse("k-1").unwrap()),
            Code::FailedPrecondition,
            Reason::IdempotencyKeyReused,
        ),
    ];
    for (error, code, expected) in domain_cases {
        check(&status::domain(error), code, expected);
    }
    let invalid = status::domain(DomainError::invalid(
        "lines[2].quantity",
        "must be at least 1",
    ));
    assert_eq!(bad_field(&invalid), "lines[2].quantity");

    check(
        &status::ingest(IngestError::ShuttingDown),
        Code::Unavailable,
        Reason::ShuttingDown,
    );
    let full = status::log(LogError::Full(10_000));
    check(&full, Code::ResourceExhausted, Reason::EventLogFull);
    assert!(retry_delay(&full).is_some());
    check(
        &status::log(LogError::Log(SinkError {
            message: "down".into(),
            kind: SinkErrorKind::Unavailable,
        })),
        Code::Unavailable,
        Reason::EventLogUnavailable,
    );
}

pub async fn clients_read_reasons_fields_and_metadata(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut orders = server.orders().await;

    // A field, nested, named in the message and in BadRequest.
    let mut bad = create("u-details", "");
    bad.lines[1].quantity = 0;
    let status = orders.create_order(bad).await.unwrap_err();
    check(&status, Code::InvalidArgument, Reason::InvalidField);
    assert_eq!(bad_field(&status), "lines[1].quantity");
    assert_eq!(meta(&status, "field"), "lines[1].quantity");
    let status = orders
        .create_order(CreateOrderRequest {
            currency: "euros".into(),
            ..create("u-details", "")
        })
        .await
        .unwrap_err();
    assert_eq!(bad_field(&status), "currency");

    // NOT_FOUND with the entity and id.
    let missing = domain::OrderId::generate().to_string();
    let status = orders
        .get_order(GetOrderRequest {
            order_id: missing.clone(),
        })
        .await
        .unwrap_err();
    check(&status, Code::NotFound, Reason::NotFound);
    assert_eq!(meta(&status, "entity"), "order");
    assert_eq!(meta(&status, "id"), missing);

    // A stale version carries the actual one; an illegal transition its ends.
    let order = orders
        .create_order(create("u-details", "details-1"))
        .await
        .unwrap()
        .into_inner();
    let update = |status: OrderStatus, version: u64| UpdateOrderStatusRequest {
        order_id: order.order_id.clone(),
        status: status.into(),
        expected_version: version,
    };
    orders
        .update_order_status(update(OrderStatus::Paid, 1))
        .await
        .unwrap();
    let status = orders
        .update_order_status(update(OrderStatus::Shipped, 1))
        .await
        .unwrap_err();
    check(&status, Code::Aborted, Reason::StaleVersion);
    assert_eq!(meta(&status, "actual_version"), "2");
    let status = orders
        .update_order_status(update(OrderStatus::Pending, 2))
        .await
        .unwrap_err();
    check(&status, Code::FailedPrecondition, Reason::IllegalTransition);
    assert_eq!(
        (meta(&status, "from"), meta(&status, "to")),
        (
            "ORDER_STATUS_PAID".to_owned(),
            "ORDER_STATUS_PENDING".to_owned()
        )
    );

    // The idempotency key, reused for another order.
    let status = orders
        .create_order(CreateOrderRequest {
            currency: "USD".into(),
            ..create("u-details", "details-1")
        })
        .await
        .unwrap_err();
    check(
        &status,
        Code::FailedPrecondition,
        Reason::IdempotencyKeyReused,
    );
    assert_eq!(meta(&status, "idempotency_key"), "details-1");

    // A product with no primary warehouse.
    let mut catalog = server.catalog().await;
    catalog
        .upsert_product(product("legacy-details", &[("w9", false)]))
        .await
        .unwrap();
    let status = catalog
        .get_primary_warehouse(GetPrimaryWarehouseRequest {
            product_id: "legacy-details".into(),
        })
        .await
        .unwrap_err();
    check(
        &status,
        Code::FailedPrecondition,
        Reason::NoPrimaryWarehouse,
    );
    assert_eq!(meta(&status, "product_id"), "legacy-details");

    // An event deep in a batch, named by its index.
    let mut events = vec![event(0), event(1), event(2)];
    events[2].user_id = String::new();
    let status = server
        .events()
        .await
        .publish_event_batch(EventBatch {
            producer_id: "details".into(),
            sequence: 1,
            events,
        })
        .await
        .unwrap_err();
    check(&status, Code::InvalidArgument, Reason::InvalidField);
    assert_eq!(bad_field(&status), "events[2].user_id");
}
