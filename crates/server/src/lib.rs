//! The `orderflow` binary's wiring, as a library so its integration tests
//! can drive the same pieces: configuration ([`config`]), telemetry, serving
//! ([`serve`]), the credentials files ([`credentials`]), the stall [`watchdog`], the operator commands ([`events_cli`])
//! and the adapters that let the transform engine write to the database
//! ([`sinks`]). The only
//! crate that knows the whole graph, and the only library using `anyhow`
//! (it is the binary's).

pub mod config;
pub mod connections;
pub mod credentials;
pub mod dead_letters_cli;
pub mod events_cli;
pub mod nats_log;
pub mod probe;
pub mod serve;
pub mod sinks;
pub mod telemetry;
pub mod tls;
pub mod watchdog;
