//! Command line and environment: every setting is a flag with an
//! environment variable and the contract's default. `orderflow` with no
//! subcommand serves.
//!
//! A default that belongs to a library type is taken from it (the
//! `DEFAULT_*` constants and `Default` impls), so it is defined once; the
//! rest belong to this binary and are defined here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use humantime::Duration;
use storage::{CacheConfig, StoreConfig};
use transform_engine::{EngineConfig, LogConfig, OverflowPolicy};

use crate::nats_log::NatsFormat;
use crate::sinks::Output;

/// orderflow: a gRPC order service with an event-transform pipeline.
#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; serving is the default.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations and exit.
    Migrate {
        /// Only list the applied and pending migrations, changing nothing;
        /// exit 0 only when none is pending (a deploy gate).
        #[arg(long)]
        status: bool,
    },
    /// Write a consistent copy of the SQLite database, while a server runs
    /// and writes (PostgreSQL: use pg_dump or pg_basebackup).
    Backup {
        /// Where the copy goes; must not exist.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Put a backup in place of the SQLite database; refused while a server
    /// holds it. The database it replaces is kept beside it.
    Restore {
        /// The backup (`orderflow backup --to`).
        #[arg(long)]
        from: std::path::PathBuf,
    },
    /// Import or export stored events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect, replay or purge the dead-letter store.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Ask the server at `--listen` whether a health name is SERVING; exit
    /// 0 if so, 1 otherwise (for container HEALTHCHECKs and exec probes).
    Health {
        /// The health name: `readiness` (database and pipeline), `liveness`
        /// (the process), `""`, or a service.
        #[arg(long, default_value = "readiness")]
        service: String,
        /// With TLS on (`--tls-cert`): the CA that signed the server's
        /// certificate (issued for `localhost`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// With mutual TLS on (`--tls-client-ca`): the probe's own
        /// certificate (PEM), from the CA the server trusts for clients.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of `--cert`.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = duration)]
        timeout: Duration,
    },
}

/// Event store tools for operators.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Store JSON-lines events exactly as given (no transforms), in one
    /// transaction; a malformed line aborts with its number and stores nothing.
    Import {
        /// The file to read; `-` for standard input.
        file: String,
    },
    /// Write every stored event to standard output as canonical JSON lines,
    /// in the order stored.
    Export,
    /// Print the stored events after a position as JSON lines, then follow
    /// new ones as they are stored (as `tail -f` does), from the server at
    /// `--server`; resumes by itself if the server restarts.
    Follow {
        /// Start after this position (0: the oldest event kept).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only events with this action (repeat for several).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// The server to follow (default: this configuration's `--listen`,
        /// on loopback). Sends `--client-token` (else `--auth-token`).
        #[arg(long)]
        server: Option<String>,
    },
}

/// Dead-letter tools for operators.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Counts by reason, the reason with the oldest letter first, then the
    /// `--limit` oldest letters themselves.
    List {
        /// How many of the oldest letters to print (0: counts only).
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Send every dead letter back through the pipeline of the server at
    /// `--server`, oldest first, in acknowledged batches: each exactly once,
    /// even if a replay is killed midway and run again. Deletes each batch's
    /// letters once the server has acknowledged it.
    Replay {
        /// The server to replay into (default: this configuration's
        /// `--listen`, on loopback). Sends `--client-token` (else `--auth-token`).
        #[arg(long)]
        server: Option<String>,
        /// Letters per batch (1..=10,000).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
    },
    /// Delete the letters dead-lettered before a time (RFC 3339, e.g.
    /// `2026-12-01T00:00:00Z`), in steps, printing progress.
    Purge {
        /// Delete letters older than this.
        #[arg(long, value_parser = rfc3339)]
        before: chrono::DateTime<chrono::Utc>,
    },
}

fn rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-12-01T00:00:00Z: {e}"))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// All settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// gRPC listen address.
    #[arg(long, env = "ORDERFLOW_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Database: a SQLite file path, or `postgres://…` for PostgreSQL.
    #[arg(long, env = "DATABASE_URL", default_value = "orderflow.db")]
    pub database_url: String,
    /// Prometheus metrics listen address (`GET /metrics`).
    #[arg(
        long,
        env = "ORDERFLOW_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: SocketAddr,
    /// Log format.
    #[arg(
        long,
        env = "ORDERFLOW_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Bearer token required on mutating RPCs and SubscribeEvents; unset
    /// disables auth.
    #[arg(long, env = "ORDERFLOW_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// The bearer token or JWT this binary's client commands send (`health`,
    /// `events follow`, `dead-letters replay`); default: `--auth-token`.
    #[arg(long, env = "ORDERFLOW_CLIENT_TOKEN", hide_env_values = true)]
    pub client_token: Option<String>,
    /// Principals, each with its token's SHA-256, scopes, and optionally a
    /// rate and a client-certificate name (a TOML file; README "Credentials
    /// and scopes"). With it (or `--jwt-jwks`), every RPC but health and
    /// reflection needs a credential holding its scope. Reloaded on SIGHUP
    /// and when it changes.
    #[arg(long, env = "ORDERFLOW_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// A JWK set file: bearer JWTs signed by one of its keys name a
    /// principal (`sub`) and its scopes (`scope`). Reloaded like
    /// `--credentials`.
    #[arg(long, env = "ORDERFLOW_JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,
    /// The only JWT issuer (`iss`) accepted.
    #[arg(long, env = "ORDERFLOW_JWT_ISSUER", requires = "jwt_jwks")]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) a JWT must name.
    #[arg(long, env = "ORDERFLOW_JWT_AUDIENCE", requires = "jwt_jwks")]
    pub jwt_audience: Option<String>,
    /// OTLP trace endpoint (`http://host:4317`, or `https://` for TLS
    /// checked against the system's roots; a bare `host:port` means plain
    /// http); unset disables trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A PEM CA bundle to trust for an `https://` OTLP endpoint instead of
    /// the system's roots.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<PathBuf>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs
    /// `--tls-key`); unset serves plaintext HTTP/2.
    #[arg(long, env = "ORDERFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "ORDERFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS; needs
    /// `--tls-cert`).
    #[arg(long, env = "ORDERFLOW_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Trace `grpc.health.v1.Health` calls too (off: probes every second
    /// would drown the traces that matter).
    #[arg(long, env = "ORDERFLOW_TRACE_HEALTH_CHECKS", default_value_t = false)]
    pub trace_health_checks: bool,
    /// The share of requests traced (0 to 1), parent-based: a request whose
    /// `traceparent` is sampled is always traced and one whose `traceparent`
    /// is not sampled never is; others with this probability. An untraced
    /// request has no span at all (nothing exported, no trace ids in its log
    /// lines) and costs nothing for tracing.
    #[arg(long, env = "ORDERFLOW_TRACE_SAMPLE_RATIO", default_value_t = 1.0, value_parser = ratio)]
    pub trace_sample_ratio: f64,
    /// Service name on exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "orderflow")]
    pub service_name: String,
    /// Where the order cache's change feed (PostgreSQL `LISTEN`) connects,
    /// when not `--database-url`: a pooler in transaction mode (PgBouncer)
    /// cannot hold a `LISTEN`, so point this past it at PostgreSQL itself.
    #[arg(long, env = "ORDERFLOW_CACHE_FEED_URL", hide_env_values = true)]
    pub cache_feed_url: Option<String>,
    /// Where acknowledged batches are logged: `database` (the database
    /// itself; one replica consumes it) or `nats://host:port` (a JetStream
    /// stream all replicas share; see `ORDERFLOW_NATS_STREAM`).
    #[arg(long, env = "ORDERFLOW_EVENT_LOG", default_value = "database", value_parser = event_log)]
    pub event_log: EventLogKind,
    /// How long a process waits at start for the database event log's
    /// consumer lease while another process holds it (PostgreSQL: one
    /// process at a time consumes the database log). Past it, start-up
    /// fails naming the holder. Covers a restart that overlaps the old
    /// process's drain.
    #[arg(long, env = "ORDERFLOW_EVENT_LOG_LEASE_WAIT", default_value = "30s", value_parser = duration)]
    pub event_log_lease_wait: Duration,
    /// The JetStream stream (created if missing) when `--event-log` is NATS;
    /// its subject is `orderflow.events.<stream>`.
    #[arg(
        long,
        env = "ORDERFLOW_NATS_STREAM",
        default_value = "ORDERFLOW_EVENTS"
    )]
    pub nats_stream: String,
    /// Most unconsumed batches the JetStream stream holds; past it, appends
    /// answer UNAVAILABLE.
    #[arg(long, env = "ORDERFLOW_NATS_MAX_BATCHES", default_value_t = 100_000)]
    pub nats_max_batches: i64,
    /// Most bytes the JetStream stream holds (`1GiB`, `512MiB`, or a plain
    /// count of bytes); past it, appends answer UNAVAILABLE. The batch
    /// bound alone lets batches of 1,000 events fill tens of GB.
    #[arg(long, env = "ORDERFLOW_NATS_MAX_BYTES", default_value = "1GiB", value_parser = byte_size)]
    pub nats_max_bytes: i64,
    /// How long a replica may hold a pulled batch unacknowledged before
    /// JetStream gives it to another (a replica that died mid-batch is
    /// replaced after this). Applies when the consumer is created.
    #[arg(long, env = "ORDERFLOW_NATS_ACK_WAIT", default_value = "10s", value_parser = duration)]
    pub nats_ack_wait: Duration,
    /// How long JetStream remembers a batch's `Nats-Msg-Id` to answer a
    /// retry as a duplicate by itself. Retries after it are still answered
    /// duplicate (the producers' records in the database decide), so this
    /// only trades memory in NATS for round trips. Applies when the stream
    /// is created.
    #[arg(long, env = "ORDERFLOW_NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = duration)]
    pub nats_duplicate_window: Duration,
    /// How this replica writes batches to the stream: `json` (every
    /// release reads it) or `binary` (a third of the bytes; set it once
    /// every replica reads it). Each replica reads both.
    #[arg(long, env = "ORDERFLOW_NATS_LOG_FORMAT", value_enum, default_value_t = NatsFormat::default())]
    pub nats_log_format: NatsFormat,
    /// How long stored events are kept: a duration (`7d`, `12h`), or `off`
    /// to keep every event. Older ones are removed in the background, in
    /// bounded steps, oldest position first.
    #[arg(long, env = "ORDERFLOW_EVENT_RETENTION", default_value = "7d", value_parser = retention)]
    pub event_retention: Retention,
    /// Orders kept in the cache.
    #[arg(long, env = "ORDERFLOW_CACHE_CAPACITY", default_value_t = CacheConfig::DEFAULT_CAPACITY)]
    pub cache_capacity: usize,
    /// How long a cached order is served before it is refetched.
    #[arg(long, env = "ORDERFLOW_CACHE_TTL", default_value_t = CacheConfig::DEFAULT_TTL.into(), value_parser = duration)]
    pub cache_ttl: Duration,
    /// Events the ingest queues hold in total.
    #[arg(long, env = "ORDERFLOW_QUEUE_CAPACITY", default_value_t = EngineConfig::DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// What ingest does when the queue is full: block, block-timeout:MS,
    /// drop-newest or dead-letter.
    #[arg(long, env = "ORDERFLOW_OVERFLOW_POLICY", default_value_t = OverflowPolicy::default())]
    pub overflow_policy: OverflowPolicy,
    /// Most events acknowledged (durable in the event log) but not yet
    /// processed; at the bound, StreamEventBatches stops reading and
    /// PublishEventBatch waits as the overflow policy lets it, then answers
    /// RESOURCE_EXHAUSTED. At least 10,000 (one whole batch).
    #[arg(long, env = "ORDERFLOW_LOG_MAX_BACKLOG", default_value_t = LogConfig::DEFAULT_MAX_BACKLOG)]
    pub log_max_backlog: usize,
    /// Where processed events go: `database` (the event store) or
    /// `blackhole` (counted, then discarded: for measuring the front end).
    #[arg(long, env = "ORDERFLOW_EVENT_SINK", value_enum, default_value_t = Output::default())]
    pub event_sink: Output,
    /// Pipeline workers.
    #[arg(long, env = "ORDERFLOW_WORKERS", default_value_t = EngineConfig::DEFAULT_WORKERS)]
    pub workers: usize,
    /// A TOML pipeline file; unset uses the built-in pipeline.
    #[arg(long, env = "ORDERFLOW_PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// Budget for one database operation; a dead database fails calls
    /// within it as UNAVAILABLE.
    #[arg(long, env = "ORDERFLOW_DB_TIMEOUT", default_value_t = StoreConfig::DEFAULT_OPERATION_TIMEOUT.into(), value_parser = duration)]
    pub db_timeout: Duration,
    /// Database connections in the pool (default: 8 on PostgreSQL, 4 on
    /// SQLite). Requests beyond it wait for a connection within the
    /// database budget.
    #[arg(long, env = "ORDERFLOW_DB_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: Option<u32>,
    /// How long start-up retries an unreachable database before giving up.
    #[arg(long, env = "ORDERFLOW_STARTUP_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub startup_timeout: Duration,
    /// After SIGTERM, how long to keep serving while health reports
    /// NOT_SERVING, so load balancers stop routing here before connections
    /// close (set it to the balancer's health-check interval).
    #[arg(long, env = "ORDERFLOW_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// How long shutdown waits for in-flight RPCs and queued events.
    #[arg(long, env = "ORDERFLOW_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Largest accepted request message, in bytes.
    #[arg(long, env = "ORDERFLOW_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest accepted request metadata (all headers, counted as HTTP/2
    /// counts them: name + value + 32 bytes each); larger answers
    /// RESOURCE_EXHAUSTED. HTTP/2 itself refuses 16 times this with HTTP 431.
    #[arg(long, env = "ORDERFLOW_MAX_METADATA_BYTES", default_value_t = grpc_api::MetadataLimitLayer::DEFAULT_MAX_BYTES)]
    pub max_metadata_bytes: usize,
    /// Streaming RPCs open at once (PublishEvents, StreamEventBatches,
    /// Health/Watch, reflection), a budget apart from unary requests so
    /// clients holding streams open cannot starve unary calls.
    #[arg(long, env = "ORDERFLOW_MAX_OPEN_STREAMS", default_value_t = 256)]
    pub max_open_streams: usize,
    /// RPCs one connection may have open at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS): one client connection cannot
    /// take a whole budget.
    #[arg(
        long,
        env = "ORDERFLOW_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 128
    )]
    pub max_streams_per_connection: u32,
    /// A client stream that sends nothing for this long is ended with
    /// DEADLINE_EXCEEDED.
    #[arg(long, env = "ORDERFLOW_STREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub stream_idle_timeout: Duration,
    /// Connections open at once; beyond it the server stops accepting (the
    /// kernel's backlog holds the rest) until one closes.
    #[arg(long, env = "ORDERFLOW_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A new connection must start HTTP/2 (send its first bytes) within
    /// this, or it is closed.
    #[arg(long, env = "ORDERFLOW_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// A connection with no RPC in progress for this long is closed.
    #[arg(long, env = "ORDERFLOW_IDLE_CONNECTION_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub idle_connection_timeout: Duration,
    /// How often the server pings each HTTP/2 connection to find dead
    /// peers.
    #[arg(long, env = "ORDERFLOW_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub http2_keepalive_interval: Duration,
    /// A ping not answered within this closes the connection.
    #[arg(long, env = "ORDERFLOW_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http2_keepalive_timeout: Duration,
    /// Unary requests served at once; beyond it new requests are shed with
    /// RESOURCE_EXHAUSTED instead of queueing.
    #[arg(
        long,
        env = "ORDERFLOW_MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024
    )]
    pub max_concurrent_requests: usize,
    /// How often health checks the database and the pipeline.
    #[arg(long, env = "ORDERFLOW_HEALTH_INTERVAL", default_value = "1s", value_parser = duration)]
    pub health_interval: Duration,
    /// How long the async runtime, or one of its worker threads, may make
    /// no progress before it counts as stalled: an ERROR log, the
    /// `orderflow_runtime_stalls_total` count, and `liveness` NOT_SERVING
    /// until it clears. `off` turns the check off (the runtime metrics stay).
    #[arg(long, env = "ORDERFLOW_STALL_TIMEOUT", default_value = "5s", value_parser = stall_timeout)]
    pub stall_timeout: StallTimeout,
}

impl Settings {
    /// The credential the client commands send: `--client-token`, else
    /// `--auth-token`.
    pub fn client_token(&self) -> Option<&str> {
        self.client_token.as_deref().or(self.auth_token.as_deref())
    }

    /// Whether anything reads the OpenTelemetry span a request builds: the
    /// OTLP exporter, or the JSON log lines' trace and span ids. Without
    /// either, requests get a plain `tracing` span and no OpenTelemetry work.
    pub fn spans_observed(&self) -> bool {
        self.otlp_endpoint.is_some() || self.log_format == LogFormat::Json
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a ratio from 0 to 1, like 0.05")),
    }
}

/// Where acknowledged batches are logged (`--event-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventLogKind {
    /// The database itself; one replica consumes it.
    Database,
    /// A JetStream stream at this `nats://` URL, shared by every replica.
    Nats(String),
}

impl std::fmt::Display for EventLogKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database => f.write_str("database"),
            Self::Nats(url) => f.write_str(url),
        }
    }
}

fn event_log(text: &str) -> Result<EventLogKind, String> {
    if text == "database" {
        Ok(EventLogKind::Database)
    } else if text.starts_with("nats://") {
        Ok(EventLogKind::Nats(text.to_owned()))
    } else {
        Err(format!("{text:?} is neither `database` nor a nats:// URL"))
    }
}

/// How long stored events are kept (`ORDERFLOW_EVENT_RETENTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Every event is kept.
    Off,
    /// Events stored longer ago than this are removed.
    Keep(std::time::Duration),
}

fn retention(text: &str) -> Result<Retention, String> {
    if text == "off" {
        return Ok(Retention::Off);
    }
    let keep = text
        .parse::<Duration>()
        .map_err(|e| format!("{text:?} is neither `off` nor a duration like 7d or 12h: {e}"))?;
    if keep.is_zero() {
        return Err(format!(
            "{text:?} would remove every event as it is stored; use `off` to keep them all"
        ));
    }
    Ok(Retention::Keep(*keep))
}

/// How long a runtime may stall before liveness fails
/// (`ORDERFLOW_STALL_TIMEOUT`); `None` when the check is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallTimeout(pub Option<std::time::Duration>);

fn stall_timeout(text: &str) -> Result<StallTimeout, String> {
    if text == "off" {
        return Ok(StallTimeout(None));
    }
    let timeout = text
        .parse::<Duration>()
        .map_err(|e| format!("{text:?} is neither `off` nor a duration like 5s: {e}"))?;
    if timeout.as_millis() < 100 {
        return Err(format!(
            "{text:?} is shorter than 100ms: a busy runtime would count as stalled; use `off` to turn the check off"
        ));
    }
    Ok(StallTimeout(Some(*timeout)))
}

fn byte_size(text: &str) -> Result<i64, String> {
    let size = text
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{text:?} is not a size like 1GiB or 512MiB: {e}"))?;
    match i64::try_from(size.as_u64()) {
        Ok(0) => Err(format!("{text:?} would hold nothing")),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(format!("{text:?} is too large")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    text.parse::<Duration>()
        .map_err(|e| format!("{text:?} is not a duration like 500ms or 30s: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{EventLogKind, Retention, StallTimeout, event_log, retention, stall_timeout};

    #[test]
    fn stall_timeout_is_a_duration_or_off() {
        assert_eq!(stall_timeout("off"), Ok(StallTimeout(None)));
        assert_eq!(
            stall_timeout("5s"),
            Ok(StallTimeout(Some(std::time::Duration::from_secs(5))))
        );
        assert!(
            stall_timeout("0s")
                .unwrap_err()
                .contains("shorter than 100ms")
        );
        assert!(stall_timeout("soon").unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn retention_is_a_duration_or_off() {
        assert_eq!(retention("off"), Ok(Retention::Off));
        assert_eq!(
            retention("7d"),
            Ok(Retention::Keep(std::time::Duration::from_secs(7 * 86_400)))
        );
        let zero = retention("0s").unwrap_err();
        assert!(zero.contains("`off`"), "{zero}");
        let bad = retention("forever").unwrap_err();
        assert!(bad.contains("\"forever\""), "{bad}");
    }

    #[test]
    fn the_event_log_is_known_when_the_configuration_is_read() {
        assert_eq!(event_log("database"), Ok(EventLogKind::Database));
        assert_eq!(
            event_log("nats://10.0.0.1:4222"),
            Ok(EventLogKind::Nats("nats://10.0.0.1:4222".to_owned()))
        );
        let refused = event_log("redis://x").unwrap_err();
        assert!(refused.contains("\"redis://x\""), "{refused}");
    }
}
