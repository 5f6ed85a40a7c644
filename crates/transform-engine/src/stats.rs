//! Exact event accounting.
//!
//! At every moment `received = processed + filtered + deduplicated +
//! dropped + dead_lettered + in_flight`. All counts change under one mutex,
//! in the same critical section, so a snapshot is always consistent; the
//! lock is taken once per admitted event and once per settled batch, never
//! across an await. `in_flight` is tracked explicitly (not derived), so the
//! identity is a real check on the bookkeeping.

use std::sync::{Mutex, PoisonError};

/// Counters since start, plus the queue's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Events that reached ingest (accepted or shed).
    pub received: u64,
    /// Events stored after passing every step.
    pub processed: u64,
    /// Events a filter dropped.
    pub filtered: u64,
    /// Repeats dropped by de-duplication.
    pub deduplicated: u64,
    /// Events shed by the overflow policy, or lost because neither store
    /// would take them (logged).
    pub dropped: u64,
    /// Events written to the dead-letter store.
    pub dead_lettered: u64,
    /// Accepted events not yet settled (queued or being processed).
    pub in_flight: u64,
    /// Events waiting in the queue now.
    pub queue_depth: u64,
    /// The queue's total capacity.
    pub queue_capacity: u64,
    /// Events acknowledged (durable in the event log), not yet processed;
    /// they count as in flight.
    pub log_backlog: u64,
}

impl PipelineStats {
    /// Whether the accounting identity holds.
    pub fn balanced(&self) -> bool {
        Some(self.received)
            == self
                .processed
                .checked_add(self.filtered)
                .and_then(|n| n.checked_add(self.deduplicated))
                .and_then(|n| n.checked_add(self.dropped))
                .and_then(|n| n.checked_add(self.dead_lettered))
                .and_then(|n| n.checked_add(self.in_flight))
    }

    /// Publishes the counters through the `metrics` facade under the
    /// contract's names (plus the other outcomes).
    pub fn publish_metrics(&self) {
        metrics::counter!("orderflow_events_received_total").absolute(self.received);
        metrics::counter!("orderflow_events_processed_total").absolute(self.processed);
        metrics::counter!("orderflow_events_filtered_total").absolute(self.filtered);
        metrics::counter!("orderflow_events_deduplicated_total").absolute(self.deduplicated);
        metrics::counter!("orderflow_events_dropped_total").absolute(self.dropped);
        metrics::counter!("orderflow_events_dead_lettered_total").absolute(self.dead_lettered);
        #[allow(
            clippy::cast_precision_loss,
            reason = "gauges are f64; queue sizes are far below 2^53"
        )]
        {
            metrics::gauge!("orderflow_queue_depth").set(self.queue_depth as f64);
            metrics::gauge!("orderflow_queue_capacity").set(self.queue_capacity as f64);
            metrics::gauge!("orderflow_events_in_flight").set(self.in_flight as f64);
            metrics::gauge!("orderflow_log_backlog").set(self.log_backlog as f64);
        }
    }
}

/// How a settled batch ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub processed: u64,
    pub filtered: u64,
    pub deduplicated: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
}

impl Settled {
    fn total(&self) -> u64 {
        self.processed + self.filtered + self.deduplicated + self.dropped + self.dead_lettered
    }
}

impl std::ops::AddAssign for Settled {
    fn add_assign(&mut self, other: Self) {
        self.processed += other.processed;
        self.filtered += other.filtered;
        self.deduplicated += other.deduplicated;
        self.dropped += other.dropped;
        self.dead_lettered += other.dead_lettered;
    }
}

/// The shared counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    counts: Mutex<PipelineStats>,
}

impl Counters {
    fn with<R>(&self, f: impl FnOnce(&mut PipelineStats) -> R) -> R {
        f(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// An event was accepted and is now in flight.
    pub fn admit(&self) {
        self.with(|c| {
            c.received += 1;
            c.in_flight += 1;
        });
    }

    /// `n` events were accepted at once (an acknowledged batch).
    pub fn admit_many(&self, n: u64) {
        self.with(|c| {
            c.received += n;
            c.in_flight += n;
        });
    }

    /// `n` events accepted with [`Self::admit_many`] never entered the
    /// pipeline after all (a refused append): as if never received.
    pub fn retract(&self, n: u64) {
        self.with(|c| {
            c.received = c.received.saturating_sub(n);
            c.in_flight = c.in_flight.saturating_sub(n);
        });
    }

    /// An event was shed on arrival.
    pub fn shed(&self) {
        self.with(|c| {
            c.received += 1;
            c.dropped += 1;
        });
    }

    /// In-flight events reached their outcomes.
    pub fn settle(&self, settled: Settled) {
        self.with(|c| {
            c.in_flight = c.in_flight.saturating_sub(settled.total());
            c.processed += settled.processed;
            c.filtered += settled.filtered;
            c.deduplicated += settled.deduplicated;
            c.dropped += settled.dropped;
            c.dead_lettered += settled.dead_lettered;
        });
    }

    /// A snapshot (queue fields left for the caller).
    pub fn snapshot(&self) -> PipelineStats {
        self.with(|c| *c)
    }
}
