//! The metric catalog (`server::telemetry::METRICS`): every metric a crate
//! emits is in it, and every one has HELP and TYPE on `/metrics` from
//! start-up, before any request.

use std::path::Path;

use server::telemetry::{Kind, METRICS};
use test_support::TestDb;

use crate::suite::scrape;
use crate::support::Server;

/// The names passed as string literals to `counter!`, `gauge!` and
/// `histogram!` in `source` (the describe macros excluded).
fn emitted_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
        let mut rest = source;
        while let Some(at) = rest.find(macro_name) {
            let before = &rest[..at];
            rest = &rest[at + macro_name.len()..];
            if before.ends_with("describe_") {
                continue;
            }
            let literal = rest.trim_start();
            if let Some(quoted) = literal.strip_prefix('"') {
                let end = quoted.find('"').unwrap();
                names.push(quoted[..end].to_owned());
            }
        }
    }
    names
}

#[test]
fn every_emitted_metric_is_in_the_catalog() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = test_support::workspace_sources(&crates);
    let mut emitted = Vec::new();
    for file in &files {
        for name in emitted_names(&std::fs::read_to_string(file).unwrap()) {
            emitted.push((name, file.clone()));
        }
    }
    // The scan finds what it should: a name from each emitting crate.
    for expected in [
        "orderflow_grpc_requests_total",
        "orderflow_cache_hits_total",
        "orderflow_events_received_total",
        "orderflow_grpc_shed_total",
    ] {
        assert!(
            emitted.iter().any(|(name, _)| name == expected),
            "the scan missed {expected}"
        );
    }
    for (name, file) in &emitted {
        assert!(
            METRICS.iter().any(|m| m.name == *name),
            "{name} (emitted in {}) is not in server::telemetry::METRICS",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_and_type_from_start_up() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[]);
    // No request has been made.
    let body = scrape(&server).await;
    for metric in METRICS {
        let kind = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            body.contains(&format!("# HELP {} ", metric.name)),
            "no HELP for {} at start-up:\n{body}",
            metric.name
        );
        assert!(
            body.contains(&format!("# TYPE {} {kind}", metric.name)),
            "no TYPE {kind} for {} at start-up",
            metric.name
        );
    }
    // Every method has its request counter from zero, so rate() works from
    // the first scrape.
    assert!(
        body.contains(
            r#"orderflow_grpc_requests_total{service="orderflow.v1.OrderService",method="GetOrder",code="OK"} 0"#
        ),
        "{body}"
    );
    // The process metrics.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no {name}:\n{body}"
        );
    }
}
