//! `loadgen`: drives one workload against an orderflow server for a fixed
//! time or request count, with a chosen concurrency over a chosen number of
//! connections, and reports throughput and latency percentiles (human
//! readable, and with `--json` one JSON object for scripts). The baseline
//! workload is `grpc.health.v1.Health/Check`: the framework's floor on the
//! same server.

mod batches;
mod coherence;
mod jetstream;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use orderflow_proto::Client;
use orderflow_proto::proto::{CreateOrderRequest, Event, EventBatch, GetOrderRequest, OrderLine};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// `Health/Check`: the baseline.
    Health,
    /// GetOrder on seeded orders (cached after a warm-up pass).
    GetHit,
    /// GetOrder on seeded orders, no warm-up (run the server with a tiny
    /// cache so lookups reach the database).
    GetMiss,
    /// CreateOrder.
    Create,
    /// PublishEvents streams of `--batch` events.
    Publish,
    /// Unary PublishEvent, one event a call.
    PublishOne,
    /// Unary PublishEventBatch, `--batch` events a call, without a producer
    /// id (so a batch refused for a full backlog needs no sequence care).
    PublishBatch,
    /// A weighted mix of the others, per request (`--mix`).
    Mix,
    /// Acknowledged ingest: a StreamEventBatches stream per worker
    /// (`--concurrency` producers), `--batch` events per batch, `--window`
    /// batches in flight; every ack checked.
    StreamBatches,
    /// Several replicas: writes through `--target`, each timed until every
    /// `--read-targets` replica returns the new version (`--requests`
    /// writes; default 1,000).
    Coherence,
    /// SubscribeEvents: `--concurrency` subscribers, each following the
    /// stored events from `--after` (resuming by itself) for `--duration`,
    /// or until `--requests` events each; reports events/s delivered and
    /// each event's lag from `stored_at` to arrival.
    Subscribe,
    /// No orderflow at all: JetStream itself, publishing `--batch`-event
    /// messages (the event log's encoding and `Nats-Msg-Id`s) with
    /// `--window` acks in flight, while a pull consumer acknowledges them:
    /// the baseline for acknowledged ingest on the JetStream log.
    JetstreamBaseline,
}

/// Parses `get-hit=80,create=10,publish=5,health=5` into (workload, weight).
fn parse_mix(text: &str) -> anyhow::Result<Vec<(Workload, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',') {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("--mix entry {part:?} is not NAME=WEIGHT"))?;
        let workload = Workload::from_str(name.trim(), true)
            .map_err(|e| anyhow::anyhow!("--mix entry {part:?}: {e}"))?;
        anyhow::ensure!(workload != Workload::Mix, "--mix cannot contain mix");
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--mix weight in {part:?}"))?;
        mix.push((workload, weight));
    }
    anyhow::ensure!(
        mix.iter().any(|(_, w)| *w > 0),
        "--mix needs a positive weight"
    );
    Ok(mix)
}

/// What one request does: the workloads, less `mix` (which picks among
/// these per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Health,
    GetOrder,
    Create,
    Publish,
    PublishOne,
    PublishBatch,
}

impl Call {
    /// The call a single workload makes; `None` for `mix`.
    fn of(workload: Workload) -> Option<Self> {
        match workload {
            Workload::Health => Some(Self::Health),
            Workload::GetHit | Workload::GetMiss => Some(Self::GetOrder),
            Workload::Create => Some(Self::Create),
            Workload::Publish => Some(Self::Publish),
            Workload::PublishOne => Some(Self::PublishOne),
            Workload::PublishBatch => Some(Self::PublishBatch),
            Workload::Mix
            | Workload::StreamBatches
            | Workload::Coherence
            | Workload::Subscribe
            | Workload::JetstreamBaseline => None,
        }
    }
}

/// The call for the request numbered `x` under `calls` (weighted; the
/// weights sum to more than zero).
fn pick(calls: &[(Call, u32)], x: usize) -> Call {
    let total: u64 = calls.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut point = (x as u64) % total.max(1);
    for (call, weight) in calls {
        if point < u64::from(*weight) {
            return *call;
        }
        point -= u64::from(*weight);
    }
    Call::Health
}

#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The bearer token or JWT sent with every call (ORDERFLOW_AUTH_TOKEN's,
    /// a principal's, or a JWT).
    #[arg(long)]
    token: Option<String>,
    /// For an `https://` target: the PEM CA that signed the server's
    /// certificate (default: the system's roots).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many requests instead (overrides --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Orders to seed for the get workloads.
    #[arg(long, default_value_t = 10_000)]
    seed_orders: usize,
    /// The mix for `--workload mix`: NAME=WEIGHT pairs.
    #[arg(long, default_value = "get-hit=80,create=10,publish=5,health=5")]
    mix: String,
    /// Events per PublishEvents stream.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// stream-batches: batches sent and not yet acknowledged, per stream.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// stream-batches: after the run, wait for the pipeline to drain and
    /// compare the acknowledged events with `--export-command`'s output.
    #[arg(long)]
    verify: bool,
    /// The shell command that prints the event store's export, for
    /// `--verify` (it inherits this environment, e.g. DATABASE_URL).
    #[arg(long, default_value = "orderflow events export")]
    export_command: String,
    /// Requests per second in all, spread evenly over the workers (each
    /// paced at `--rate / --concurrency`); unset: as fast as they go. For
    /// steady load below capacity, as `scripts/soak.sh` runs.
    #[arg(long)]
    rate: Option<f64>,
    /// coherence: the replicas read after each write (comma-separated
    /// addresses).
    #[arg(long, value_delimiter = ',')]
    read_targets: Vec<String>,
    /// coherence: how long a reader may lag before the run fails.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    bound: Duration,
    /// jetstream-baseline: the NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Delete this JetStream stream on `--nats-url` and exit (benchmarks
    /// clean up the streams their servers created).
    #[arg(long)]
    delete_stream: Option<String>,
    /// Seed `--seed-orders` orders, read them once (so they are cached),
    /// write gRPC-framed request bodies for another load generator into
    /// this directory (`get-order.bin`: GetOrder of the first seeded order;
    /// `health.bin`: Health/Check) and exit: e.g. `h2load -d
    /// DIR/get-order.bin -H 'content-type: application/grpc' -H 'te:
    /// trailers' URL/orderflow.v1.OrderService/GetOrder`.
    #[arg(long)]
    write_bodies: Option<std::path::PathBuf>,
    /// subscribe: the position each subscriber starts after (0: the
    /// oldest event kept).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// subscribe: events per page asked for (0: the server's default).
    #[arg(long, default_value_t = 0)]
    max_page: u32,
    /// subscribe: only these actions (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// subscribe: decode only positions and stored_at (a cheap client,
    /// to tell its limit from the server's); no resume.
    #[arg(long)]
    lean: bool,
    /// Print one JSON summary line instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(stream) = &args.delete_stream {
        return jetstream::delete_stream(&args.nats_url, stream).await;
    }
    if args.workload == Workload::JetstreamBaseline {
        let report =
            jetstream::baseline(&args.nats_url, args.batch, args.window, args.duration).await?;
        let rate = report.events as f64 / report.seconds;
        let consumed = report.consumed as f64 / report.seconds;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": "JetstreamBaseline",
                    "events": report.events,
                    "seconds": report.seconds,
                    "events_per_second": rate,
                    "consumed_per_second": consumed,
                    "bytes_per_event": report.bytes_per_event,
                })
            );
        } else {
            println!(
                "JetStream baseline: {} events acknowledged in {:.1}s = {rate:.0} events/s; consumed {consumed:.0} events/s; {} bytes per event",
                report.events, report.seconds, report.bytes_per_event
            );
        }
        return Ok(());
    }
    let mut channels = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        let channel = client_for(&args, &args.target)?
            .connect()
            .await
            .context("--target")?;
        channels.push(channel);
    }
    if let Some(dir) = &args.write_bodies {
        return write_bodies(&channels, args.seed_orders, dir).await;
    }
    if args.workload == Workload::StreamBatches {
        return run_batches(&args, &channels).await;
    }
    if args.workload == Workload::Coherence {
        return run_coherence(&args, &channels).await;
    }
    if args.workload == Workload::Subscribe {
        return run_subscribers(&args, &channels).await;
    }
    let mix = Arc::new(match args.workload {
        Workload::Mix => parse_mix(&args.mix)?,
        other => vec![(other, 1)],
    });
    let reads = |w: Workload| mix.iter().any(|(m, weight)| *m == w && *weight > 0);
    let ids = match (reads(Workload::GetHit), reads(Workload::GetMiss)) {
        (true, _) => Arc::new(seed(&channels, args.seed_orders, Workload::GetHit).await?),
        (false, true) => Arc::new(seed(&channels, args.seed_orders, Workload::GetMiss).await?),
        _ => Arc::new(Vec::new()),
    };
    let mix: Arc<Vec<(Call, u32)>> = Arc::new(
        mix.iter()
            .filter_map(|(workload, weight)| Some((Call::of(*workload)?, *weight)))
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let progress = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.duration.as_secs())
    };
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency.max(1) {
        let channel = channels
            .get(worker % channels.len())
            .cloned()
            .context("no channel")?;
        let (ids, stop, issued) = (Arc::clone(&ids), Arc::clone(&stop), Arc::clone(&issued));
        let (limit, batch) = (args.requests, args.batch);
        let mix = Arc::clone(&mix);
        let latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
        let pace = match args.rate {
            Some(rate) if rate > 0.0 => Some(Duration::from_secs_f64(
                args.concurrency.max(1) as f64 / rate,
            )),
            _ => None,
        };
        workers.push(tokio::spawn(async move {
            run_worker(
                worker, channel, &mix, &ids, &stop, &issued, limit, batch, latency, pace,
            )
            .await
        }));
    }
    if args.requests.is_none() {
        let deadline = started + args.duration;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
            progress.set_position(started.elapsed().as_secs());
        }
        stop.store(true, Ordering::Relaxed);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut requests, mut errors, mut events) = (0u64, 0u64, 0u64);
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for worker in workers {
        let outcome = worker.await.context("a worker failed")?;
        latency
            .add(&outcome.latency)
            .context("merging histograms")?;
        requests += outcome.requests;
        errors += outcome.errors;
        events += outcome.events;
        for (code, n) in outcome.codes {
            *codes.entry(code).or_default() += n;
        }
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "workload": format!("{:?}", args.workload),
        "concurrency": args.concurrency,
        "connections": args.connections,
        "seconds": seconds,
        "requests": requests,
        "errors": errors,
        "errors_by_code": codes,
        "rps": requests as f64 / seconds,
        "events_per_second": events as f64 / seconds,
        "p50_us": latency.value_at_quantile(0.50),
        "p90_us": latency.value_at_quantile(0.90),
        "p99_us": latency.value_at_quantile(0.99),
        "max_us": latency.max(),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{:?}: {requests} requests ({errors} errors) in {seconds:.1}s = {:.0}/s; latency p50 {} us, p90 {} us, p99 {} us, max {} us",
            args.workload,
            requests as f64 / seconds,
            latency.value_at_quantile(0.50),
            latency.value_at_quantile(0.90),
            latency.value_at_quantile(0.99),
            latency.max()
        );
    }
    anyhow::ensure!(errors == 0 || requests > errors, "every request failed");
    Ok(())
}

/// How to reach `target`: the bearer token, and for `https://` TLS
/// trusting `--tls-ca` (or the system's roots).
fn client_for(args: &Args, target: &str) -> anyhow::Result<orderflow_proto::ClientBuilder> {
    let mut client = Client::builder(target.to_owned());
    if let Some(token) = &args.token {
        client = client.bearer_token(token.clone());
    }
    if let Some(ca) = &args.tls_ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("--tls-ca: cannot read {}", ca.display()))?;
        client = client.tls(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        );
    }
    Ok(client)
}

/// The coherence workload (see `coherence.rs`).
/// `--workload subscribe`: `--concurrency` subscribers over the channels.
async fn run_subscribers(args: &Args, channels: &[Client]) -> anyhow::Result<()> {
    let config = subscribe::Config {
        after: args.after,
        max_page: args.max_page,
        actions: args.actions.clone(),
        events_each: args.requests,
        lean: args.lean,
        token: args.token.clone(),
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut subscribers = Vec::new();
    for n in 0..args.concurrency.max(1) {
        let client = channels
            .get(n % channels.len().max(1))
            .context("no channel")?
            .clone();
        subscribers.push(tokio::spawn(subscribe::follow(
            client,
            config.clone(),
            deadline,
        )));
    }
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let (mut events, mut last) = (0u64, 0u64);
    for subscriber in subscribers {
        let followed = subscriber.await.context("a subscriber panicked")??;
        events += followed.events;
        last = last.max(followed.last_position);
        lag.add(&followed.lag).context("merging histograms")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "workload": "Subscribe",
        "subscribers": args.concurrency.max(1),
        "seconds": seconds,
        "events": events,
        "events_per_second": events as f64 / seconds,
        "last_position": last,
        "lag_p50_us": lag.value_at_quantile(0.50),
        "lag_p99_us": lag.value_at_quantile(0.99),
        "lag_max_us": lag.max(),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "Subscribe: {events} events to {} subscribers in {seconds:.1}s = {:.0} events/s; lag from stored_at p50 {} us, p99 {} us",
            args.concurrency.max(1),
            events as f64 / seconds,
            lag.value_at_quantile(0.50),
            lag.value_at_quantile(0.99),
        );
    }
    Ok(())
}

async fn run_coherence(args: &Args, writers: &[Client]) -> anyhow::Result<()> {
    let writer = writers.first().context("no connection")?;
    let mut readers = Vec::with_capacity(args.read_targets.len());
    for target in &args.read_targets {
        readers.push(
            client_for(args, target)?
                .connect()
                .await
                .with_context(|| format!("--read-targets {target}"))?,
        );
    }
    let writes = args.requests.unwrap_or(1_000);
    let report = coherence::run(writer, &readers, writes, args.bound).await?;
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, max) = (
        report.delays.value_at_quantile(0.5),
        report.delays.value_at_quantile(0.99),
        report.delays.max(),
    );
    let read_p50 = report.read_round_trip.value_at_quantile(0.5);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "Coherence",
                "writes": report.writes,
                "readers": readers.len(),
                "delay_p50_ms": ms(p50),
                "delay_p99_ms": ms(p99),
                "delay_max_ms": ms(max),
                "read_p50_ms": ms(read_p50),
            })
        );
    } else {
        println!(
            "Coherence: {} writes, {} readers; acknowledgement to the new version on each reader: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (a read round trip: p50 {:.2} ms)",
            report.writes,
            readers.len(),
            ms(p50),
            ms(p99),
            ms(max),
            ms(read_p50)
        );
    }
    Ok(())
}

/// The stream-batches workload (see `batches.rs`), with the same summary.
async fn run_batches(args: &Args, channels: &[Client]) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.requests.is_none(),
        "stream-batches runs for --duration; --requests does not apply"
    );
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let config = batches::StreamConfig {
        run: run.clone(),
        batch: args.batch,
        window: args.window,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut streams = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let channel = channels
            .get(worker % channels.len())
            .cloned()
            .context("no channel")?;
        let latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
        streams.push(tokio::spawn(batches::stream(
            channel,
            worker,
            config.clone(),
            Arc::clone(&stop),
            latency,
        )));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut acked, mut events, mut errors) = (Vec::new(), 0u64, Vec::new());
    for (worker, stream) in streams.into_iter().enumerate() {
        let outcome = stream.await.context("a stream failed")?;
        latency
            .add(&outcome.latency)
            .context("merging histograms")?;
        acked.push((worker, outcome.acked));
        events += outcome.events;
        errors.extend(outcome.errors);
    }
    let seconds = started.elapsed().as_secs_f64();
    let batches_acked: u64 = acked.iter().map(|(_, n)| n).sum();
    let verified = if args.verify {
        let channel = channels.first().context("no channel")?.clone();
        Some(batches::verify(channel, &run, &acked, args.batch, &args.export_command).await?)
    } else {
        None
    };
    let summary = serde_json::json!({
        "workload": "StreamBatches",
        "streams": args.concurrency,
        "batch": args.batch,
        "window": args.window,
        "seconds": seconds,
        "batches": batches_acked,
        "events": events,
        "errors": errors.len(),
        "events_per_second": events as f64 / seconds,
        "p50_us": latency.value_at_quantile(0.50),
        "p99_us": latency.value_at_quantile(0.99),
        "max_us": latency.max(),
        "verified_events": verified,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "StreamBatches: {events} events in {batches_acked} acknowledged batches in {seconds:.1}s = {:.0} events/s; batch latency p50 {} us, p99 {} us{}",
            events as f64 / seconds,
            latency.value_at_quantile(0.50),
            latency.value_at_quantile(0.99),
            verified.map_or(String::new(), |n| format!(
                "; verified {n} events stored exactly once"
            )),
        );
    }
    if let Some(first) = errors.first() {
        anyhow::bail!("{} ack errors; the first: {first}", errors.len());
    }
    Ok(())
}

/// `--write-bodies`: seeds and warms `n` orders, then writes one framed
/// GetOrder request (the first order) and one framed Health/Check request.
async fn write_bodies(channels: &[Client], n: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let ids = seed(channels, n.max(1), Workload::GetHit).await?;
    let first = ids.first().context("no order was seeded")?;
    std::fs::create_dir_all(dir).with_context(|| format!("--write-bodies {}", dir.display()))?;
    let bodies = [
        (
            "get-order.bin",
            framed(&GetOrderRequest {
                order_id: first.clone(),
            })?,
        ),
        (
            "health.bin",
            framed(&HealthCheckRequest {
                service: String::new(),
            })?,
        ),
    ];
    for (name, body) in bodies {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", dir.display());
    Ok(())
}

/// A gRPC length-prefixed message: no compression, big-endian length.
fn framed(message: &impl prost::Message) -> anyhow::Result<Vec<u8>> {
    let body = message.encode_to_vec();
    let length = u32::try_from(body.len()).context("a request over 4 GiB")?;
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

/// Creates `n` orders (and, for hits, reads each once so it is cached).
async fn seed(channels: &[Client], n: usize, workload: Workload) -> anyhow::Result<Vec<String>> {
    let channel = channels.first().context("no channel")?.clone();
    let mut client = channel.orders();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let order = client
            .create_order(create(i))
            .await
            .context("seeding orders")?
            .into_inner();
        ids.push(order.order_id);
    }
    if workload == Workload::GetHit {
        // A read that fails (a server with injected faults) only leaves
        // that order uncached; too many failures mean a broken server.
        let mut failed = 0usize;
        for id in &ids {
            let read = client
                .get_order(GetOrderRequest {
                    order_id: id.clone(),
                })
                .await;
            if let Err(status) = read {
                failed += 1;
                anyhow::ensure!(
                    failed * 10 <= ids.len(),
                    "warming the cache: {failed} reads failed, the last with {status}"
                );
            }
        }
    }
    Ok(ids)
}

fn create(i: usize) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: format!("load-{}", i % 1_000),
        lines: vec![OrderLine {
            product_id: format!("p-{}", i % 100),
            quantity: 1,
            unit_price_cents: 100,
        }],
        currency: "EUR".to_owned(),
        idempotency_key: String::new(),
    }
}

/// A purchase event with `event_id`; `n` spreads the users.
fn event(event_id: String, n: u64) -> Event {
    Event {
        event_id,
        user_id: format!("u-{}", n % 1_000),
        action: "purchase".to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        amount_cents: Some(100),
        attributes: [("channel".to_owned(), "web".to_owned())].into(),
    }
}

struct Outcome {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
    events: u64,
    /// Failed requests by gRPC code name.
    codes: std::collections::BTreeMap<String, u64>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one worker's whole configuration, spelled out"
)]
async fn run_worker(
    worker: usize,
    channel: Client,
    mix: &[(Call, u32)],
    ids: &[String],
    stop: &AtomicBool,
    issued: &AtomicU64,
    limit: Option<u64>,
    batch: usize,
    latency: Histogram<u64>,
    pace: Option<Duration>,
) -> Outcome {
    let mut outcome = Outcome {
        latency,
        requests: 0,
        errors: 0,
        events: 0,
        codes: std::collections::BTreeMap::new(),
    };
    let mut health = HealthClient::new(channel.channel());
    let mut orders = channel.orders();
    let mut events = channel.events();
    let mut cursor = worker.wrapping_mul(7_919);
    // Missed ticks are skipped: a slow server lowers the rate instead of
    // being hit by a burst afterwards.
    let mut ticker = pace.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    });
    loop {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|limit| n >= limit) {
            break;
        }
        cursor = cursor.wrapping_add(104_729);
        let started = Instant::now();
        // One workload, or a pick from the mix by the request's position.
        let result: Result<(), tonic::Status> = match pick(mix, cursor) {
            Call::Health => health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop),
            Call::GetOrder => match ids.get(cursor % ids.len().max(1)) {
                Some(id) => orders
                    .get_order(GetOrderRequest {
                        order_id: id.clone(),
                    })
                    .await
                    .map(drop),
                None => Err(tonic::Status::failed_precondition("no seeded orders")),
            },
            Call::Create => orders.create_order(create(cursor)).await.map(drop),
            Call::Publish => {
                let stream = tokio_stream::iter((0..batch as u64).map(move |i| {
                    let n = n * batch as u64 + i;
                    event(format!("load-{worker}-{n}"), n)
                }));
                events.publish_events(stream).await.map(|reply| {
                    outcome.events += reply.into_inner().accepted;
                })
            }
            Call::PublishOne => events
                .publish_event(event(format!("load-{worker}-{n}"), n))
                .await
                .map(|reply| outcome.events += u64::from(reply.into_inner().accepted)),
            Call::PublishBatch => events
                .publish_event_batch(EventBatch {
                    producer_id: String::new(),
                    sequence: 1,
                    events: (0..batch as u64)
                        .map(|i| {
                            let n = n * batch as u64 + i;
                            event(format!("load-{worker}-{n}"), n)
                        })
                        .collect(),
                })
                .await
                .map(|reply| outcome.events += reply.into_inner().accepted),
        };
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = outcome.latency.record(micros.min(60_000_000));
        outcome.requests += 1;
        if let Err(status) = result {
            outcome.errors += 1;
            *outcome
                .codes
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
        }
    }
    outcome
}
