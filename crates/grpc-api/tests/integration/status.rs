//! The one status mapping, case by case: every storage, domain and ingest
//! error a handler can meet, with the code and the message a client sees.

use domain::{DomainError, IdempotencyKey, OrderStatus, ProductId};
use grpc_api::status;
use storage::{Conflict, StorageError};
use tonic::Code;
use transform_engine::IngestError;

#[test]
fn every_storage_error_has_its_code_and_internals_stay_private() {
    let cases = [
        (
            StorageError::NotFound {
                entity: "order",
                id: "o-1".into(),
            },
            Code::NotFound,
            "order o-1 not found",
        ),
        (
            Conflict::StaleVersion {
                id: "o-1".into(),
                expected: 1,
                actual: 2,
            }
            .into(),
            Code::Aborted,
            "at version 2, not the expected 1",
        ),
        (
            Conflict::Duplicate("sku".into()).into(),
            Code::AlreadyExists,
            "duplicate",
        ),
        (
            StorageError::Invalid("a CHECK".into()),
            Code::InvalidArgument,
            "rejected by the database",
        ),
        (
            StorageError::Unavailable("connection refused".into()),
            Code::Unavailable,
            "database unavailable, retry later",
        ),
        (
            StorageError::Misconfigured("role \"app\" does not exist".into()),
            Code::Unavailable,
            "database unavailable, retry later",
        ),
        (
            StorageError::OutcomeUnknown("not confirmed within 5s".into()),
            Code::Unknown,
            "may have been applied",
        ),
        (
            StorageError::Internal("secret detail".into()),
            Code::Internal,
            "internal error",
        ),
        (
            StorageError::Domain(DomainError::IllegalTransition {
                from: OrderStatus::Delivered,
                to: OrderStatus::Pending,
            }),
            Code::FailedPrecondition,
            "delivered",
        ),
    ];
    for (error, code, needle) in cases {
        let shown = format!("{error:?}");
        let answer = status::storage(error);
        assert_eq!(answer.code(), code, "{shown}");
        assert!(
            answer.message().contains(needle),
            "{shown}: {:?} should contain {needle:?}",
            answer.message()
        );
    }
    // Neither the cause of an outage nor an internal detail reaches a client.
    let unavailable = status::storage(StorageError::Unavailable("10.0.0.7:5432 refused".into()));
    assert!(!unavailable.message().contains("10.0.0.7"));
    let internal = status::storage(StorageError::Internal("secret detail".into()));
    assert!(!internal.message().contains("secret"));
}

#[test]
fn domain_errors_split_into_invalid_input_and_failed_preconditions() {
    let invalid = DomainError::invalid("lines[0].quantity", "must be at least 1");
    let answer = status::domain(invalid);
    assert_eq!(answer.code(), Code::InvalidArgument);
    assert!(
        answer.message().contains("lines[0].quantity"),
        "{}",
        answer.message()
    );

    let malformed = DomainError::MalformedEvent("expected value at line 1".into());
    assert_eq!(status::domain(malformed).code(), Code::InvalidArgument);

    let two = DomainError::MultiplePrimaryWarehouses {
        product: ProductId::parse("p-2").unwrap(),
        count: 2,
    };
    assert_eq!(status::domain(two).code(), Code::InvalidArgument);

    let gap = DomainError::NoPrimaryWarehouse(ProductId::parse("p-1").unwrap());
    let answer = status::domain(gap);
    assert_eq!(answer.code(), Code::FailedPrecondition);
    assert!(answer.message().contains("p-1"), "{}", answer.message());

    let reused = DomainError::IdempotencyKeyReused(IdempotencyKey::parse("k-9").unwrap());
    let answer = status::domain(reused);
    assert_eq!(answer.code(), Code::FailedPrecondition);
    assert!(answer.message().contains("\"k-9\""), "{}", answer.message());
}

#[test]
fn a_draining_pipeline_is_unavailable() {
    let answer = status::ingest(IngestError::ShuttingDown);
    assert_eq!(answer.code(), Code::Unavailable);
    assert!(answer.message().contains("shutting down"));
}
