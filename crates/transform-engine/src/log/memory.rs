//! [`MemoryLog`]: the event log kept in memory, for tests and benchmarks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use domain::{DeadLetter, Event};

use super::{Appended, Damage, EventLog, LogBatch, LogRecord, check_sequence};
use crate::sink::{SinkError, SinkErrorKind};

/// An in-memory [`EventLog`] for tests and benchmarks: durable only as long
/// as the process, with the same exactly-once rules as the database log.
#[derive(Debug, Default)]
pub struct MemoryLog {
    state: Mutex<MemoryLogState>,
    /// Refuse (as `Rejected`) this many upcoming commits that carry events.
    refusals: AtomicUsize,
}

#[derive(Debug, Default)]
struct MemoryLogState {
    records: VecDeque<LogRecord>,
    next: i64,
    producers: HashMap<String, u64>,
    cursor: i64,
    events: Vec<Event>,
    letters: Vec<DeadLetter>,
    /// Damaged records kept aside by commits: (position, error).
    damaged: Vec<(i64, String)>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryLogState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The next `n` commits that carry processed events are refused for
    /// good ([`SinkErrorKind::Rejected`]), as a store that rejects the rows.
    pub fn refuse_outputs(&self, n: usize) {
        self.refusals.store(n, Ordering::SeqCst);
    }

    /// Events committed as outputs so far.
    pub fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }

    /// Dead letters committed so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.with(|s| s.letters.clone())
    }

    /// Damages the record at `position`, if the log holds it: reads give
    /// it back undecodable, as a database row with a damaged page.
    pub fn damage(&self, position: i64, error: &str) {
        self.with(|s| {
            if let Some(record) = s.records.iter_mut().find(|r| r.position == position) {
                record.damage = Some(Damage {
                    events: record.events.len() as u64,
                    error: error.to_owned(),
                });
                record.events.clear();
            }
        });
    }

    /// Damaged records kept aside by commits so far: (position, error).
    pub fn damaged(&self) -> Vec<(i64, String)> {
        self.with(|s| s.damaged.clone())
    }
}

impl EventLog for MemoryLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        Ok(self.with(|s| {
            batches
                .iter()
                .map(|batch| {
                    if let Some((producer, sequence)) = &batch.producer {
                        let last = s.producers.get(producer).copied();
                        if let Some(refused) = check_sequence(last, *sequence) {
                            return refused;
                        }
                        s.producers.insert(producer.clone(), *sequence);
                    }
                    s.next += 1;
                    let position = s.next;
                    s.records
                        .push_back(LogRecord::new(position, batch.events.clone()));
                    Appended::New { position }
                })
                .collect()
        }))
    }

    async fn read(&self, after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        Ok(self.with(|s| {
            s.records
                .iter()
                .filter(|r| r.position > after)
                .take(limit as usize)
                .cloned()
                .collect()
        }))
    }

    async fn commit(
        &self,
        after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        damaged: &[(i64, String)],
    ) -> Result<(), SinkError> {
        let refused = !events.is_empty()
            && self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if refused {
            return Err(SinkError {
                message: "memory log told to refuse the outputs".to_owned(),
                kind: SinkErrorKind::Rejected,
            });
        }
        let moved = self.with(|s| {
            if s.cursor >= through {
                return None;
            }
            if s.cursor != after {
                return Some(s.cursor);
            }
            s.events.extend_from_slice(events);
            s.letters.extend_from_slice(letters);
            s.damaged.extend_from_slice(damaged);
            s.cursor = through;
            while s.records.front().is_some_and(|r| r.position <= through) {
                s.records.pop_front();
            }
            None
        });
        match moved {
            None => Ok(()),
            Some(cursor) => Err(SinkError {
                message: format!("the cursor is at {cursor}, not at {after}"),
                kind: SinkErrorKind::Unavailable,
            }),
        }
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        Ok(self.with(|s| s.cursor))
    }

    async fn backlog(&self) -> Result<u64, SinkError> {
        Ok(self.with(|s| {
            s.records
                .iter()
                .filter(|r| r.position > s.cursor)
                .map(LogRecord::event_count)
                .sum()
        }))
    }
}
