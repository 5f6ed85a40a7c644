//! The transform engine's integration tests: configuration, the pipeline's
//! two loop orders, and the running engine under overload and shutdown,
//! with in-memory sinks (the real stores are exercised from `storage`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly; clippy's allow-*-in-tests does not reach tests/ (rust-clippy#13981)"
)]

mod config;
mod engine;
mod pipeline;

use domain::Event;

/// The legacy fixture, as realistic events.
pub fn legacy_events() -> Vec<Event> {
    include_str!("../../../domain/tests/data/legacy-events.jsonl")
        .lines()
        .map(|line| Event::from_json(line).unwrap())
        .collect()
}

/// Twelve steps of all five kinds, as the benchmark uses.
pub const TWELVE_STEPS: &str = include_str!("../../benches/twelve-steps.toml");
