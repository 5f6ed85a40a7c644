//! The `stream-batches` workload: one StreamEventBatches stream per worker,
//! each a producer of its own (`loadgen-RUN-WORKER`) sending numbered
//! batches with up to `--window` unacknowledged at once, and checking every
//! ack (in order, the whole batch accepted, never a duplicate). With
//! `--verify`, it then waits for the pipeline to drain and compares what was
//! acknowledged with what `--export-command` prints (the event store's
//! export): every acknowledged event exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use orderflow_proto::Client;
use orderflow_proto::proto::EventBatch;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt as _;

/// One stream's settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The run's id, in every producer id and event id.
    pub run: String,
    /// Events per batch.
    pub batch: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub window: usize,
}

/// What one stream did.
pub struct StreamOutcome {
    /// Batch latency, send to ack, in microseconds.
    pub latency: Histogram<u64>,
    /// Batches acknowledged.
    pub acked: u64,
    /// Events acknowledged.
    pub events: u64,
    /// Acks that broke the rules, or the stream's failure.
    pub errors: Vec<String>,
}

/// Streams batches until `stop`, then waits for the outstanding acks. A
/// stream the server ends with SEQUENCE_GAP (a batch it never stored was
/// skipped) is opened again from the sequence the server expects, as the
/// contract tells producers to.
pub async fn stream(
    channel: Client,
    worker: usize,
    config: StreamConfig,
    stop: Arc<AtomicBool>,
    mut latency: Histogram<u64>,
) -> StreamOutcome {
    let mut outcome = StreamOutcome {
        latency: Histogram::new(3).unwrap_or_else(|_| latency.clone()),
        acked: 0,
        events: 0,
        errors: Vec::new(),
    };
    let mut from = 1;
    while let Some(resume) = attempt(
        &channel,
        worker,
        &config,
        &stop,
        from,
        &mut outcome,
        &mut latency,
    )
    .await
    {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if resume <= from {
            outcome.errors.push(format!(
                "the server expects sequence {resume} and no progress was made"
            ));
            break;
        }
        from = resume;
        outcome.acked = resume - 1;
    }
    outcome.latency = latency;
    outcome
}

/// One stream from sequence `from`; `Some(sequence)` when the server asks
/// for the stream again from there (SEQUENCE_GAP).
async fn attempt(
    channel: &Client,
    worker: usize,
    config: &StreamConfig,
    stop: &Arc<AtomicBool>,
    from: u64,
    outcome: &mut StreamOutcome,
    latency: &mut Histogram<u64>,
) -> Option<u64> {
    let producer_id = format!("loadgen-{}-{worker}", config.run);
    let window = Arc::new(Semaphore::new(config.window.max(1)));
    let (requests, outbound) = mpsc::channel::<EventBatch>(config.window.max(1));
    let sent = Arc::new(std::sync::Mutex::new(VecDeque::<Instant>::new()));
    let sender = {
        let (window, sent, stop, config) = (
            Arc::clone(&window),
            Arc::clone(&sent),
            Arc::clone(stop),
            config.clone(),
        );
        tokio::spawn(async move {
            let mut sequence = from - 1;
            while !stop.load(Ordering::Relaxed) {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                sequence += 1;
                let batch = EventBatch {
                    producer_id: producer_id.clone(),
                    sequence,
                    events: (0..config.batch)
                        .map(|n| {
                            let id = format!("lg{}-{worker}-{sequence}-{n}", config.run);
                            crate::event(id, n as u64)
                        })
                        .collect(),
                };
                sent.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_back(Instant::now());
                if requests.send(batch).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut client = channel.events();
    let mut resume = None;
    match client
        .stream_event_batches(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
    {
        Ok(response) => {
            let mut acks = response.into_inner();
            while let Some(ack) = acks.next().await {
                let ack = match ack {
                    Ok(ack) => ack,
                    Err(status) => {
                        match orderflow_proto::expected_sequence(&status) {
                            Some(expected) if expected >= 1 => resume = Some(expected),
                            _ => outcome.errors.push(format!("stream failed: {status}")),
                        }
                        break;
                    }
                };
                let expected = outcome.acked + 1;
                if ack.sequence != expected || ack.duplicate || ack.accepted != config.batch as u64
                {
                    outcome.errors.push(format!(
                        "ack {ack:?}: expected sequence {expected}, {} accepted, no duplicate",
                        config.batch
                    ));
                }
                outcome.acked = ack.sequence;
                outcome.events += ack.accepted;
                let started = sent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop_front();
                if let Some(started) = started {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = latency.record(micros.clamp(1, 60_000_000));
                }
                window.add_permits(1);
            }
        }
        Err(status) => outcome
            .errors
            .push(format!("cannot open the stream: {status}")),
    }
    sender.abort();
    resume
}

/// Waits until the server has processed every acknowledged event, then
/// runs `export_command` (a shell command printing the event store's
/// export) and checks that each acknowledged event of this run appears
/// exactly once and nothing else of this run does.
pub async fn verify(
    channel: Client,
    run: &str,
    acked: &[(usize, u64)],
    batch: usize,
    export_command: &str,
) -> anyhow::Result<u64> {
    let mut client = channel.events();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = client
            .get_pipeline_stats(())
            .await
            .context("GetPipelineStats")?
            .into_inner();
        if stats.log_backlog == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the backlog did not drain: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = tokio::process::Command::new("sh")
        .args(["-c", export_command])
        .output()
        .await
        .with_context(|| format!("cannot run {export_command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{export_command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("\"event_id\":\"lg{run}-");
    let mut seen: HashMap<String, u32> = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(start) = line.find(&prefix) {
            let id = line
                .get(start + 12..)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default();
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    let mut expected = 0u64;
    for &(worker, last) in acked {
        for sequence in 1..=last {
            for n in 0..batch {
                expected += 1;
                let id = format!("lg{run}-{worker}-{sequence}-{n}");
                match seen.remove(&id) {
                    Some(1) => {}
                    Some(count) => anyhow::bail!("{id} stored {count} times"),
                    None => anyhow::bail!("{id} was acknowledged and is not stored"),
                }
            }
        }
    }
    // What is left was sent but never acknowledged (a stream cut short);
    // it may be stored once, never twice.
    if let Some((id, count)) = seen.iter().find(|(_, count)| **count > 1) {
        anyhow::bail!("{id} stored {count} times");
    }
    Ok(expected)
}
