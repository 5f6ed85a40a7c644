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
    every_dashboard_query_names_a_metric_the_server_serves(&body);
}

/// The metric names in the Grafana dashboard (`deploy/grafana/orderflow.json`):
/// `orderflow_*` and `process_*` words, a histogram's series suffixes
/// taken off.
fn dashboard_metric_names() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/orderflow.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    let mut names = Vec::new();
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("orderflow_") || word.starts_with("process_") {
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .unwrap_or(word);
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Every query of the dashboard names a metric of the catalog
/// (`server::telemetry::METRICS`) or of the process collector, and one the
/// server serves, so a rename breaks this test, not the dashboard; and the
/// panels an operator needs are there.
fn every_dashboard_query_names_a_metric_the_server_serves(body: &str) {
    let names = dashboard_metric_names();
    for name in &names {
        if name.starts_with("orderflow_") {
            assert!(
                METRICS.iter().any(|m| m.name == *name),
                "the dashboard queries {name}, which is not in server::telemetry::METRICS"
            );
        }
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which /metrics does not serve"
        );
    }
    for needed in [
        "orderflow_grpc_requests_total",
        "orderflow_grpc_request_duration_seconds",
        "orderflow_cache_hits_total",
        "orderflow_events_received_total",
        "orderflow_events_dead_lettered_total",
        "orderflow_log_backlog",
        "orderflow_grpc_shed_total",
        "orderflow_db_pool_connections",
        "orderflow_runtime_stalls_total",
        "orderflow_runtime_busy_ratio",
        "process_resident_memory_bytes",
    ] {
        assert!(
            names.iter().any(|name| name == needed),
            "no dashboard panel shows {needed}"
        );
    }
}
