//! The front door of acknowledged ingest: room in the bound first, then a
//! place in the writer's queue, then the ack.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::bound::{Bound, BoundState};
use super::writer::{Queued, Reply};
use super::{Ack, Appended, LogBatch, LogError};

/// The front door of acknowledged ingest. Cheap to clone.
#[derive(Clone)]
pub struct LogIngest {
    /// To the log writer, which appends what waits here in one go. What it
    /// holds is bounded by the backlog bound (a batch takes its share before
    /// it is queued); the channel's own bound is a second fence.
    queue: mpsc::Sender<Queued>,
    bound: Arc<Bound>,
}

impl LogIngest {
    pub(super) fn new(queue: mpsc::Sender<Queued>, bound: Arc<Bound>) -> Self {
        Self { queue, bound }
    }

    /// Appends `batch` and answers once it is durable. Waits for room in the
    /// backlog up to `wait` (`None`: as long as it takes).
    pub async fn submit(&self, batch: LogBatch, wait: Option<Duration>) -> Result<Ack, LogError> {
        self.enqueue(batch, wait).await?.durable().await
    }

    /// The first half of [`Self::submit`]: waits for room (up to `wait`),
    /// then queues `batch` for the log writer. Batches are appended in the
    /// order they are enqueued, so a stream enqueues one batch after the
    /// other and awaits their acks in that order while reading on.
    ///
    /// Cancelled at any point, it keeps the bound: before the batch is
    /// queued its share goes back; after, the share is the queue's.
    pub async fn enqueue(
        &self,
        batch: LogBatch,
        wait: Option<Duration>,
    ) -> Result<Pending, LogError> {
        self.offer(batch, wait).await.map_err(|(error, _)| error)
    }

    /// [`Self::enqueue`], giving the batch back when it was not queued, so
    /// that a caller can shed its events by an overflow policy when the
    /// backlog stayed full ([`LogError::Full`]).
    pub async fn offer(
        &self,
        batch: LogBatch,
        wait: Option<Duration>,
    ) -> Result<Pending, (LogError, LogBatch)> {
        let events = batch.events.len();
        let Ok(count) = u32::try_from(events) else {
            return Err((LogError::Full(self.backlog()), batch));
        };
        let take = self.bound.take(count);
        let share = match wait {
            None => take.await,
            Some(wait) => match tokio::time::timeout(wait, take).await {
                Ok(share) => share,
                Err(_) => return Err((LogError::Full(self.backlog()), batch)),
            },
        };
        let Some(share) = share else {
            return Err((LogError::ShuttingDown, batch));
        };
        let sequence = batch.producer.as_ref().map(|(_, sequence)| *sequence);
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(queued)) = self
            .queue
            .send(Queued {
                batch,
                share,
                reply,
            })
            .await
        {
            return Err((LogError::ShuttingDown, queued.batch));
        }
        Ok(Pending {
            events: events as u64,
            sequence,
            answer,
        })
    }

    /// Events acknowledged and not yet processed.
    pub fn backlog(&self) -> u64 {
        self.bound.backlog()
    }

    /// The bound on [`Self::backlog`].
    pub fn max_backlog(&self) -> u64 {
        self.bound.max()
    }

    /// Where the bound's permits are now (free, held by batches on their
    /// way, in the backlog).
    pub fn bound(&self) -> BoundState {
        self.bound.state()
    }
}

/// A batch queued for the log: await [`Pending::durable`] for its ack.
/// Dropping it gives up on the answer only; the batch is still appended
/// (its share of the bound travels with it).
#[derive(Debug)]
pub struct Pending {
    events: u64,
    sequence: Option<u64>,
    answer: oneshot::Receiver<Reply>,
}

impl Pending {
    /// Waits until the batch is durable (or refused).
    pub async fn durable(self) -> Result<Ack, LogError> {
        match self.answer.await.map_err(|_| LogError::ShuttingDown)?? {
            Appended::New { .. } => Ok(Ack {
                accepted: self.events,
                duplicate: false,
            }),
            Appended::Duplicate => Ok(Ack {
                accepted: 0,
                duplicate: true,
            }),
            Appended::Gap { expected } => Err(LogError::SequenceGap {
                sequence: self.sequence.unwrap_or_default(),
                expected,
            }),
        }
    }
}
