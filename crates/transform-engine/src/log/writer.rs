//! The log writer: group commit. Appends whatever waits in its queue in one
//! call per round and answers each submitter.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::bound::{Bound, Share};
use super::handoff;
use super::{Appended, EventLog, LogBatch};
use crate::engine::Draining;
use crate::sink::{SinkError, SinkErrorKind};
use crate::stats::Counters;

/// Batches the writer's queue holds (a second fence behind the bound).
pub(super) const QUEUE: usize = 1_024;
/// Most batches appended in one call.
const GROUP: usize = 256;

/// The answer to one batch.
pub(super) type Reply = Result<Appended, SinkError>;

/// A batch in the writer's queue, with its share of the bound and where its
/// answer goes (nowhere, if its caller gave up).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(super) batch: LogBatch,
    pub(super) share: Share,
    pub(super) reply: oneshot::Sender<Reply>,
}

pub(super) struct Writer<L> {
    pub(super) log: Arc<L>,
    pub(super) bound: Arc<Bound>,
    pub(super) counters: Arc<Counters>,
    pub(super) handoff: Arc<handoff::Shared>,
}

impl<L: EventLog> Writer<L> {
    /// Appends until the queue is closed and empty. On shutdown (or when the
    /// engine is gone) it stops taking batches and appends, and answers,
    /// those already queued.
    pub(super) async fn run(self, queue: mpsc::Receiver<Queued>, stop: watch::Receiver<bool>) {
        let mut waiting = Vec::with_capacity(GROUP);
        let mut queue = Draining::new(queue, stop);
        while queue.next(&mut waiting, GROUP).await {
            self.append(waiting.drain(..)).await;
        }
        tracing::debug!("event log writer drained");
    }

    async fn append(&self, group: impl ExactSizeIterator<Item = Queued> + Send) {
        let owned = self.bound.owned();
        let mut batches = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut shares = Vec::with_capacity(group.len());
        for queued in group {
            batches.push(queued.batch);
            replies.push(queued.reply);
            shares.push(queued.share);
        }
        // Counted, and on an owned log moved into the backlog, before the
        // append commits: the consumer may read the rows the moment they
        // commit, and must never settle an event the counters have not seen
        // nor free permits the backlog does not hold. What does not join the
        // log leaves again below.
        let offered: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        self.counters.admit_many(offered);
        if owned {
            shares.drain(..).for_each(Share::enter_backlog);
        }
        match self.log.append(&batches).await {
            Ok(outcomes) => {
                let mut left = 0u64;
                let mut handed = Vec::new();
                for ((batch, reply), outcome) in batches.into_iter().zip(replies).zip(outcomes) {
                    let n = batch.events.len() as u64;
                    match outcome {
                        Appended::Duplicate | Appended::Gap { .. } => left += n,
                        Appended::New { position } if owned => {
                            handed.push((position, batch.events));
                        }
                        Appended::New { .. } => self.bound.count_appended(n),
                    }
                    let _ = reply.send(Ok(outcome));
                }
                self.leave(left);
                if !handed.is_empty() {
                    let mut handoff = self.handoff.lock();
                    for (position, events) in handed {
                        handoff.offer(position, events);
                    }
                }
                self.handoff.appended.notify_one();
            }
            Err(error) => {
                let unknown = owned && error.kind == SinkErrorKind::OutcomeUnknown;
                if !unknown {
                    self.leave(offered);
                }
                self.handoff.lock().lose_track();
                tracing::warn!(%error, batches = batches.len(), "event log append failed; no batch of the group was acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                if unknown {
                    // Some rows of the group may be in the log: the events
                    // stay counted, and the consumer recounts the backlog
                    // from the log before anything else is appended.
                    tracing::warn!(%error, events = offered, "event log append outcome unknown; recounting the backlog from the log");
                    self.handoff.resync().await;
                }
            }
        }
        // On a shared log the permits bound appends in flight: back now.
        drop(shares);
    }

    /// `n` admitted events did not join the log (duplicates, gaps, a failed
    /// append): as if never received, and their room is free again.
    fn leave(&self, n: u64) {
        if n > 0 {
            self.counters.retract(n);
            if self.bound.owned() {
                self.bound.leave(n);
            }
        }
    }
}
