//! A pipeline: steps in order, run over batches of events.
//!
//! Two loop orders are offered because which is faster is a measurement, not
//! a guess (docs/benchmarks.md): event-major
//! ([`Pipeline::process_batch_event_major`], what the engine uses) takes each
//! event through all steps in place; step-major ([`Pipeline::process_batch`])
//! runs each step over the whole batch, matching on the step kind once per
//! batch, but moves every surviving event between buffers after every step,
//! and that copying outweighs the saved dispatch.

use std::sync::{Arc, Mutex};

use domain::{DeadLetter, Event};

use crate::steps::{AggregateTable, TransformStep, Verdict};

/// Steps in order, with the labels dead-letter reasons use.
#[derive(Debug)]
pub struct Pipeline {
    steps: Vec<TransformStep>,
    /// `steps[2] (rename)`, one per step.
    labels: Vec<Arc<str>>,
    /// Reused between steps so a batch moves between two buffers.
    spare: Vec<Event>,
    verdicts: Vec<Verdict>,
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
        Self {
            steps,
            labels,
            spare: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// The steps.
    pub fn steps(&self) -> &[TransformStep] {
        &self.steps
    }

    /// The steps, owned (the dispatch benchmark boxes them as trait objects
    /// to measure the enum against).
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

    /// Runs `events` through every step, step by step; results go to `out`
    /// (which is not cleared first).
    pub fn process_batch(&mut self, mut events: Vec<Event>, out: &mut BatchOutcome) {
        for (step, label) in self.steps.iter_mut().zip(&self.labels) {
            if events.is_empty() {
                break;
            }
            let verdicts = &mut self.verdicts;
            verdicts.clear();
            // The one match per step per batch; each arm's loop is monomorphic.
            match step {
                TransformStep::Enrich(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
                TransformStep::Filter(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
                TransformStep::Rename(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
                TransformStep::Deduplicate(s) => {
                    verdicts.extend(events.iter_mut().map(|e| s.apply(e)))
                }
                TransformStep::Aggregate(s) => {
                    verdicts.extend(events.iter_mut().map(|e| s.apply(e)))
                }
            }
            let survivors = &mut self.spare;
            survivors.clear();
            for (event, verdict) in events.drain(..).zip(verdicts.drain(..)) {
                match verdict {
                    Verdict::Keep => survivors.push(event),
                    other => settle(other, event, label, out),
                }
            }
            std::mem::swap(&mut events, survivors);
        }
        out.kept.append(&mut events);
        self.publish();
        // Hand the emptied buffer back for the next batch.
        if self.spare.capacity() < events.capacity() {
            self.spare = events;
        }
    }

    /// Runs `events` through the pipeline one event at a time, in place:
    /// an event is moved once (into `out.kept`, in bulk) rather than into
    /// and out of each call. (The engine's choice: it measured fastest.)
    pub fn process_batch_event_major(&mut self, mut events: Vec<Event>, out: &mut BatchOutcome) {
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
        out.kept.append(&mut events);
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

/// Records a non-`Keep` verdict.
fn settle(verdict: Verdict, event: Event, label: &str, out: &mut BatchOutcome) {
    match verdict {
        Verdict::Keep => out.kept.push(event),
        Verdict::Filtered => out.filtered += 1,
        Verdict::Duplicate => out.deduplicated += 1,
        Verdict::Failed(reason) => out.dead.push(DeadLetter {
            event,
            reason: format!("{label}: {reason}"),
        }),
    }
}
