//! Point reads folded into batches: concurrent lookups by key that arrive
//! while a batch is in flight are answered together by the next one, one
//! statement for many keys.
//!
//! Nothing waits to fill a batch: a lookup finding a free slot (fewer than
//! `limit` batches in flight) starts one at once with whatever is queued,
//! so a lone lookup costs what it did unbatched. Under load the queue fills
//! while the database works, and each statement then carries many keys:
//! fewer round trips, fewer system calls and less work per key on both
//! sides. (Crates such as `dataloader` batch by waiting a moment or yielding
//! a number of times first, which adds latency at low load; this needs
//! neither.)
//!
//! A lookup is only ever answered by a batch taken from the queue after it
//! joined, so by a statement that began after it was asked: it sees every
//! write committed before the call, as an unbatched read would.
//!
//! Each batch runs on its own task, so a caller that gives up (a client
//! deadline) cancels only its own wait, never the statement others share.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::StorageError;

/// What one batch answers for each key it was asked: `None` for a key with
/// no value; an error for the whole batch fails every caller in it.
pub(crate) type Answers<K, V> = Result<HashMap<K, V>, StorageError>;

/// Lookups by `K` folded into batches of at most `max_keys` keys, with at
/// most `limit` batches in flight.
pub(crate) struct Batched<K, V> {
    state: Mutex<State<K, V>>,
    limit: usize,
    max_keys: usize,
    /// Batches started, and the distinct keys they asked for.
    batches: AtomicU64,
    keys: AtomicU64,
}

struct State<K, V> {
    queued: Vec<Waiting<K, V>>,
    running: usize,
}

struct Waiting<K, V> {
    key: K,
    reply: oneshot::Sender<Result<Option<V>, StorageError>>,
}

impl<K, V> Batched<K, V>
where
    K: Eq + Hash + Ord + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// At most `limit` batches in flight (at least one), each of at most
    /// `max_keys` keys (at least one).
    pub(crate) fn new(limit: usize, max_keys: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queued: Vec::new(),
                running: 0,
            }),
            limit: limit.max(1),
            max_keys: max_keys.max(1),
            batches: AtomicU64::new(0),
            keys: AtomicU64::new(0),
        }
    }

    /// The value for `key`, from the next batch. `load` answers one batch of
    /// distinct keys; it runs on a batch's own task, and only when this call
    /// starts one (it is dropped otherwise).
    pub(crate) async fn get<L, Fut>(
        self: &Arc<Self>,
        key: K,
        load: L,
    ) -> Result<Option<V>, StorageError>
    where
        L: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Answers<K, V>> + Send,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.queued.push(Waiting { key, reply });
            let start = state.running < self.limit;
            if start {
                state.running += 1;
            }
            start
        };
        if start {
            let batches = Arc::clone(self);
            tokio::spawn(async move {
                let mut running = Running {
                    batches: &batches,
                    released: false,
                };
                while let Some((keys, waiting)) = running.next_batch() {
                    let answers = load(keys).await;
                    answer_all(waiting, answers);
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(StorageError::Internal(
                "a batched read ended without an answer".to_owned(),
            ))
        })
    }
}

impl<K, V> Batched<K, V> {
    /// Batches started so far, and the distinct keys they asked for: with
    /// lookups answered, how many statements they took.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.keys.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        // Held only to queue or take lookups, never across an await.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A batch task's claim on one of the `limit` slots; released when the
/// queue is empty, or when the task ends any other way (a panic in `load`,
/// or the runtime dropping it): then the lookups still queued are failed
/// rather than left waiting for a batch that might never come.
struct Running<'a, K, V> {
    batches: &'a Batched<K, V>,
    released: bool,
}

/// A batch: its distinct keys, sorted, and the lookups waiting on them.
type Batch<K, V> = (Vec<K>, Vec<Waiting<K, V>>);

impl<K: Ord + Clone, V> Running<'_, K, V> {
    /// Takes up to `max_keys` lookups off the queue, oldest first; `None`
    /// (and the slot released) when it is empty.
    fn next_batch(&mut self) -> Option<Batch<K, V>> {
        let mut state = self.batches.lock();
        if state.queued.is_empty() {
            state.running -= 1;
            self.released = true;
            return None;
        }
        let take = state.queued.len().min(self.batches.max_keys);
        let mut waiting: Vec<Waiting<K, V>> = state.queued.drain(..take).collect();
        drop(state);
        waiting.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut keys: Vec<K> = waiting.iter().map(|w| w.key.clone()).collect();
        keys.dedup();
        self.batches.batches.fetch_add(1, Ordering::Relaxed);
        self.batches
            .keys
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        Some((keys, waiting))
    }
}

impl<K, V> Drop for Running<'_, K, V> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let mut state = self.batches.lock();
        state.running -= 1;
        // Another batch task takes what is queued; with none left, dropping
        // their senders answers them with an error.
        if state.running == 0 {
            state.queued.clear();
        }
    }
}

/// Hands each waiting lookup its answer; lookups of one key (sorted next to
/// each other) share it.
fn answer_all<K, V>(waiting: Vec<Waiting<K, V>>, answers: Answers<K, V>)
where
    K: Eq + Hash,
    V: Clone,
{
    let mut values = match answers {
        Ok(values) => values,
        Err(error) => {
            for w in waiting {
                let _ = w.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut waiting = waiting.into_iter().peekable();
    while let Some(w) = waiting.next() {
        let more_of_this_key = waiting.peek().is_some_and(|next| next.key == w.key);
        let value = if more_of_this_key {
            values.get(&w.key).cloned()
        } else {
            values.remove(&w.key)
        };
        // A caller that gave up has dropped its receiver: nothing to do.
        let _ = w.reply.send(Ok(value));
    }
}

#[cfg(test)]
mod tests;
