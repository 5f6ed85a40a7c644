//! Logs, traces and metrics: `tracing-subscriber` (pretty or JSON, filtered
//! by `RUST_LOG`), OTLP trace export when an endpoint is configured, W3C
//! trace-context propagation, and the Prometheus `/metrics` listener.

use std::io::IsTerminal as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
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

/// The target of the audit trail's lines (`grpc_api::audit`).
const AUDIT: &str = "audit";

/// Installs logging (and the audit trail) and, if configured, trace export.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The audit trail is not a log level's to silence.
    if let Ok(audit) = format!("{AUDIT}=info").parse() {
        filter = filter.add_directive(audit);
    }
    let fmt = match settings.log_format {
        // Colours only for a person at a terminal: escape codes in a log
        // file are noise, and styling every span's fields costs each request.
        LogFormat::Pretty => {
            let colour = std::io::stderr().is_terminal();
            tracing_subscriber::fmt::layer()
                // Set on the format too: `NamingRpc` formats into a buffer,
                // which would otherwise lose the colours.
                .event_format(NamingRpc {
                    format: tracing_subscriber::fmt::format().with_ansi(colour),
                    spanless: !settings.spans_observed(),
                })
                .with_ansi(colour)
                .with_writer(std::io::stderr)
                .boxed()
        }
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
    // Off, because each costs every request: per-span thread attributes (a
    // String allocation each, and meaningless for a task that moves between
    // threads), busy/idle timings (two clock reads on every poll), and
    // making the span's context current on every poll (nothing here reads
    // OpenTelemetry's current context; the log formatter asks the span).
    //
    // Only installed when something reads what it builds
    // (`Settings::spans_observed`): pretty logs without export would pay for
    // an SDK span per request that nothing ever looks at
    // (docs/benchmarks.md).
    let otel = settings.spans_observed().then(|| {
        tracing_opentelemetry::layer()
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_tracer(provider.tracer("orderflow"))
            .with_filter(tracing_subscriber::filter::DynFilterFn::new(in_a_trace))
    });
    // The audit trail: one JSON line per event of target `audit`, whatever
    // the log format, and not repeated in the log itself.
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|event| event.target() == AUDIT));
    let fmt = fmt.with_filter(filter_fn(|event| event.target() != AUDIT));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(audit)
        .with(otel)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry {
        traces: settings.otlp_endpoint.is_some().then_some(provider),
    })
}

/// What the OpenTelemetry layer sees: the request spans `serve` decided to
/// trace, the spans inside them (a database call), and events. A database
/// call outside a traced request (a request sampling left out, start-up)
/// would otherwise become a trace of its own.
fn in_a_trace<S>(
    metadata: &tracing::Metadata<'_>,
    context: &tracing_subscriber::layer::Context<'_, S>,
) -> bool
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    !metadata.is_span() || metadata.name() == "rpc" || context.lookup_current().is_some()
}

/// The JSON log line, with `trace_id` and `span_id` as top-level fields for
/// every event inside a span (the current span's: a request's span, or a
/// database call's inside it). The ids are looked up only when a line is
/// written, so a request that logs nothing pays nothing for them.
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
        // The current span's OpenTelemetry context, started now if nothing
        // needed it before; the span exported later carries the same ids.
        let current = tracing::Span::current();
        let ids = match current.is_none() {
            true => None,
            false => Some(current.context().span().span_context().clone()),
        };
        let Some(ids) = ids.filter(opentelemetry::trace::SpanContext::is_valid) else {
            return self.0.format_event(ctx, writer, event);
        };
        let line = buffered(&self.0, ctx, event)?;
        // The JSON formatter writes one object: put the ids first in it.
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The pretty log line, ending in `rpc=<service>/<method>` when it was
/// logged while serving an RPC that has no span (`spanless`: nothing reads
/// spans, so requests get none; `serve::spans::request_span`). With spans, the
/// request's span names the RPC as usual.
struct NamingRpc<F> {
    format: F,
    spanless: bool,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for NamingRpc<F>
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
        let rpc = self.spanless.then(grpc_api::current_rpc).flatten();
        let Some((service, method)) = rpc else {
            return self.format.format_event(ctx, writer, event);
        };
        let line = buffered(&self.format, ctx, event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(writer, "{line} rpc={service}/{method}")
    }
}

/// `format`'s line for `event`, in a string for a wrapper to rewrite.
fn buffered<S, N, F>(
    format: &F,
    ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
    event: &tracing::Event<'_>,
) -> Result<String, std::fmt::Error>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    let mut line = String::new();
    format.format_event(
        ctx,
        tracing_subscriber::fmt::format::Writer::new(&mut line),
        event,
    )?;
    Ok(line)
}

/// What a metric is, for its TYPE line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metric orderflow exports.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The name on `/metrics`.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its HELP line.
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

/// Every metric the workspace emits, with its description: the one list.
/// `tests/integration/suite.rs` checks that every name a crate emits is
/// here and that each has HELP on `/metrics` from start-up. The process
/// metrics (`process_*`, from metrics-process) describe themselves.
pub const METRICS: &[Metric] = &[
    metric(
        "orderflow_grpc_requests_total",
        Kind::Counter,
        "finished gRPC requests by service, method and status code, including those a layer answered (auth, deadline, shedding, panics)",
    ),
    metric(
        "orderflow_grpc_requests_in_flight",
        Kind::Gauge,
        "gRPC requests in progress by service and method (streams until they end)",
    ),
    metric(
        "orderflow_grpc_request_duration_seconds",
        Kind::Histogram,
        "gRPC request latency in seconds, from the request until its status is known",
    ),
    metric(
        "orderflow_auth_refused_total",
        Kind::Counter,
        "calls refused by auth, by reason (UNAUTHENTICATED, MISSING_SCOPE, RATE_LIMITED)",
    ),
    metric(
        "orderflow_rate_limited_total",
        Kind::Counter,
        "calls refused because their principal was over its rate, by principal",
    ),
    metric(
        "orderflow_jwt_verifications_total",
        Kind::Counter,
        "JWT signatures checked (a token is checked once, then remembered until it expires)",
    ),
    metric(
        "orderflow_credentials_reloads_total",
        Kind::Counter,
        "reloads of the credentials files (SIGHUP or a change), by result (ok, error: the previous set stays)",
    ),
    metric(
        "orderflow_grpc_shed_total",
        Kind::Counter,
        "requests refused at once because a concurrency budget was full (answered RESOURCE_EXHAUSTED)",
    ),
    metric(
        "orderflow_panics_total",
        Kind::Counter,
        "RPC handlers that panicked (answered INTERNAL)",
    ),
    metric(
        "orderflow_cache_hits_total",
        Kind::Counter,
        "order lookups answered from the cache",
    ),
    metric(
        "orderflow_cache_misses_total",
        Kind::Counter,
        "order lookups the cache could not answer",
    ),
    metric(
        "orderflow_cache_coalesced_total",
        Kind::Counter,
        "cache misses that waited for another caller's lookup",
    ),
    metric(
        "orderflow_cache_evictions_total",
        Kind::Counter,
        "cache entries evicted to stay within capacity",
    ),
    metric(
        "orderflow_cache_entries",
        Kind::Gauge,
        "orders held in the cache",
    ),
    metric(
        "orderflow_cache_invalidations_total",
        Kind::Counter,
        "other replicas' order changes applied to this cache (PostgreSQL NOTIFY)",
    ),
    metric(
        "orderflow_cache_listener_up",
        Kind::Gauge,
        "1 while the order change feed (PostgreSQL LISTEN) is up and the cache trusted; 0 when it is down or not used (SQLite)",
    ),
    metric(
        "orderflow_build_info",
        Kind::Gauge,
        "always 1; the version label says which build is running",
    ),
    metric(
        "orderflow_db_pool_connections",
        Kind::Gauge,
        "database connections open in the pool (in use or idle)",
    ),
    metric(
        "orderflow_db_pool_idle_connections",
        Kind::Gauge,
        "database connections idle in the pool",
    ),
    metric(
        "orderflow_db_pool_max_connections",
        Kind::Gauge,
        "the pool's size (--db-pool-size)",
    ),
    metric(
        "orderflow_db_order_read_batches_total",
        Kind::Counter,
        "statements that looked up orders by id for the cache's misses (PostgreSQL; concurrent misses share one)",
    ),
    metric(
        "orderflow_db_order_read_ids_total",
        Kind::Counter,
        "order ids those statements asked for; divided by the batches, the mean batch size",
    ),
    metric(
        "orderflow_events_received_total",
        Kind::Counter,
        "events that reached ingest",
    ),
    metric(
        "orderflow_events_processed_total",
        Kind::Counter,
        "events stored after the pipeline",
    ),
    metric(
        "orderflow_events_filtered_total",
        Kind::Counter,
        "events a pipeline filter dropped",
    ),
    metric(
        "orderflow_events_deduplicated_total",
        Kind::Counter,
        "repeated events dropped",
    ),
    metric(
        "orderflow_events_dropped_total",
        Kind::Counter,
        "events shed or lost (overflow policy or both stores down)",
    ),
    metric(
        "orderflow_events_dead_lettered_total",
        Kind::Counter,
        "events written to the dead-letter store",
    ),
    metric(
        "orderflow_queue_depth",
        Kind::Gauge,
        "events waiting in the ingest queues",
    ),
    metric(
        "orderflow_queue_capacity",
        Kind::Gauge,
        "total capacity of the ingest queues",
    ),
    metric(
        "orderflow_events_in_flight",
        Kind::Gauge,
        "accepted events not yet settled",
    ),
    metric(
        "orderflow_log_backlog",
        Kind::Gauge,
        "events acknowledged (durable in the event log) and not yet processed",
    ),
    metric(
        "orderflow_log_pipeline_seconds",
        Kind::Histogram,
        "time the event log's consumer spent running the pipeline over the batches of one commit",
    ),
    metric(
        "orderflow_log_commit_seconds",
        Kind::Histogram,
        "time from an event log commit's first attempt until it landed (outputs, cursor and log rows in one transaction), repeats included",
    ),
    metric(
        "orderflow_log_damaged_records_total",
        Kind::Counter,
        "event log records that could not be decoded, kept aside (damaged_log_rows) so the log moves on",
    ),
    metric(
        "orderflow_events_expired_total",
        Kind::Counter,
        "stored events removed by retention (ORDERFLOW_EVENT_RETENTION)",
    ),
    metric(
        "orderflow_event_retention_seconds",
        Kind::Gauge,
        "how long stored events are kept (ORDERFLOW_EVENT_RETENTION; 0: off)",
    ),
    metric(
        "orderflow_event_store_oldest_age_seconds",
        Kind::Gauge,
        "age of the oldest stored event, read after each retention round",
    ),
    metric(
        "orderflow_storage_full_total",
        Kind::Counter,
        "writes refused because the database is out of space (STORAGE_FULL)",
    ),
    metric(
        "orderflow_subscription_unreadable_events_total",
        Kind::Counter,
        "stored events a subscription skipped because they no longer parse",
    ),
    metric(
        "orderflow_serving",
        Kind::Gauge,
        "1 while health reports SERVING, else 0",
    ),
    metric(
        "orderflow_database_up",
        Kind::Gauge,
        "1 while the database answers through the pool, else 0",
    ),
    metric(
        "orderflow_runtime_stalls_total",
        Kind::Counter,
        "stalls of the async runtime or one of its workers longer than ORDERFLOW_STALL_TIMEOUT",
    ),
    metric(
        "orderflow_runtime_stalled",
        Kind::Gauge,
        "1 while the async runtime is stalled (liveness NOT_SERVING), else 0",
    ),
    metric(
        "orderflow_runtime_busy_ratio",
        Kind::Gauge,
        "share of the runtime workers' time spent running tasks over the last second, 0 to 1",
    ),
    metric(
        "orderflow_runtime_scheduling_delay_seconds",
        Kind::Gauge,
        "mean time from a wake-up to the poll of the runtime's heartbeat task over the last second",
    ),
    metric(
        "orderflow_runtime_workers",
        Kind::Gauge,
        "worker threads of the async runtime",
    ),
    metric(
        "orderflow_runtime_global_queue_depth",
        Kind::Gauge,
        "tasks waiting in the runtime's global queue",
    ),
    metric(
        "orderflow_runtime_alive_tasks",
        Kind::Gauge,
        "tasks alive on the async runtime",
    ),
];

/// How often the process metrics are sampled.
const PROCESS_METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the Prometheus listener, describes every metric in [`METRICS`]
/// and gives each a series from the start (at zero; per method for the RPC
/// metrics), so `/metrics` carries every HELP and TYPE line before the
/// first request and alerts can `rate()` from zero. Samples the process
/// metrics (CPU, memory, file descriptors, threads, start time) every
/// second. Call inside the runtime.
pub fn metrics(listen: SocketAddr) -> anyhow::Result<()> {
    const LATENCY_BUCKETS: [f64; 14] = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5,
    ];
    // A log commit takes up to 64 batches, never more than the backlog
    // (100,000 events by default): milliseconds to seconds.
    const LOG_BUCKETS: [f64; 13] = [
        0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(
            Matcher::Full("orderflow_grpc_request_duration_seconds".to_owned()),
            &LATENCY_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .set_buckets_for_metric(Matcher::Prefix("orderflow_log_".to_owned()), &LOG_BUCKETS)
        .context("invalid histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
    for metric in METRICS {
        let (name, help) = (metric.name, metric.help);
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
    for metric in METRICS {
        match metric.name {
            "orderflow_grpc_requests_total"
            | "orderflow_grpc_requests_in_flight"
            | "orderflow_grpc_request_duration_seconds"
            | "orderflow_build_info" => {}
            name => match metric.kind {
                Kind::Counter => metrics::counter!(name).increment(0),
                Kind::Gauge => metrics::gauge!(name).increment(0.0),
                Kind::Histogram => {
                    let _ = metrics::histogram!(name);
                }
            },
        }
    }
    for grpc_api::Rpc {
        service, method, ..
    } in grpc_api::RPCS
    {
        metrics::counter!("orderflow_grpc_requests_total", "service" => service, "method" => method, "code" => "OK").increment(0);
        metrics::gauge!("orderflow_grpc_requests_in_flight", "service" => service, "method" => method).increment(0.0);
        let _ = metrics::histogram!("orderflow_grpc_request_duration_seconds", "service" => service, "method" => method);
    }
    metrics::gauge!("orderflow_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROCESS_METRICS_INTERVAL);
        loop {
            tick.tick().await;
            process.collect();
        }
    });
    Ok(())
}
