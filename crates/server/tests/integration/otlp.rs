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

/// A received span: its trace id and name.
type SpanSeen = (Vec<u8>, String);

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
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
                spans.extend(scope.spans.into_iter().map(|s| (s.trace_id, s.name)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_the_callers_trace_id() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let db = TestDb::sqlite().await;
    // The bare `host:port` form operators write; it must mean plain http.
    let endpoint = address.to_string();
    let server = Server::start(&db, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let mut orders = server.orders().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(GetOrderRequest {
        order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let _ = orders.get_order(request).await; // NOT_FOUND is fine: the span is what matters
    assert!(server.terminate().success(), "exit flushes telemetry");

    let wanted: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        if spans
            .iter()
            .any(|(id, name)| *id == wanted && name == "rpc")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span with the caller's trace id; got {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.spans.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no span reached the https collector"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
