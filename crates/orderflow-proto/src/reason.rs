//! Why a request failed, in a form a program can act on.
//!
//! Every error an orderflow service answers carries a `google.rpc.ErrorInfo`
//! in its `grpc-status-details-bin` trailer (AIP-193): [`DOMAIN`] and one
//! [`Reason`]. INVALID_ARGUMENT also carries a `google.rpc.BadRequest` whose
//! field violation names the field the message names, and errors a retry
//! can cure carry a `google.rpc.RetryInfo` with the delay to wait. The
//! messages are for people; the reasons are the stable part.

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

/// `ErrorInfo.domain` on every orderflow error.
pub const DOMAIN: &str = "orderflow.v1";

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal => $code:ident,)+) => {
        /// `ErrorInfo.reason`: the stable, upper-snake name of what went wrong.
        ///
        /// New reasons may be added; an existing one is never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Reason {
            /// Every reason, in the order the README lists them.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)+];

            /// The name on the wire.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                }
            }

            /// The gRPC code every status with this reason carries: the one
            /// map from reason to code, total by construction.
            #[must_use]
            pub const fn code(self) -> tonic::Code {
                match self {
                    $(Reason::$variant => tonic::Code::$code,)+
                }
            }

            /// The reason named `name`, if this version of the crate knows it.
            #[must_use]
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Reason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// INVALID_ARGUMENT: a request field breaks its rule; `BadRequest` and
    /// metadata `field` name it (`lines[2].quantity`, `events[0].attributes`).
    InvalidField = "INVALID_FIELD" => InvalidArgument,
    /// INVALID_ARGUMENT: the request body is not a valid protobuf message
    /// of the method's type (or a string in it is not UTF-8).
    MalformedRequest = "MALFORMED_REQUEST" => InvalidArgument,
    /// INVALID_ARGUMENT: a product names more than one primary warehouse.
    MultiplePrimaryWarehouses = "MULTIPLE_PRIMARY_WAREHOUSES" => InvalidArgument,
    /// INVALID_ARGUMENT: a value breaks a rule of the order store that the
    /// request's types do not express.
    RuleBroken = "RULE_BROKEN" => InvalidArgument,
    /// NOT_FOUND: metadata `entity` (`order`, `product`) and `id`.
    NotFound = "NOT_FOUND" => NotFound,
    /// ALREADY_EXISTS: a unique key is taken; metadata `key` names it.
    DuplicateKey = "DUPLICATE_KEY" => AlreadyExists,
    /// ABORTED: the order changed since the version the request was based
    /// on; metadata `order_id`, `expected_version`, `actual_version`. Re-read
    /// and retry.
    StaleVersion = "STALE_VERSION" => Aborted,
    /// FAILED_PRECONDITION: the order's status cannot move to the one asked
    /// for; metadata `from` and `to`.
    IllegalTransition = "ILLEGAL_TRANSITION" => FailedPrecondition,
    /// FAILED_PRECONDITION: the product has no primary warehouse; metadata
    /// `product_id`.
    NoPrimaryWarehouse = "NO_PRIMARY_WAREHOUSE" => FailedPrecondition,
    /// FAILED_PRECONDITION: the idempotency key already created a different
    /// order; metadata `idempotency_key`.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED" => FailedPrecondition,
    /// UNAVAILABLE, with `RetryInfo`: the database cannot be reached or
    /// refuses writes; nothing was applied.
    DatabaseUnavailable = "DATABASE_UNAVAILABLE" => Unavailable,
    /// UNKNOWN: a write was sent but not confirmed; it may have been
    /// applied. Read before retrying, or retry with the same idempotency key
    /// (or the same batch sequence).
    OutcomeUnknown = "OUTCOME_UNKNOWN" => Unknown,
    /// UNAVAILABLE, with `RetryInfo`: the server is shutting down; retry
    /// (another replica answers).
    ShuttingDown = "SHUTTING_DOWN" => Unavailable,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the server is at its limit of
    /// concurrent requests or open streams; metadata `limit`.
    Overloaded = "OVERLOADED" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED: the request (or one message of a stream) is
    /// larger than the server accepts. Retrying the same request cannot
    /// help, so there is no `RetryInfo`.
    MessageTooLarge = "MESSAGE_TOO_LARGE" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED: the request's metadata is larger than the server
    /// accepts; no `RetryInfo`.
    MetadataTooLarge = "METADATA_TOO_LARGE" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the event queue was full and
    /// the event was dropped (overflow policy `drop-newest`).
    EventDropped = "EVENT_DROPPED" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the event queue was full and
    /// the event went to the dead-letter store (overflow policy
    /// `dead-letter`).
    EventDeadLettered = "EVENT_DEAD_LETTERED" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the acknowledged-ingest backlog
    /// stayed full for the whole wait; retry the batch with the same
    /// sequence.
    EventLogFull = "EVENT_LOG_FULL" => ResourceExhausted,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the database is out of space;
    /// the write (or batch) was not applied, nothing of it acknowledged.
    /// Reads go on; retry once an operator has made room.
    StorageFull = "STORAGE_FULL" => ResourceExhausted,
    /// UNAVAILABLE, with `RetryInfo`: the event log cannot take the batch
    /// now; retry it with the same sequence.
    EventLogUnavailable = "EVENT_LOG_UNAVAILABLE" => Unavailable,
    /// FAILED_PRECONDITION: the batch's `sequence` skips ahead of its
    /// producer's last durable one + 1; nothing was stored. Metadata
    /// `expected_sequence`: resend from that sequence, in order.
    SequenceGap = "SEQUENCE_GAP" => FailedPrecondition,
    /// FAILED_PRECONDITION: a subscription's `after_position` is older than
    /// retention keeps. Metadata `oldest_position`: subscribe again after
    /// `oldest_position - 1` (everything still stored), or accept the loss.
    PositionExpired = "POSITION_EXPIRED" => FailedPrecondition,
    /// UNIMPLEMENTED: this server runs without acknowledged ingest.
    AcknowledgedIngestDisabled = "ACKNOWLEDGED_INGEST_DISABLED" => Unimplemented,
    /// UNAUTHENTICATED: the credential is missing, unknown, expired or
    /// badly signed (`authorization: Bearer <token or JWT>`, or a client
    /// certificate naming a principal). The message says which, never
    /// quoting the credential.
    Unauthenticated = "UNAUTHENTICATED" => Unauthenticated,
    /// PERMISSION_DENIED: the principal is known but lacks the scope the
    /// RPC needs; metadata `scope` names it, `principal` the caller.
    MissingScope = "MISSING_SCOPE" => PermissionDenied,
    /// RESOURCE_EXHAUSTED, with `RetryInfo`: the principal is over its
    /// configured rate; metadata `principal` and `rate`. Retry after the
    /// delay.
    RateLimited = "RATE_LIMITED" => ResourceExhausted,
    /// DEADLINE_EXCEEDED: the request's `grpc-timeout` ran out in the server.
    DeadlineExceeded = "DEADLINE_EXCEEDED" => DeadlineExceeded,
    /// DEADLINE_EXCEEDED: a client stream sent nothing for the server's
    /// stream idle timeout; metadata `idle_timeout`.
    StreamIdle = "STREAM_IDLE" => DeadlineExceeded,
    /// INTERNAL: a fault in the server (a bug, corrupt data, a panic); the
    /// detail is in the server's log, never in the answer.
    Internal = "INTERNAL" => Internal,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason in `status`'s `ErrorInfo`, when it is an orderflow reason this
/// version of the crate knows.
#[must_use]
pub fn reason(status: &Status) -> Option<Reason> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    (info.domain == DOMAIN)
        .then(|| Reason::from_name(&info.reason))
        .flatten()
}

/// The sequence to resend from, when `status` is a `SEQUENCE_GAP` refusal
/// of an event batch (its `expected_sequence`): the batch skipped ahead of
/// its producer's last durable one, and nothing was stored. A producer
/// resends its batches from that sequence, in order.
#[must_use]
pub fn expected_sequence(status: &Status) -> Option<u64> {
    metadata_of(status, Reason::SequenceGap, "expected_sequence")?
        .parse()
        .ok()
}

/// The oldest position still stored, when `status` is a `POSITION_EXPIRED`
/// refusal of a subscription: events up to `oldest_position - 1` were
/// removed by retention.
#[must_use]
pub fn oldest_position(status: &Status) -> Option<u64> {
    metadata_of(status, Reason::PositionExpired, "oldest_position")?
        .parse()
        .ok()
}

/// `key` of `status`'s `ErrorInfo` metadata, if its reason is `reason`.
fn metadata_of(status: &Status, reason: Reason, key: &str) -> Option<String> {
    let details = status.get_error_details();
    let mut info = details.error_info()?.clone();
    if info.domain != DOMAIN || info.reason != reason.as_str() {
        return None;
    }
    info.metadata.remove(key)
}

/// All the standard details in `status` (`ErrorInfo`, `BadRequest`,
/// `RetryInfo`, ...); empty when it carries none or they do not decode.
#[must_use]
pub fn details(status: &Status) -> ErrorDetails {
    status.get_error_details()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_says_its_code_as_its_doc_does() {
        // The doc of each reason opens with its code (README's table too).
        assert_eq!(Reason::SequenceGap.code(), tonic::Code::FailedPrecondition);
        assert_eq!(Reason::EventLogFull.code(), tonic::Code::ResourceExhausted);
        assert_eq!(Reason::OutcomeUnknown.code(), tonic::Code::Unknown);
    }

    #[test]
    fn names_round_trip_and_are_upper_snake() {
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert_eq!(Reason::from_name(name), Some(*reason));
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        assert_eq!(Reason::from_name("NOT_A_REASON"), None);
    }

    #[test]
    fn a_sequence_gap_says_where_to_resend_from() {
        let mut gap = ErrorDetails::new();
        gap.set_error_info(
            "SEQUENCE_GAP",
            DOMAIN,
            std::collections::HashMap::from([("expected_sequence".into(), "42".into())]),
        );
        let status = Status::with_error_details(tonic::Code::FailedPrecondition, "gap", gap);
        assert_eq!(expected_sequence(&status), Some(42));
        assert_eq!(
            expected_sequence(&Status::failed_precondition("no details")),
            None
        );
    }

    #[test]
    fn an_expired_position_says_what_is_still_stored() {
        let mut expired = ErrorDetails::new();
        expired.set_error_info(
            "POSITION_EXPIRED",
            DOMAIN,
            std::collections::HashMap::from([("oldest_position".into(), "7".into())]),
        );
        let status = Status::with_error_details(tonic::Code::FailedPrecondition, "gone", expired);
        assert_eq!(oldest_position(&status), Some(7));
        assert_eq!(expected_sequence(&status), None);
    }

    #[test]
    fn reason_reads_only_the_orderflow_domain() {
        let mut ours = ErrorDetails::new();
        ours.set_error_info("STALE_VERSION", DOMAIN, std::collections::HashMap::new());
        let status = Status::with_error_details(tonic::Code::Aborted, "stale", ours);
        assert_eq!(reason(&status), Some(Reason::StaleVersion));

        let mut foreign = ErrorDetails::new();
        foreign.set_error_info(
            "STALE_VERSION",
            "example.com",
            std::collections::HashMap::new(),
        );
        let status = Status::with_error_details(tonic::Code::Aborted, "stale", foreign);
        assert_eq!(reason(&status), None);
        assert_eq!(reason(&Status::aborted("no details")), None);
    }
}
