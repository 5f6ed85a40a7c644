//! Where the twelve-step pipeline's time goes, step by step: runs the first
//! `k` steps of `test_support::TWELVE_STEPS` for `k` = 0..=12 over the same
//! input as `benches/pipeline.rs` (the legacy events cycled to 10,000, ids
//! unique per round, batches of 64) and prints the best time per event of
//! each prefix and what the `k`th step added.
//!
//! Run: `cargo run --release -p transform-engine --example step_costs`.
//! The marginal figures are noisy (a few ns); run it twice and compare.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a measuring tool that fails loudly and prints its table"
)]

use std::time::{Duration, Instant};

use domain::Event;
use transform_engine::{BatchOutcome, PipelineSpec};

/// The server's allocator (see the `orderflow` binary).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EVENTS: usize = 10_000;
const BATCH: usize = 64;
const ROUNDS: usize = 60;

fn main() {
    let fixture = test_support::legacy_events();
    let steps: Vec<&str> = test_support::TWELVE_STEPS
        .split("[[steps]]")
        .skip(1)
        .collect();
    let mut round = 0;
    let mut previous = 0.0;
    println!("steps  ns/event  added  by");
    for k in 0..=steps.len() {
        let toml = if k == 0 {
            "steps = []".to_owned()
        } else {
            steps
                .iter()
                .take(k)
                .map(|s| format!("[[steps]]{s}"))
                .collect()
        };
        let mut pipeline = PipelineSpec::from_toml(&toml).unwrap().build();
        let mut out = BatchOutcome {
            kept: Vec::with_capacity(EVENTS),
            ..BatchOutcome::default()
        };
        let mut best = Duration::MAX;
        for _ in 0..ROUNDS {
            round += 1;
            let batches = input(round, &fixture);
            out.clear();
            let started = Instant::now();
            for batch in batches {
                pipeline.process_batch(batch, &mut out);
            }
            best = best.min(started.elapsed());
            std::hint::black_box(&out);
        }
        let per_event = best.as_secs_f64() * 1e9 / EVENTS as f64;
        let added = k
            .checked_sub(1)
            .and_then(|n| steps.get(n))
            .map(|step| {
                let lines: Vec<&str> = step
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                lines.join(" ")
            })
            .unwrap_or_default();
        println!(
            "{k:5}  {per_event:8.1}  {:+5.1}  {added}",
            per_event - previous
        );
        previous = per_event;
    }
}

/// The fixture cycled to [`EVENTS`], ids unique per round, in batches.
fn input(round: u64, fixture: &[Event]) -> Vec<Vec<Event>> {
    test_support::with_fresh_ids(fixture, round, EVENTS)
        .chunks(BATCH)
        .map(<[Event]>::to_vec)
        .collect()
}
