//! The one mapping from domain, storage and ingest errors to gRPC statuses.
//!
//! Policy: a deliberately small set of codes, as the contract lists them.
//! INVALID_ARGUMENT for input a client must fix (the message names the
//! field), NOT_FOUND, ABORTED for a stale version (re-read and retry),
//! ALREADY_EXISTS for a duplicate key, FAILED_PRECONDITION for a legal
//! request the data's state forbids (an illegal transition, a product with no
//! primary warehouse), UNAVAILABLE for a database that cannot be reached
//! (nothing was applied: retry later), UNKNOWN for a write that was sent but
//! not confirmed (it may have been applied: read before retrying, or retry
//! with the same idempotency key), RESOURCE_EXHAUSTED for shed events,
//! UNAVAILABLE too for a database that refuses its configuration (a revoked
//! role, a file made read-only: the client cannot fix it, an operator can),
//! INTERNAL for everything else, with a generic message: details are logged,
//! never sent.

use domain::DomainError;
use storage::{Conflict, StorageError};
use tonic::Status;
use transform_engine::{IngestError, LogError, SinkErrorKind};

/// The status for a domain rule violation.
pub fn domain(error: DomainError) -> Status {
    match error {
        DomainError::InvalidField { .. } | DomainError::MultiplePrimaryWarehouses { .. } => {
            Status::invalid_argument(error.to_string())
        }
        DomainError::MalformedEvent(_) => Status::invalid_argument(error.to_string()),
        DomainError::IllegalTransition { .. }
        | DomainError::NoPrimaryWarehouse(_)
        | DomainError::IdempotencyKeyReused(_) => Status::failed_precondition(error.to_string()),
    }
}

/// The status for a storage failure.
pub fn storage(error: StorageError) -> Status {
    match error {
        StorageError::NotFound { .. } => Status::not_found(error.to_string()),
        StorageError::Conflict(Conflict::StaleVersion { .. }) => Status::aborted(error.to_string()),
        StorageError::Conflict(Conflict::Duplicate(_)) => Status::already_exists(error.to_string()),
        StorageError::Invalid(_) => Status::invalid_argument(error.to_string()),
        StorageError::Domain(inner) => domain(inner),
        StorageError::Unavailable(_) => {
            tracing::warn!(%error, "database unavailable");
            Status::unavailable("database unavailable, retry later")
        }
        StorageError::Misconfigured(_) => {
            // Start-up refuses such a database; seeing it here means it
            // changed under a running server (a revoked role, a file made
            // read-only). Nothing was applied; operators must act.
            tracing::error!(%error, "database misconfigured");
            Status::unavailable("database unavailable, retry later")
        }
        StorageError::OutcomeUnknown(_) => {
            tracing::warn!(%error, "write outcome unknown");
            Status::unknown(
                "the database did not confirm the write in time; it may have been applied \
                 (read before retrying, or retry with the same idempotency_key)",
            )
        }
        StorageError::Internal(_) => internal(&error),
    }
}

/// The status for an event ingest refusal.
pub fn ingest(error: IngestError) -> Status {
    match error {
        IngestError::ShuttingDown => Status::unavailable(error.to_string()),
    }
}

/// The status for an acknowledged batch that was not acknowledged.
pub fn log(error: LogError) -> Status {
    match error {
        LogError::Full(_) => Status::resource_exhausted(error.to_string()),
        LogError::ShuttingDown => Status::unavailable(error.to_string()),
        LogError::Log(sink) => match sink.kind {
            SinkErrorKind::Unavailable => {
                tracing::warn!(error = %sink, "event log unavailable");
                Status::unavailable("event log unavailable, retry the batch with the same sequence")
            }
            SinkErrorKind::OutcomeUnknown => {
                tracing::warn!(error = %sink, "event log append outcome unknown");
                Status::unknown(
                    "the event log did not confirm the append in time; retry the batch with the \
                     same producer_id and sequence (a durable one answers duplicate)",
                )
            }
            SinkErrorKind::Rejected => internal(&sink),
        },
    }
}

/// INTERNAL with a generic message; the detail goes to the log only.
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}
