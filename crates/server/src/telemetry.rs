//! Logs, traces and metrics: `tracing-subscriber` (pretty or JSON, filtered
//! by `RUST_LOG`), OTLP trace export when an endpoint is configured, W3C
//! trace-context propagation, and the Prometheus `/metrics` listener.

use std::net::SocketAddr;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, Settings};

/// Telemetry that must be flushed on exit.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes pending spans.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: could not flush traces: {error}");
        }
    }
}

/// `host:4317` means plain http: opentelemetry 0.33 would otherwise read a
/// scheme-less endpoint as https and fail the TLS handshake against a
/// plain collector.
pub fn otlp_endpoint(raw: &str) -> String {
    if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    }
}

/// Installs logging and, if configured, trace export.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match settings.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(Correlated(tracing_subscriber::fmt::format().json()))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Extract and inject W3C `traceparent` whether or not spans are exported,
    // so a caller's trace id survives this hop.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let endpoint = otlp_endpoint(endpoint);
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint);
            if endpoint.starts_with("https://") {
                exporter = exporter.with_tls_config(crate::tls::otlp(settings)?);
            }
            let exporter = exporter
                .build()
                .with_context(|| format!("cannot set up OTLP export to {endpoint}"))?;
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(settings.service_name.clone())
                        .build(),
                )
                .build()
        }
        // Nothing exported, but requests still get trace and span ids
        // (continuing a caller's `traceparent`), so logs correlate with the
        // caller's trace.
        None => SdkTracerProvider::builder().build(),
    };
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("orderflow"));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .with(CorrelationLayer)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry {
        traces: settings.otlp_endpoint.is_some().then_some(provider),
    })
}

/// The ids a request's span carries, kept where the log formatter finds
/// them: [`CorrelationLayer`] stores the `trace_id` and `span_id` fields
/// when `serve::request_span` records them.
#[derive(Debug, Clone, Default)]
struct Correlation {
    trace_id: String,
    span_id: String,
}

/// Keeps a span's recorded `trace_id`/`span_id` as a [`Correlation`].
struct CorrelationLayer;

impl<S> tracing_subscriber::Layer<S> for CorrelationLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let mut seen = extensions
            .get_mut::<Correlation>()
            .map(std::mem::take)
            .unwrap_or_default();
        values.record(&mut CorrelationVisitor(&mut seen));
        if !seen.trace_id.is_empty() {
            extensions.replace(seen);
        }
    }
}

struct CorrelationVisitor<'a>(&'a mut Correlation);

impl tracing::field::Visit for CorrelationVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "trace_id" => value.clone_into(&mut self.0.trace_id),
            "span_id" => value.clone_into(&mut self.0.span_id),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The JSON log line, with `trace_id` and `span_id` as top-level fields for
/// every event inside a request (the innermost span that has them).
struct Correlated<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Correlated<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<Correlation>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        // The JSON formatter writes one object: put the ids first in it.
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Starts the Prometheus listener and describes every metric the contract
/// names (so `/metrics` carries HELP and TYPE lines from the start).
pub fn metrics(listen: SocketAddr) -> anyhow::Result<()> {
    const LATENCY_BUCKETS: [f64; 14] = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5,
    ];
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(
            Matcher::Full("orderflow_grpc_request_duration_seconds".to_owned()),
            &LATENCY_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "orderflow_grpc_requests_total",
        "finished gRPC requests by service, method and status code, including those a layer answered (auth, deadline, shedding, panics)"
    );
    describe_gauge!(
        "orderflow_grpc_requests_in_flight",
        "gRPC requests in progress by service and method (streams until they end)"
    );
    describe_histogram!(
        "orderflow_grpc_request_duration_seconds",
        metrics::Unit::Seconds,
        "gRPC request latency"
    );
    describe_counter!(
        "orderflow_panics_total",
        "RPC handlers that panicked (answered INTERNAL)"
    );
    describe_counter!(
        "orderflow_cache_hits_total",
        "order lookups answered from the cache"
    );
    describe_counter!(
        "orderflow_cache_misses_total",
        "order lookups the cache could not answer"
    );
    describe_counter!(
        "orderflow_cache_coalesced_total",
        "cache misses that waited for another caller's lookup"
    );
    describe_counter!(
        "orderflow_cache_evictions_total",
        "cache entries evicted to stay within capacity"
    );
    describe_gauge!("orderflow_cache_entries", "orders held in the cache");
    describe_gauge!(
        "orderflow_build_info",
        "always 1; the version label says which build is running"
    );
    metrics::gauge!("orderflow_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_gauge!(
        "orderflow_db_pool_connections",
        "database connections open in the pool (in use or idle)"
    );
    describe_gauge!(
        "orderflow_db_pool_idle_connections",
        "database connections idle in the pool"
    );
    describe_gauge!(
        "orderflow_db_pool_max_connections",
        "the pool's size (--db-pool-size)"
    );
    describe_counter!(
        "orderflow_events_received_total",
        "events that reached ingest"
    );
    describe_counter!(
        "orderflow_events_processed_total",
        "events stored after the pipeline"
    );
    describe_counter!(
        "orderflow_events_filtered_total",
        "events a pipeline filter dropped"
    );
    describe_counter!(
        "orderflow_events_deduplicated_total",
        "repeated events dropped"
    );
    describe_counter!(
        "orderflow_events_dropped_total",
        "events shed or lost (overflow policy or both stores down)"
    );
    describe_counter!(
        "orderflow_events_dead_lettered_total",
        "events written to the dead-letter store"
    );
    describe_gauge!(
        "orderflow_queue_depth",
        "events waiting in the ingest queues"
    );
    describe_gauge!(
        "orderflow_serving",
        "1 while health reports SERVING, else 0"
    );
    describe_gauge!(
        "orderflow_database_up",
        "1 while the database answers through the pool, else 0"
    );
    describe_gauge!(
        "orderflow_queue_capacity",
        "total capacity of the ingest queues"
    );
    describe_gauge!(
        "orderflow_events_in_flight",
        "accepted events not yet settled"
    );
    describe_gauge!(
        "orderflow_log_backlog",
        "events acknowledged (durable in the event log) and not yet processed"
    );
    // Present from the start, at zero, so alerts can rate() them.
    metrics::counter!("orderflow_panics_total").increment(0);
    Ok(())
}
