//! The transform engine's integration tests: configuration, the pipeline,
//! and the running engine under overload and shutdown, with in-memory sinks
//! (the server's tests run it over the real stores).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly; clippy's allow-*-in-tests does not reach tests/ (rust-clippy#13981)"
)]

mod config;
mod engine;
mod log_model;
mod pipeline;

pub use test_support::{TWELVE_STEPS, legacy_events};
