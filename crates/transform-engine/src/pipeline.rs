//! A pipeline: steps in order, run over batches of events.
//!
//! The loop is event-major: each event goes through all steps in place and
//! is moved once. The step-major order (each step over the whole batch, one
//! `match` per step per batch) measured slower, because it moves every
//! surviving event between buffers after every step; the benchmark
//! (`benches/pipeline.rs`) keeps it as a baseline (docs/benchmarks.md).

use std::sync::{Arc, Mutex};

use domain::{DeadLetter, Event};

use crate::steps::{AggregateTable, TransformStep, Verdict};

/// Steps in order, with the labels dead-letter reasons use.
#[derive(Debug)]
pub struct Pipeline {
    steps: Vec<TransformStep>,
    /// `steps[2] (rename)`, one per step.
    labels: Vec<Arc<str>>,
}

/// What became of a batch. Reused across batches; [`Self::clear`] keeps
/// the buffers' capacity.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Events that passed every step, in their original order.
    pub kept: Vec<Event>,
    /// Events a step failed on, with the reason.
    pub dead: Vec<DeadLetter>,
    /// How many a filter dropped.
    pub filtered: u64,
    /// How many were repeats.
    pub deduplicated: u64,
}

impl BatchOutcome {
    /// Empties it for the next batch.
    pub fn clear(&mut self) {
        self.kept.clear();
        self.dead.clear();
        self.filtered = 0;
        self.deduplicated = 0;
    }

    /// Events accounted for: kept + dead + filtered + deduplicated.
    pub fn total(&self) -> u64 {
        self.kept.len() as u64 + self.dead.len() as u64 + self.filtered + self.deduplicated
    }
}

impl Pipeline {
    /// A pipeline of `steps`; labels are derived from position and kind.
    pub fn new(steps: Vec<TransformStep>) -> Self {
        let labels = steps
            .iter()
            .enumerate()
            .map(|(n, step)| Arc::from(format!("steps[{n}] ({})", step.kind())))
            .collect();
        Self { steps, labels }
    }

    /// The steps.
    pub fn steps(&self) -> &[TransformStep] {
        &self.steps
    }

    /// The steps, owned (the benchmark runs them in its baseline loops).
    pub fn into_steps(self) -> Vec<TransformStep> {
        self.steps
    }

    /// Each aggregate step's name and live table.
    pub fn aggregates(&self) -> Vec<(Arc<str>, Arc<Mutex<AggregateTable>>)> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                TransformStep::Aggregate(aggregate) => {
                    Some((Arc::clone(aggregate.name()), aggregate.table()))
                }
                _ => None,
            })
            .collect()
    }

    /// Runs `events` through the pipeline one event at a time, in place:
    /// an event is moved once (into `out.kept`, in bulk) rather than into
    /// and out of each call. Results go to `out`, which is not cleared first.
    pub fn process_batch(&mut self, mut events: Vec<Event>, out: &mut BatchOutcome) {
        let steps = &mut self.steps;
        let labels = &self.labels;
        events.retain_mut(|event| {
            for (step, label) in steps.iter_mut().zip(labels) {
                match step.apply(event) {
                    Verdict::Keep => {}
                    Verdict::Filtered => {
                        out.filtered += 1;
                        return false;
                    }
                    Verdict::Duplicate => {
                        out.deduplicated += 1;
                        return false;
                    }
                    Verdict::Failed(reason) => {
                        // Failures are rare; the copy keeps the common path
                        // move-free.
                        let event = event.clone();
                        out.dead.push(DeadLetter {
                            event,
                            reason: format!("{label}: {reason}"),
                        });
                        return false;
                    }
                }
            }
            true
        });
        if out.kept.is_empty() {
            // The batch's own vector becomes the output: no event moves.
            std::mem::swap(&mut out.kept, &mut events);
        } else {
            out.kept.append(&mut events);
        }
        self.publish();
    }

    /// Makes this batch's aggregate changes visible to readers.
    fn publish(&mut self) {
        for step in &mut self.steps {
            if let TransformStep::Aggregate(aggregate) = step {
                aggregate.publish();
            }
        }
    }
}
