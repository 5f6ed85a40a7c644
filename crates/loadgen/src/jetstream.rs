//! `--workload jetstream-baseline`: JetStream alone, as orderflow's event
//! log uses it, so acknowledged ingest on the JetStream log can be read as
//! a ratio to the broker's own rate in the same run.
//!
//! One publisher keeps `window` messages awaiting JetStream's publish
//! acknowledgement, each `batch` events as JSON lines with a
//! `Nats-Msg-Id`, into a work-queue stream of its own; one pull consumer
//! fetches and acknowledges them meanwhile. The stream is deleted after.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use tokio_stream::StreamExt as _;

/// What a baseline run did.
pub struct Report {
    /// Events in acknowledged messages.
    pub events: u64,
    /// Events in messages the consumer acknowledged.
    pub consumed: u64,
    /// How long publishing ran.
    pub seconds: f64,
    /// Payload bytes per event.
    pub bytes_per_event: u64,
}

/// `batch` events as the log stores them: JSON lines of the shape
/// orderflow's canonical encoding writes.
fn payload(message: u64, batch: usize) -> bytes::Bytes {
    let mut body = String::new();
    for n in 0..batch {
        let _ = writeln!(
            body,
            r#"{{"event_id":"baseline-{message}-{n}","user_id":"u-{}","action":"purchase","occurred_at":"2026-11-27T00:00:00.000000Z","amount_cents":100,"attributes":{{"channel":"web"}}}}"#,
            n % 97
        );
    }
    body.into()
}

/// Deletes `stream` (it may not exist).
pub async fn delete_stream(url: &str, stream: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let _ = jetstream::new(client).delete_stream(stream).await;
    Ok(())
}

/// Runs the baseline for `duration`.
pub async fn baseline(
    url: &str,
    batch: usize,
    window: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let context = jetstream::new(client);
    let name = format!(
        "LOADGEN_BASELINE_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let subject = format!("loadgen.baseline.{name}");
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("cannot create the baseline stream")?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "baseline",
            jetstream::consumer::pull::Config {
                durable_name: Some("baseline".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .context("cannot create the baseline consumer")?;

    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let consuming = {
        let (stop, consumed) = (Arc::clone(&stop), Arc::clone(&consumed));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut messages) = consumer
                    .fetch()
                    .max_messages(64)
                    .expires(Duration::from_millis(100))
                    .messages()
                    .await
                else {
                    continue;
                };
                while let Some(Ok(message)) = messages.next().await {
                    if message.ack().await.is_ok() {
                        consumed.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let window = window.max(1);
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    let mut acknowledged = 0u64;
    let mut sent = 0u64;
    let mut bytes = 0u64;
    while started.elapsed() < duration {
        let body = payload(sent, batch);
        bytes += body.len() as u64;
        let message = PublishMessage::build()
            .payload(body)
            .message_id(format!("baseline/{sent}"));
        in_flight.push_back(context.send_publish(subject.clone(), message).await?);
        sent += 1;
        if in_flight.len() >= window
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await.context("a publish was not acknowledged")?;
            acknowledged += 1;
        }
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await.context("a publish was not acknowledged")?;
        acknowledged += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = consuming.await;
    let _ = context.delete_stream(&name).await;
    let events = acknowledged * batch as u64;
    Ok(Report {
        events,
        consumed: consumed.load(Ordering::Relaxed),
        seconds,
        bytes_per_event: bytes / (sent * batch as u64).max(1),
    })
}
