//! Trace export: spans reach an OTLP collector (a minimal receiver built
//! from opentelemetry-proto's tonic server types), carrying the caller's
//! trace id when the request had a W3C `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use orderflow_proto::proto::GetOrderRequest;
use tonic::{Request, Response, Status};

use test_support::TestDb;

use crate::support::Server;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    /// Waits up to 10 s for a span matching `wanted`.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| wanted(s)) {
                return span.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; got {:#?}",
                self.spans
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| &s.name)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A span attribute's value, as text (strings as they are, numbers decimal).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Starts a plaintext collector; returns it and its `host:port`.
async fn start_collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (collector, address.to_string())
}

fn hex_id(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_follow_the_rpc_conventions_and_logs_carry_their_ids() {
    let (collector, endpoint) = start_collector().await;
    let db = TestDb::sqlite().await;
    // The bare `host:port` form operators write; it must mean plain http.
    // Every GetOrder panics: INTERNAL, the server's own failure.
    let server = Server::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("FAILPOINTS", "grpc-get-order=1*panic(boom)"),
        ],
    );
    let mut orders = server.orders().await;
    let call = |trace_id: &str, order_id: &str| {
        let mut request = Request::new(GetOrderRequest {
            order_id: order_id.into(),
        });
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        request
    };
    let panicked = "4bf92f3577b34da6a3ce929d0e0e4736";
    let missing = "5cf92f3577b34da6a3ce929d0e0e4737";
    let status = orders
        .get_order(call(panicked, "01890a5d-ac96-774b-bcce-b302099a8057"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    let status = orders
        .get_order(call(missing, "01890a5d-ac96-774b-bcce-b302099a8058"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for _ in 0..3 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
    }
    let logs = server.logs();
    assert!(server.terminate().success(), "exit flushes telemetry");

    // The panicking call: a SERVER span named by the method, continuing the
    // caller's trace, with the RPC attributes and an error status.
    let rpc = collector
        .wait_for("GetOrder span in the panicked trace", |s| {
            s.trace_id == hex_id(panicked) && s.name == "orderflow.v1.OrderService/GetOrder"
        })
        .await;
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(rpc.parent_span_id, hex_id("00f067aa0ba902b7"));
    assert_eq!(attribute(&rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(&rpc, "rpc.service").as_deref(),
        Some("orderflow.v1.OrderService")
    );
    assert_eq!(attribute(&rpc, "rpc.method").as_deref(), Some("GetOrder"));
    assert_eq!(
        attribute(&rpc, "rpc.grpc.status_code").as_deref(),
        Some("13")
    );
    let status = rpc.status.as_ref().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");

    // NOT_FOUND is the client's answer, not the server's failure; the
    // lookup is a CLIENT child span for the database.
    let rpc = collector
        .wait_for("GetOrder span in the missing trace", |s| {
            s.trace_id == hex_id(missing) && s.name == "orderflow.v1.OrderService/GetOrder"
        })
        .await;
    assert_eq!(
        attribute(&rpc, "rpc.grpc.status_code").as_deref(),
        Some("5")
    );
    assert_ne!(
        rpc.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let lookup = collector
        .wait_for("database span under the GetOrder span", |s| {
            s.parent_span_id == rpc.span_id && s.name == "SELECT orders"
        })
        .await;
    assert_eq!(lookup.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(&lookup, "db.system.name").as_deref(),
        Some("sqlite")
    );

    // Health checks are not traced by default.
    let health_spans = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name.contains("Health"))
        .count();
    assert_eq!(health_spans, 0, "health checks were traced");

    // The panic's log line carries the request's trace and span ids.
    let line = logs
        .iter()
        .find(|line| line.contains("panic") && line.contains("boom"))
        .unwrap_or_else(|| panic!("no panic log line in {logs:#?}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["trace_id"], panicked, "{line}");
    let span_id = json["span_id"].as_str().expect("span_id");
    let panicked_rpc = collector
        .wait_for("the panicked span again", |s| {
            s.trace_id == hex_id(panicked)
        })
        .await;
    assert_eq!(hex_id(span_id), panicked_rpc.span_id, "{line}");
}

/// `--trace-sample-ratio 0`: a request the caller marked sampled is still
/// traced (parent-based); one marked unsampled, and one with no
/// `traceparent`, get no span, and their log lines no trace ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_callers_decision_and_the_ratio() {
    let (collector, endpoint) = start_collector().await;
    let db = TestDb::sqlite().await;
    let server = Server::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("ORDERFLOW_TRACE_SAMPLE_RATIO", "0"),
        ],
    );
    let mut orders = server.orders().await;
    let call = |traceparent: Option<String>| {
        let mut request = Request::new(GetOrderRequest {
            order_id: "01890a5d-ac96-774b-bcce-b302099a8059".into(),
        });
        if let Some(value) = traceparent {
            request
                .metadata_mut()
                .insert("traceparent", value.parse().unwrap());
        }
        request
    };
    let sampled = "6cf92f3577b34da6a3ce929d0e0e4738";
    let unsampled = "7cf92f3577b34da6a3ce929d0e0e4739";
    for traceparent in [
        Some(format!("00-{sampled}-00f067aa0ba902b7-01")),
        Some(format!("00-{unsampled}-00f067aa0ba902b7-00")),
        None,
        None,
    ] {
        let status = orders.get_order(call(traceparent)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    assert!(server.terminate().success(), "exit flushes telemetry");

    collector
        .wait_for("the sampled caller's span", |s| {
            s.trace_id == hex_id(sampled) && s.name == "orderflow.v1.OrderService/GetOrder"
        })
        .await;
    let traces: Vec<Vec<u8>> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(
        traces.iter().all(|trace| *trace == hex_id(sampled)),
        "only the sampled caller's trace is exported, got {} spans in {} traces",
        traces.len(),
        traces
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_trusting_the_configured_ca() {
    let ca = test_support::TestCa::new("collector CA");
    let issued = ca.server(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(issued.cert_pem, issued.key_pem),
            ))
            .unwrap()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let db = TestDb::sqlite().await;
    let endpoint = format!("https://localhost:{}", address.port());
    let server = Server::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                &ca_file.display().to_string(),
            ),
        ],
    );
    let mut orders = server.orders().await;
    let _ = orders
        .get_order(GetOrderRequest {
            order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        })
        .await;
    assert!(server.terminate().success(), "exit flushes telemetry");
    collector
        .wait_for("span at the https collector", |s| {
            s.name == "orderflow.v1.OrderService/GetOrder"
        })
        .await;
}
