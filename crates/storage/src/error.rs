//! The storage crate's one error type.
//!
//! Policy: one variant per thing a caller acts on differently: the thing is
//! missing (`NotFound`), someone else changed it first (`Conflict`), the
//! input broke a database rule (`Invalid`) or a domain rule (`Domain`), the
//! database cannot be reached and nothing was applied (`Unavailable`, the one
//! class safe to retry), it has no room for the write (`Full`: retry once
//! space returns), a write was sent but not confirmed
//! (`OutcomeUnknown`: retry only what is idempotent); the rest is `Internal`.
//! Every diesel and pool error is classified here, in [`From`] impls, and
//! nowhere else. Messages are lower case and name the entity or constraint.

use domain::DomainError;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The entity does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What kind of thing (`order`, `product`).
        entity: &'static str,
        /// Its id as the caller gave it.
        id: String,
    },
    /// Someone else got there first: a stale version, or a duplicate key.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The write broke a database rule (CHECK, foreign key, NOT NULL).
    #[error("rejected by the database: {0}")]
    Invalid(String),
    /// A domain rule rejected the operation (an illegal status transition) or
    /// stored data broke an invariant that this operation needs.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The database cannot be reached, or did not answer in time before a
    /// write was sent: nothing was applied. Retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refuses this configuration for good: no such database
    /// or role, failed authentication, a malformed URL, a SQLite path that
    /// cannot hold a database, a database that is read-only. Retrying
    /// cannot help; an operator must change a setting.
    #[error("database misconfigured: {0}")]
    Misconfigured(String),
    /// The database is out of space (SQLite's "database or disk is full",
    /// PostgreSQL's "No space left on device"): the write was rolled back,
    /// nothing of it applied. Retryable once space returns; reads go on.
    #[error("storage full: {0}")]
    Full(String),
    /// A write was sent but its commit was not confirmed within the budget:
    /// it may or may not have been applied. Not safe to retry unless the
    /// write is idempotent (an idempotency key, an event batch's write id).
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Anything else: a bug or corrupt data. Not retryable.
    #[error("storage error: {0}")]
    Internal(String),
}

/// The two ways a write can lose a race.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Optimistic concurrency: the caller's version is not the stored one.
    #[error("order {id} is at version {actual}, not the expected {expected}")]
    StaleVersion {
        /// The order.
        id: String,
        /// The version the caller based its change on.
        expected: u64,
        /// The version stored now.
        actual: u64,
    },
    /// A unique key already exists (a SKU owned by another product).
    #[error("duplicate {0}")]
    Duplicate(String),
}

impl From<diesel::result::Error> for StorageError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match error {
            Error::DatabaseError(kind, info) => {
                match kind {
                    Kind::UniqueViolation => {
                        Conflict::Duplicate(unique_key(info.as_ref()).to_owned()).into()
                    }
                    Kind::ForeignKeyViolation | Kind::CheckViolation | Kind::NotNullViolation => {
                        // Domain types check every field first, so this is a
                        // rule the types do not know: logged in full here,
                        // answered with one fixed message.
                        tracing::warn!(
                            constraint = info.constraint_name(),
                            detail = info.message(),
                            "a write broke a database rule"
                        );
                        Self::Invalid(RULE_BROKEN.to_owned())
                    }
                    // No answer from the server: the connection broke or closed
                    // (diesel-async reports I/O failures as UnableToSendCommand).
                    Kind::ClosedConnection | Kind::UnableToSendCommand => {
                        Self::Unavailable(info.message().to_owned())
                    }
                    // PostgreSQL rolled the transaction back to resolve a
                    // conflict with another: nothing was applied, and a
                    // repeat succeeds.
                    Kind::SerializationFailure => Self::Unavailable(info.message().to_owned()),
                    _ if info.message().contains("deadlock detected") => {
                        Self::Unavailable(info.message().to_owned())
                    }
                    // SQLite reports a held write lock past busy_timeout as a
                    // plain error; it is load, not a bug.
                    _ if is_sqlite_busy(info.message()) => {
                        Self::Unavailable(info.message().to_owned())
                    }
                    _ if is_out_of_space(info.message()) => {
                        metrics::counter!("orderflow_storage_full_total").increment(1);
                        Self::Full(info.message().to_owned())
                    }
                    _ if is_postgres_going_away(info.message()) => {
                        Self::Unavailable(info.message().to_owned())
                    }
                    // A read-only file or database, or one SQLite cannot
                    // open: no retry fixes these.
                    _ if is_sqlite_unusable(info.message()) => {
                        Self::Misconfigured(info.message().to_owned())
                    }
                    _ => Self::Internal(info.message().to_owned()),
                }
            }
            Error::NotFound => {
                Self::Internal("a row the operation relies on is missing".to_owned())
            }
            Error::BrokenTransactionManager => {
                Self::Unavailable("connection left in a broken transaction".to_owned())
            }
            // COMMIT failed (the connection broke under it) and so did the
            // rollback: the commit may or may not have been applied.
            Error::RollbackErrorOnCommit {
                commit_error,
                rollback_error,
            } => Self::OutcomeUnknown(format!(
                "commit failed ({commit_error}) and so did the rollback ({rollback_error})"
            )),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What a client hears for a CHECK, foreign key or NOT NULL violation: the
/// same words on both backends, naming no table or constraint.
const RULE_BROKEN: &str = "a value breaks a rule of the order store";

/// The unique keys a client can collide with: PostgreSQL's constraint name,
/// the columns SQLite lists in its message, and what the client is told.
/// One message per key, the same on both backends, naming no internals.
const UNIQUE_KEYS: [(&str, &str, &str); 4] = [
    (
        "products_sku_key",
        "products.sku",
        "sku: another product has this sku",
    ),
    (
        "order_idempotency_keys_pkey",
        "order_idempotency_keys.user_id, order_idempotency_keys.idempotency_key",
        "idempotency_key: already used by this user",
    ),
    (
        "warehouses_one_primary",
        "warehouses.product_id",
        "warehouses: a product has at most one primary warehouse",
    ),
    (
        "orders_pkey",
        "orders.order_id",
        "order_id: an order with this id exists",
    ),
];

/// The fixed description of the unique key `info` reports.
fn unique_key(info: &dyn diesel::result::DatabaseErrorInformation) -> &'static str {
    let found = UNIQUE_KEYS.iter().find(|(postgres, sqlite, _)| {
        info.constraint_name() == Some(*postgres)
            || info.message().strip_prefix("UNIQUE constraint failed: ") == Some(*sqlite)
    });
    match found {
        Some((_, _, message)) => message,
        None => {
            tracing::warn!(
                constraint = info.constraint_name(),
                detail = info.message(),
                "a write hit a unique key with no client message"
            );
            "a record with this key exists"
        }
    }
}

/// PostgreSQL going away under a session (a restart, a failover, an
/// administrator) reports these, not a closed connection; they pass.
fn is_postgres_going_away(message: &str) -> bool {
    message.contains("terminating connection")
        || message.contains("the database system is shutting down")
        || message.contains("the database system is starting up")
        || message.contains("the database system is in recovery mode")
}

/// The disk (or the tablespace, or the file system under SQLite's file)
/// has no room for the write.
fn is_out_of_space(message: &str) -> bool {
    message.contains("database or disk is full")
        || message.contains("No space left on device")
        || message.contains("could not extend file")
}

fn is_sqlite_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}

fn is_sqlite_unusable(message: &str) -> bool {
    message.contains("attempt to write a readonly database")
        || message.contains("unable to open database file")
}

impl From<diesel::ConnectionError> for StorageError {
    /// `InvalidConnectionUrl` is how `connect.rs` marks a permanent failure;
    /// SQLite's "unable to open" is one too. Anything else may pass.
    fn from(error: diesel::ConnectionError) -> Self {
        use diesel::ConnectionError as E;
        match error {
            E::InvalidConnectionUrl(reason) => Self::Misconfigured(reason),
            E::BadConnection(reason) if is_sqlite_unusable(&reason) => Self::Misconfigured(reason),
            E::CouldntSetupConfiguration(inner) => Self::from(inner),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<diesel_async::pooled_connection::PoolError> for StorageError {
    fn from(error: diesel_async::pooled_connection::PoolError) -> Self {
        use diesel_async::pooled_connection::PoolError;
        match error {
            PoolError::ConnectionError(e) => Self::from(e),
            PoolError::QueryError(e) => Self::from(e),
        }
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for StorageError {
    fn from(error: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        match error {
            bb8::RunError::TimedOut => {
                Self::Unavailable("timed out waiting for a database connection".to_owned())
            }
            bb8::RunError::User(e) => Self::from(e),
        }
    }
}
