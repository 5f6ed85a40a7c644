//! The backlog bound, and who holds each of its permits.
//!
//! One permit per event. A permit is, at every moment, in exactly one place:
//! - **free** (in the semaphore), where submitters take it;
//! - **held** by a batch on its way ([`Share`]): at the front door, in the
//!   writer's queue, in an append;
//! - **in the backlog**: its event is in the log and not yet processed.
//!
//! So, on a log this process owns, free + held + backlog = the bound
//! (plus any [`BoundState::debt`]), except while a submitter is part-way
//! through taking its permits (tokio's semaphore gives a waiter permits as
//! they come back); never more.
//!
//! A [`Share`] moves with its batch, not with the caller: a caller that
//! gives up (a deadline, a dropped stream) after its batch was queued
//! leaves the share in the queue. The writer moves it into the backlog
//! before the append (the consumer may read the rows the moment they
//! commit), or drops it (back to free) when the batch did not join the log.
//! The consumer frees a batch's permits once its outputs are committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bound of one engine's log.
#[derive(Debug)]
pub(crate) struct Bound {
    /// Free permits: room for this many more events. Submitters wait here
    /// in order; at the bound a stream stops reading, a unary call gives up
    /// after its wait.
    free: Arc<Semaphore>,
    /// Permits held by shares: batches on their way to the log.
    held: AtomicU64,
    /// Events in the log and not yet processed (on a shared log: appended
    /// by this process minus processed by it, a gauge only).
    backlog: AtomicU64,
    /// Submitters waiting for permits.
    waiting: AtomicU64,
    /// Backlog found above the bound at start (a restart with a lower
    /// bound): the first permits freed pay it off instead of returning to
    /// the semaphore.
    debt: AtomicU64,
    max: u64,
    /// Whether this process owns the log, so its backlog holds permits. A
    /// shared log bounds its own backlog; the permits bound only this
    /// process's appends in flight.
    owned: bool,
}

/// What [`crate::LogIngest::bound`] reports: where the bound's permits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundState {
    /// The bound.
    pub max: u64,
    /// Permits free now.
    pub free: u64,
    /// Permits held by batches on their way to the log.
    pub held: u64,
    /// Events in the log, not yet processed.
    pub backlog: u64,
    /// Backlog above the bound found at start, still to be paid off.
    pub debt: u64,
    /// Submitters waiting for permits (each may hold some already).
    pub waiting: u64,
}

impl Bound {
    /// A bound of `max` events over a log holding `backlog` unprocessed
    /// events already; `owned`: see [`Bound::owned`].
    pub(crate) fn new(max: u64, backlog: u64, owned: bool) -> Self {
        let (backlog, debt) = if owned {
            (backlog, backlog.saturating_sub(max))
        } else {
            (0, 0)
        };
        let free = max.saturating_sub(backlog);
        Self {
            free: Arc::new(Semaphore::new(
                usize::try_from(free)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            held: AtomicU64::new(0),
            backlog: AtomicU64::new(backlog),
            waiting: AtomicU64::new(0),
            debt: AtomicU64::new(debt),
            max,
            owned,
        }
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    pub(crate) fn state(&self) -> BoundState {
        BoundState {
            max: self.max,
            free: self.free.available_permits() as u64,
            held: self.held.load(Ordering::Relaxed),
            backlog: self.backlog(),
            debt: self.debt.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Waits for room for `events`; `None` if the bound is closed (never,
    /// while the engine lives). Cancel-safe: a caller dropped while waiting
    /// gives back whatever it was given.
    pub(crate) async fn take(self: &Arc<Self>, events: u32) -> Option<Share> {
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let permit = Arc::clone(&self.free)
            .acquire_many_owned(events)
            .await
            .ok()?;
        self.held.fetch_add(u64::from(events), Ordering::Relaxed);
        Some(Share {
            permit: Some(permit),
            bound: Arc::clone(self),
        })
    }

    /// `n` events were appended to a shared log by this process (the gauge
    /// only: the shares hold their permits until the append returns).
    pub(crate) fn count_appended(&self, n: u64) {
        self.backlog.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether this process owns the log (see [`Bound::owned`]).
    pub(crate) fn owned(&self) -> bool {
        self.owned
    }

    /// `n` events left the backlog (processed, or they never joined the log
    /// after all): their permits go back.
    pub(crate) fn leave(&self, n: u64) {
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
        if !self.owned {
            return;
        }
        let mut paid = 0;
        let _ = self
            .debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |debt| {
                paid = debt.min(n);
                Some(debt - paid)
            });
        self.free.add_permits(
            usize::try_from(n - paid)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        );
    }
}

/// A batch's share of the bound: its permits, held from the front door until
/// the batch is in the backlog or known not to join the log. Dropped, the
/// permits are free again.
#[derive(Debug)]
pub(crate) struct Share {
    permit: Option<OwnedSemaphorePermit>,
    bound: Arc<Bound>,
}

impl Share {
    /// The batch is joining a log this process owns: its permits now belong
    /// to the backlog, until [`Bound::leave`] gives them back.
    pub(crate) fn enter_backlog(mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let n = permit.num_permits() as u64;
        self.bound.backlog.fetch_add(n, Ordering::Relaxed);
        self.bound.held.fetch_sub(n, Ordering::Relaxed);
        permit.forget();
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.bound
                .held
                .fetch_sub(permit.num_permits() as u64, Ordering::Relaxed);
        }
    }
}
