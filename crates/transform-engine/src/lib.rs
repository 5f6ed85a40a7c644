//! orderflow's data plane: events enter through small bounded queues with
//! an explicit overflow policy, pass through a configured chain of
//! transforms, and land in the event store; failures go to the dead-letter
//! store. Every event is accounted for at every moment.
//!
//! This crate knows nothing of gRPC or databases: it depends on `domain`
//! and writes through the [`EventSink`] and [`DeadLetterSink`] traits, which
//! the server implements over the database.
//!
//! Hot-path dispatch is an enum ([`TransformStep`]) with one `match`; trait
//! objects appear only at the configuration seam.

mod config;
mod engine;
mod ingest;
mod keys;
mod log;
mod pipeline;
mod sink;
mod stats;
mod steps;

pub use config::{ConfigError, DEFAULT_DEDUP_WINDOW, DEFAULT_MAX_KEYS, PipelineSpec};
pub use engine::{AggregateRow, Engine, EngineConfig};
pub use ingest::{Admission, Ingest, IngestError, OverflowPolicy};
pub use log::{
    Ack, Appended, BoundState, Damage, EventLog, LogBatch, LogConfig, LogError, LogIngest,
    LogRecord, MAX_BATCH_EVENTS, MemoryLog, Pending, check_sequence,
};
pub use pipeline::{BatchOutcome, Pipeline};
pub use sink::{DeadLetterSink, EventSink, MemorySink, SinkError, SinkErrorKind, Written};
pub use stats::PipelineStats;
pub use steps::{
    Aggregate, AggregateTable, Condition, Deduplicate, Enrich, Filter, KeySource, Rename, Totals,
    TransformStep, Verdict,
};
