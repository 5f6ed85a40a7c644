//! orderflow's database layer: the schema and its migrations, async
//! repositories over PostgreSQL or embedded SQLite, and the lock-free order
//! cache in front of them.
//!
//! Callers depend on the traits ([`OrderRepository`], [`CatalogRepository`],
//! [`EventStore`], [`DeadLetterStore`]); [`Database`] implements all of them
//! for both backends. This crate knows nothing of gRPC or of the transform
//! engine: the server adapts these stores to the engine's sinks.

pub mod backup;
mod batch;
pub mod cache;
mod catalog;
mod config;
mod connect;
mod db;
mod dead_letters;
mod error;
mod events;
mod failpoint;
mod feed;
mod lease;
mod listen;
mod log;
pub mod migrate;
mod orders;
mod schema;
mod tls;

pub use cache::{CacheConfig, CacheStats, CachedOrder, CachedOrders, OrderCache};
pub use catalog::CatalogRepository;
pub use config::{Backend, StoreConfig};
pub use db::{Database, ORDER_CHANGES_CHANNEL, Written};
pub use dead_letters::{LabelledBatch, ReasonCount};
pub use error::{Conflict, StorageError};
pub use events::{DeadLetterStore, EventStore, StoredDeadLetter, StoredEvent};
pub use feed::{EVENTS_STORED_CHANNEL, Expired, StoredSignal};
pub use lease::{Claim, LEASE_CLASS, LogLease};
pub use listen::{ListenerState, listen_for_order_changes};
pub use log::{
    DamagedLogRow, LogAppend, LogCommit, LogDamage, LogEntry, NewLogBatch, ProducerRecord,
};
pub use orders::{
    Created, DEFAULT_PAGE_SIZE, FoundOrder, MAX_PAGE_SIZE, OrderForm, OrderPage, OrderRepository,
};
