//! Overload: a producer outruns the consumer for a while; resident memory is
//! sampled every second. With the default (small) queue it stays flat; with
//! a 100,000-slot queue it grows by the queue's worth of events, which is why
//! the default is small. `scripts/overload-memory.sh` runs both and prints
//! the table in docs/benchmarks.md.
//!
//! Usage: `cargo run --release -p transform-engine --example overload --
//!         [--capacity N] [--seconds S] [--policy P]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an example binary fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain::{Action, DeadLetter, Event, EventId, UserId, WriteId};
use transform_engine::{
    DeadLetterSink, Engine, EngineConfig, EventSink, OverflowPolicy, SinkError, Written,
};

/// A slow store that keeps nothing (so only the engine's memory shows):
/// each write of a batch takes 5 ms.
#[derive(Default)]
struct SlowDiscard {
    written: AtomicU64,
}

impl EventSink for SlowDiscard {
    async fn append(&self, _write: WriteId, events: &[Event]) -> Result<Written, SinkError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.written
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(Written::Stored)
    }
}

impl DeadLetterSink for SlowDiscard {
    async fn dead_letter(
        &self,
        _write: WriteId,
        letters: &[DeadLetter],
    ) -> Result<Written, SinkError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.written
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(Written::Stored)
    }
}

fn resident_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A ~500-byte event, the size the queue's capacity is reasoned on
/// (`EngineConfig::queue_capacity`).
fn event(n: u64) -> Event {
    let mut event = Event::new(
        UserId::parse(format!("u-{}", n % 10_000)).unwrap(),
        Action::Purchase,
    );
    event.event_id = Some(EventId::parse(format!("overload-{n}")).unwrap());
    event.attributes.insert("note", "x".repeat(400));
    event
}

fn main() {
    let mut config = EngineConfig::default();
    let mut seconds = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("every flag takes a value");
        match flag.as_str() {
            "--capacity" => config.queue_capacity = value.parse().expect("--capacity N"),
            "--seconds" => seconds = value.parse().expect("--seconds S"),
            "--policy" => config.policy = value.parse::<OverflowPolicy>().expect("--policy"),
            other => {
                eprintln!("unknown flag {other}; use --capacity, --seconds or --policy");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let sink = Arc::new(SlowDiscard::default());
        let capacity = config.queue_capacity;
        let policy = config.policy;
        let engine = Engine::start(config, Arc::clone(&sink), Arc::clone(&sink));
        let ingest = engine.ingest();
        let start_kb = resident_kb();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let producer = tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let _ = ingest.submit(event(n)).await;
                n += 1;
            }
            n
        });
        let mut peak_kb = start_kb;
        println!("second,rss_kb,queue_depth,received,processed,dropped");
        for second in 1..=seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss = resident_kb();
            peak_kb = peak_kb.max(rss);
            let s = engine.stats();
            println!("{second},{rss},{},{},{},{}", s.queue_depth, s.received, s.processed, s.dropped);
        }
        let produced = producer.await.unwrap();
        let stats = engine.shutdown().await;
        assert!(stats.balanced(), "{stats:?}");
        println!(
            "{{\"capacity\":{capacity},\"policy\":\"{policy}\",\"seconds\":{seconds},\"produced\":{produced},\
             \"rss_start_kb\":{start_kb},\"rss_peak_kb\":{peak_kb},\"rss_end_kb\":{},\"received\":{},\
             \"processed\":{},\"dropped\":{},\"dead_lettered\":{}}}",
            resident_kb(),
            stats.received,
            stats.processed,
            stats.dropped,
            stats.dead_lettered
        );
    });
}
