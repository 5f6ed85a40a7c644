//! Orders: their lines, totals, statuses and the legal moves between them.
//!
//! An [`Order`] is built in two ways only: [`Order::place`] from a validated
//! [`NewOrder`], or [`Order::restore`] from stored parts, which re-checks the
//! invariants (a row edited by hand must not become a wrong total on screen).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::text::quote;
use crate::{Cents, Currency, DomainError, IdempotencyKey, OrderId, ProductId, UserId};

/// Most lines one order may have.
pub const MAX_ORDER_LINES: usize = 100;

/// Units of a product on one line: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    /// Parses a quantity, naming `field` in the error.
    pub fn parse_field(field: &str, value: u32) -> Result<Self, DomainError> {
        if value == 0 {
            return Err(DomainError::invalid(field, "must be at least 1"));
        }
        Ok(Self(value))
    }

    /// The count.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// One product line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    product_id: ProductId,
    quantity: Quantity,
    unit_price: Cents,
}

impl OrderLine {
    /// A line; `field` prefixes error names (`lines[2]`).
    pub fn new(
        field: &str,
        product_id: ProductId,
        quantity: Quantity,
        unit_price: Cents,
    ) -> Result<Self, DomainError> {
        if unit_price.get() < 0 {
            return Err(DomainError::invalid(
                format!("{field}.unit_price_cents"),
                format!("is {}, must not be negative", unit_price.get()),
            ));
        }
        Ok(Self {
            product_id,
            quantity,
            unit_price,
        })
    }

    /// The product.
    pub fn product_id(&self) -> &ProductId {
        &self.product_id
    }

    /// How many units.
    pub fn quantity(&self) -> Quantity {
        self.quantity
    }

    /// Price of one unit.
    pub fn unit_price(&self) -> Cents {
        self.unit_price
    }

    /// `quantity * unit_price`, or `None` on overflow.
    pub fn total(&self) -> Option<Cents> {
        self.unit_price.checked_mul(self.quantity.get())
    }
}

/// Sum of the lines' totals; the error names `total_cents`.
fn total_of(lines: &[OrderLine]) -> Result<Cents, DomainError> {
    lines
        .iter()
        .try_fold(Cents::ZERO, |sum, line| {
            line.total().and_then(|t| sum.checked_add(t))
        })
        .ok_or_else(|| {
            DomainError::invalid(
                "total_cents",
                "the lines' total overflows a 64-bit amount of cents",
            )
        })
}

fn check_line_count(lines: &[OrderLine]) -> Result<(), DomainError> {
    if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
        return Err(DomainError::invalid(
            "lines",
            format!(
                "has {} lines, 1..={MAX_ORDER_LINES} are allowed",
                lines.len()
            ),
        ));
    }
    Ok(())
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrderStatus {
    /// Placed, not paid.
    Pending,
    /// Paid, not shipped.
    Paid,
    /// On its way.
    Shipped,
    /// Arrived. Final.
    Delivered,
    /// Called off. Final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    /// Whether an order may move from `self` to `next`:
    /// PENDING→PAID|CANCELLED, PAID→SHIPPED|CANCELLED, SHIPPED→DELIVERED.
    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Paid)
                | (Pending, Cancelled)
                | (Paid, Shipped)
                | (Paid, Cancelled)
                | (Shipped, Delivered)
        )
    }

    /// `next`, if the move is legal.
    pub fn transition(self, next: Self) -> Result<Self, DomainError> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(DomainError::IllegalTransition {
                from: self,
                to: next,
            })
        }
    }

    /// The stored spelling, also used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid("status", format!("{} is not an order status", quote(s)))
            })
    }
}

/// A validated request to place an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    user_id: UserId,
    lines: Vec<OrderLine>,
    currency: Currency,
    total: Cents,
    idempotency_key: Option<IdempotencyKey>,
}

impl NewOrder {
    /// Checks the line count and that the total fits in 64 bits.
    pub fn new(
        user_id: UserId,
        lines: Vec<OrderLine>,
        currency: Currency,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<Self, DomainError> {
        check_line_count(&lines)?;
        let total = total_of(&lines)?;
        Ok(Self {
            user_id,
            lines,
            currency,
            total,
            idempotency_key,
        })
    }

    /// Who orders.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// What they order.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// In which currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Sum of the lines.
    pub fn total(&self) -> Cents {
        self.total
    }

    /// The client's retry key, if it sent one.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.idempotency_key.as_ref()
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    id: OrderId,
    user_id: UserId,
    status: OrderStatus,
    lines: Vec<OrderLine>,
    total: Cents,
    currency: Currency,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: u64,
}

/// The stored parts of an order, for [`Order::restore`].
#[derive(Debug, Clone)]
pub struct RestoredOrder {
    /// The order's id.
    pub id: OrderId,
    /// Who placed it.
    pub user_id: UserId,
    /// Its status.
    pub status: OrderStatus,
    /// Its lines, in order.
    pub lines: Vec<OrderLine>,
    /// The stored total, checked against the lines.
    pub total: Cents,
    /// Its currency.
    pub currency: Currency,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Bumped on every change; starts at 1.
    pub version: u64,
}

impl Order {
    /// A new PENDING order at version 1.
    pub fn place(id: OrderId, new: NewOrder, now: DateTime<Utc>) -> Self {
        Self {
            id,
            user_id: new.user_id,
            status: OrderStatus::Pending,
            lines: new.lines,
            total: new.total,
            currency: new.currency,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// Rebuilds a stored order, checking what stored data could have broken:
    /// the line count and that the total matches the lines.
    pub fn restore(parts: RestoredOrder) -> Result<Self, DomainError> {
        check_line_count(&parts.lines)?;
        let total = total_of(&parts.lines)?;
        if total != parts.total {
            return Err(DomainError::invalid(
                "total_cents",
                format!(
                    "order {} stores {} but its lines sum to {}",
                    parts.id, parts.total, total
                ),
            ));
        }
        Ok(Self {
            id: parts.id,
            user_id: parts.user_id,
            status: parts.status,
            lines: parts.lines,
            total,
            currency: parts.currency,
            created_at: parts.created_at,
            updated_at: parts.updated_at,
            version: parts.version,
        })
    }

    /// This order moved to `next` at `now`, one version later; an illegal
    /// move is an error and leaves `self` as it was.
    pub fn with_status(&self, next: OrderStatus, now: DateTime<Utc>) -> Result<Self, DomainError> {
        let status = self.status.transition(next)?;
        Ok(Self {
            status,
            updated_at: now,
            version: self.version.saturating_add(1),
            ..self.clone()
        })
    }

    /// The order's id.
    pub fn id(&self) -> OrderId {
        self.id
    }

    /// Who placed it.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Where it is in its life.
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// Its lines.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// Sum of its lines.
    pub fn total(&self) -> Cents {
        self.total
    }

    /// Its currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// When it was placed.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When it last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// Optimistic-concurrency version: 1 when placed, +1 per change.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests;
