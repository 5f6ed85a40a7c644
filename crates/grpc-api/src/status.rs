//! The one mapping from domain, storage and ingest errors to gRPC statuses,
//! and the machine-readable details every error carries.
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
//!
//! Details (AIP-193): every status built here carries a `google.rpc.ErrorInfo`
//! with domain `orderflow.v1` and a [`Reason`]; INVALID_ARGUMENT naming a
//! field carries a `BadRequest` violation for that field path; statuses a
//! retry can cure carry `RetryInfo`. Build them with [`error`].

use std::collections::HashMap;
use std::time::Duration;

use domain::DomainError;
pub use orderflow_proto::Reason;
use storage::{Conflict, StorageError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use transform_engine::{IngestError, LogError, SinkErrorKind};

/// How long a client should wait before retrying after the database or the
/// event log was unavailable.
pub const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);
/// How long a client should wait before retrying after being shed, or after
/// its event was dropped for a full queue.
pub const RETRY_OVERLOADED: Duration = Duration::from_millis(100);

/// A status under construction: code, message, reason, and the details that
/// go with them. Finish with [`Rich::status`] (or `Status::from`).
#[derive(Debug)]
#[must_use]
pub struct Rich {
    code: Code,
    message: String,
    reason: Reason,
    metadata: HashMap<String, String>,
    field: Option<(String, String)>,
    retry: Option<Duration>,
}

/// A status with `message` and an `ErrorInfo` naming `reason`; its code is
/// the reason's ([`Reason::code`]), so a reason always travels with the same
/// code.
pub fn error(reason: Reason, message: impl Into<String>) -> Rich {
    Rich {
        code: reason.code(),
        message: message.into(),
        reason,
        metadata: HashMap::new(),
        field: None,
        retry: None,
    }
}

impl Rich {
    /// One `ErrorInfo.metadata` entry.
    pub fn meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// A `BadRequest` violation for `field` (the path the message names).
    pub fn field(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.field = Some((field.into(), description.into()));
        self
    }

    /// A `RetryInfo` with this delay.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// The status.
    pub fn status(self) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason.as_str(), orderflow_proto::DOMAIN, self.metadata);
        if let Some((field, description)) = self.field {
            details.add_bad_request_violation(field, description);
        }
        if self.retry.is_some() {
            details.set_retry_info(self.retry);
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

impl From<Rich> for Status {
    fn from(rich: Rich) -> Self {
        rich.status()
    }
}

/// INVALID_ARGUMENT for `field`: "invalid {field}: {reason}", with the
/// field in `BadRequest`.
pub fn invalid_field(field: &str, reason: impl std::fmt::Display) -> Status {
    let reason = reason.to_string();
    error(Reason::InvalidField, format!("invalid {field}: {reason}"))
        .meta("field", field)
        .field(field, reason)
        .status()
}

/// `status` with another message, keeping its code and details.
pub fn with_message(status: &Status, message: String) -> Status {
    Status::with_details(status.code(), message, status.details().to_vec().into())
}

/// The status for a domain rule violation.
pub fn domain(error: DomainError) -> Status {
    let message = error.to_string();
    match error {
        DomainError::InvalidField { field, reason } => self::error(Reason::InvalidField, message)
            .meta("field", &field)
            .field(field, reason),
        DomainError::MultiplePrimaryWarehouses { product, count } => {
            self::error(Reason::MultiplePrimaryWarehouses, message.clone())
                .meta("product_id", &product)
                .meta("count", count)
                .field("warehouses", message)
        }
        DomainError::MalformedEvent(_) => self::error(Reason::MalformedRequest, message),
        DomainError::IllegalTransition { from, to } => {
            // The wire enum's names, as a client's generated code knows them.
            self::error(Reason::IllegalTransition, message)
                .meta("from", crate::convert::wire_status(from).as_str_name())
                .meta("to", crate::convert::wire_status(to).as_str_name())
        }
        DomainError::NoPrimaryWarehouse(product) => {
            self::error(Reason::NoPrimaryWarehouse, message).meta("product_id", product)
        }
        DomainError::IdempotencyKeyReused(key) => {
            self::error(Reason::IdempotencyKeyReused, message).meta("idempotency_key", key.as_str())
        }
    }
    .status()
}

/// The status for a storage failure.
pub fn storage(error: StorageError) -> Status {
    let message = error.to_string();
    match error {
        StorageError::NotFound { entity, id } => self::error(Reason::NotFound, message)
            .meta("entity", entity)
            .meta("id", id),
        StorageError::Conflict(Conflict::StaleVersion {
            id,
            expected,
            actual,
        }) => self::error(Reason::StaleVersion, message)
            .meta("order_id", id)
            .meta("expected_version", expected)
            .meta("actual_version", actual),
        StorageError::Conflict(Conflict::Duplicate(what)) => {
            let rich = self::error(Reason::DuplicateKey, message);
            // The store's messages for the keys a client can collide with
            // start with the field (`sku: ...`).
            match what.split_once(':') {
                Some((key, _)) => rich.meta("key", key),
                None => rich,
            }
        }
        StorageError::Invalid(_) => self::error(Reason::RuleBroken, message),
        StorageError::Domain(inner) => return domain(inner),
        StorageError::Unavailable(_) => {
            tracing::warn!(%error, "database unavailable");
            unavailable()
        }
        StorageError::Misconfigured(_) => {
            // Start-up refuses such a database; seeing it here means it
            // changed under a running server (a revoked role, a file made
            // read-only). Nothing was applied; operators must act.
            tracing::error!(%error, "database misconfigured");
            unavailable()
        }
        StorageError::Full(_) => {
            tracing::error!(%error, "the database is out of space; writes are refused");
            storage_full()
        }
        StorageError::OutcomeUnknown(_) => {
            tracing::warn!(%error, "write outcome unknown");
            self::error(
                Reason::OutcomeUnknown,
                "the database did not confirm the write in time; it may have been applied \
                 (read before retrying, or retry with the same idempotency_key)",
            )
        }
        StorageError::Internal(_) => return internal(&error),
    }
    .status()
}

/// How long a client waits before retrying a write refused for a full
/// store: an operator has to act, so not soon.
pub const RETRY_STORAGE_FULL: Duration = Duration::from_secs(5);

fn storage_full() -> Rich {
    error(
        Reason::StorageFull,
        "the database is out of space: nothing was applied; retry once space is freed",
    )
    .retry_after(RETRY_STORAGE_FULL)
}

fn unavailable() -> Rich {
    error(
        Reason::DatabaseUnavailable,
        "database unavailable, retry later",
    )
    .retry_after(RETRY_UNAVAILABLE)
}

/// UNAVAILABLE for a server that is shutting down.
pub fn shutting_down(message: impl Into<String>) -> Status {
    error(Reason::ShuttingDown, message)
        .retry_after(RETRY_OVERLOADED)
        .status()
}

/// The status for an event ingest refusal.
pub fn ingest(error: IngestError) -> Status {
    match error {
        IngestError::ShuttingDown => shutting_down(error.to_string()),
    }
}

/// The status for an acknowledged batch that was not acknowledged.
pub fn log(error: LogError) -> Status {
    match error {
        LogError::Full(_) => self::error(Reason::EventLogFull, error.to_string())
            .retry_after(RETRY_UNAVAILABLE)
            .status(),
        LogError::SequenceGap { expected, .. } => {
            self::error(Reason::SequenceGap, error.to_string())
                .meta("expected_sequence", expected)
                .status()
        }
        LogError::ShuttingDown => shutting_down(error.to_string()),
        LogError::Log(sink) => match sink.kind {
            SinkErrorKind::Unavailable => {
                tracing::warn!(error = %sink, "event log unavailable");
                self::error(
                    Reason::EventLogUnavailable,
                    "event log unavailable, retry the batch with the same sequence",
                )
                .retry_after(RETRY_UNAVAILABLE)
                .status()
            }
            SinkErrorKind::OutcomeUnknown => {
                tracing::warn!(error = %sink, "event log append outcome unknown");
                self::error(
                    Reason::OutcomeUnknown,
                    "the event log did not confirm the append in time; retry the batch with the \
                     same producer_id and sequence (a durable one answers duplicate)",
                )
                .status()
            }
            SinkErrorKind::StorageFull => {
                tracing::error!(error = %sink, "the event log is out of space; batches are refused");
                storage_full().status()
            }
            SinkErrorKind::Rejected => internal(&sink),
        },
    }
}

/// The status for an event of PublishEvent(s) that did not become
/// durable in the event log: as [`log`], in the words of a single event
/// (no producer, no sequence; a full backlog never gets here, the overflow
/// policy sheds the event instead).
pub fn log_event(error: LogError) -> Status {
    match error {
        LogError::Log(sink) if sink.kind == SinkErrorKind::Unavailable => {
            tracing::warn!(error = %sink, "event log unavailable");
            self::error(
                Reason::EventLogUnavailable,
                "event log unavailable: the event was not stored; retry it",
            )
            .retry_after(RETRY_UNAVAILABLE)
            .status()
        }
        LogError::Log(sink) if sink.kind == SinkErrorKind::OutcomeUnknown => {
            tracing::warn!(error = %sink, "event log append outcome unknown");
            self::error(
                Reason::OutcomeUnknown,
                "the event log did not confirm the event in time: it may be stored; a retry \
                 with the same event_id is dropped as a duplicate while the pipeline's \
                 deduplication step remembers the id",
            )
            .status()
        }
        other => log(other),
    }
}

/// INTERNAL with a generic message; the detail goes to the log only.
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    internal_status()
}

/// INTERNAL with the generic message, for a fault already logged (or a panic).
pub fn internal_status() -> Status {
    self::error(Reason::Internal, "internal error").status()
}
