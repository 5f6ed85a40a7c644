//! The orderflow domain: the types every other crate speaks, the invariants
//! they hold, the errors raised when input breaks them, and the serialized
//! formats that outlive any one release (the stored event JSON).
//!
//! This crate knows nothing of databases, gRPC or async runtimes: it does no
//! I/O. Values are parsed once at the edge into these types ("parse, don't
//! validate"), so code that holds an [`OrderId`] or a [`UserId`] never checks
//! it again.

mod catalog;
mod error;
mod event;
mod ids;
mod money;
mod order;
mod sequence;
mod text;
mod time;

/// The string type of attribute keys and values (see [`Attributes`]).
pub use arcstr::ArcStr;
pub use catalog::{Product, ProductName, Warehouse, WarehouseName};
pub use error::DomainError;
pub use event::{Action, Attributes, BadLine, DeadLetter, Event, UnknownAction};
pub use ids::{EventId, IdempotencyKey, OrderId, ProductId, Sku, UserId, WarehouseId, WriteId};
pub use money::{Cents, Currency};
pub use order::{
    MAX_ORDER_LINES, NewOrder, Order, OrderLine, OrderStatus, Quantity, RestoredOrder,
};
pub use sequence::SequenceVerdict;
pub use text::{QUOTE_CHARS, Quoted, quote};
pub use time::Timestamp;
