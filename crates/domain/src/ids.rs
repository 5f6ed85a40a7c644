//! Identifiers. Client-chosen ids are bounded text; order ids are minted by
//! the server (UUIDv7: time-ordered, so new orders index at the tail) and
//! anything else is "not in the server's id format".

use std::fmt;
use std::str::FromStr;

use crate::DomainError;
use crate::text::{bounded_text, quote};

bounded_text!(
    /// Who placed an order or produced an event: 1..=128 characters, any
    /// characters (stored events carry tabs, quotes and non-ASCII ids).
    UserId, field = "user_id", max = 128, charset = Any
);
bounded_text!(
    /// A product, as the catalog names it: 1..=128 printable characters.
    ProductId, field = "product_id", max = 128, charset = Printable
);
bounded_text!(
    /// A warehouse: 1..=128 printable characters.
    WarehouseId, field = "warehouse_id", max = 128, charset = Printable
);
bounded_text!(
    /// A producer-chosen event id, used for de-duplication: 1..=128
    /// printable characters.
    EventId, field = "event_id", max = 128, charset = Printable
);
bounded_text!(
    /// A stock-keeping unit: 1..=64 ASCII letters, digits, `-`, `_`, `.`.
    Sku, field = "sku", max = 64, charset = Code
);
bounded_text!(
    /// A client's retry key for CreateOrder, unique per user: 1..=128
    /// printable characters.
    IdempotencyKey, field = "idempotency_key", max = 128, charset = Printable
);

/// An order's id: a UUIDv7 in its hyphenated lower-case form, minted by the
/// server when the order is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(uuid::Uuid);

impl OrderId {
    /// A fresh id. UUIDv7 sorts by creation time, so ids are unique across
    /// instances without coordination and new rows land at the index's end.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses the hyphenated form the server hands out; anything else
    /// (braces, `urn:`, the 32-digit simple form, other lengths) is rejected
    /// so one order has exactly one spelling.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let invalid = || {
            DomainError::invalid(
                "order_id",
                format!("{} is not an order id (a hyphenated UUID)", quote(value)),
            )
        };
        if value.len() != uuid::fmt::Hyphenated::LENGTH {
            return Err(invalid());
        }
        uuid::Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| invalid())
    }
}

impl OrderId {
    /// The id's 16 bytes (for compact encodings such as page tokens).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from its 16 bytes; any 16 bytes are a well-formed id.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for OrderId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One write of a batch of events (an append, a dead-letter batch): the
/// writer mints it once and sends the same id with every attempt, and the
/// store records it in the same transaction as the rows, so an attempt
/// whose outcome was unknown can be repeated without storing anything twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteId(uuid::Uuid);

impl WriteId {
    /// A fresh id, unique across instances without coordination.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(test)]
mod tests;
