//! The domain's one error type.
//!
//! Policy: every variant is something a caller can act on, and its message
//! names the offending field or value (lower case, no trailing period). Input
//! that breaks a rule is an error value, never a panic, including rows from
//! old data that break an invariant newer code assumes (a product with no
//! primary warehouse): such data loads, and the gap surfaces here only where
//! the invariant is needed. Mapping to gRPC codes lives in `grpc-api`, in one
//! place.

use crate::{IdempotencyKey, OrderStatus, ProductId};

/// Why a domain rule rejected a value or an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field's value is malformed or out of range. `field` is the path a
    /// client recognises (`user_id`, `lines[2].quantity`).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field as the client named it.
        field: String,
        /// What is wrong with it, naming the value where that helps.
        reason: String,
    },
    /// The order's status cannot move from `from` to `to`.
    #[error("illegal status transition from {from} to {to}")]
    IllegalTransition {
        /// The order's current status.
        from: OrderStatus,
        /// The status that was asked for.
        to: OrderStatus,
    },
    /// A product has no warehouse marked primary (zero warehouses, or none
    /// marked). Old data contains such products; only lookups that need the
    /// primary report it.
    #[error("product {0} has no primary warehouse")]
    NoPrimaryWarehouse(ProductId),
    /// A product names more than one primary warehouse.
    #[error("product {product} has {count} primary warehouses, at most one is allowed")]
    MultiplePrimaryWarehouses {
        /// The product being built.
        product: ProductId,
        /// How many warehouses were marked primary.
        count: usize,
    },
    /// An idempotency key was sent again with a different request (other
    /// lines or currency) than the order it created; an identical retry is
    /// not an error (it returns the original order).
    #[error(
        "idempotency_key {} was already used for a different order (other lines or currency); \
         send a new key for a new order",
        crate::quote(.0.as_str())
    )]
    IdempotencyKeyReused(IdempotencyKey),
    /// A stored or imported event is not valid event JSON (syntax, an
    /// unknown field, a duplicate key, or a field that fails its rule).
    #[error("malformed event: {0}")]
    MalformedEvent(String),
}

impl DomainError {
    /// A malformed or out-of-range field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
