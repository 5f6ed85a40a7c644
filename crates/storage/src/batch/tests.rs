use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Answers, Batched};
use crate::StorageError;

/// One batch's answers, as [`Loader::load`] returns them.
type BoxedLoad = std::pin::Pin<Box<dyn Future<Output = Answers<u32, u32>> + Send>>;

/// A loader that records every batch it is asked for and holds each one
/// until `gate` lets it through; a key's value is the key times ten, and
/// keys over 100 have no value.
#[derive(Clone)]
struct Loader {
    asked: Arc<Mutex<Vec<Vec<u32>>>>,
    gate: Arc<Semaphore>,
}

impl Loader {
    fn new(open: bool) -> Self {
        Self {
            asked: Arc::default(),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
        }
    }

    fn load(&self) -> impl Fn(Vec<u32>) -> BoxedLoad + Send + 'static {
        let this = self.clone();
        move |keys| {
            let this = this.clone();
            Box::pin(async move {
                this.asked.lock().unwrap().push(keys.clone());
                this.gate.acquire().await.unwrap().forget();
                Ok(keys
                    .into_iter()
                    .filter(|k| *k <= 100)
                    .map(|k| (k, k * 10))
                    .collect::<HashMap<_, _>>())
            })
        }
    }

    /// A lookup of `key` through `batches` with this loader, on a task of
    /// its own.
    fn spawn_get(
        &self,
        batches: &Arc<Batched<u32, u32>>,
        key: u32,
    ) -> tokio::task::JoinHandle<Result<Option<u32>, StorageError>> {
        let (batches, load) = (Arc::clone(batches), self.load());
        tokio::spawn(async move { batches.get(key, load).await })
    }

    fn asked(&self) -> Vec<Vec<u32>> {
        self.asked.lock().unwrap().clone()
    }
}

/// Lets the spawned batch tasks and waiting callers run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_lone_lookup_is_answered_at_once_in_a_batch_of_its_own() {
    let batches = Arc::new(Batched::new(2, 16));
    let loader = Loader::new(true);
    assert_eq!(batches.get(7, loader.load()).await, Ok(Some(70)));
    assert_eq!(batches.get(200, loader.load()).await, Ok(None));
    assert_eq!(loader.asked(), vec![vec![7], vec![200]]);
}

#[tokio::test]
async fn lookups_queued_while_batches_are_in_flight_share_the_next_batch() {
    let batches = Arc::new(Batched::new(1, 16));
    let loader = Loader::new(false);
    let first = loader.spawn_get(&batches, 1);
    settle().await;
    assert_eq!(
        loader.asked(),
        vec![vec![1]],
        "the first lookup starts a batch at once"
    );
    // With the only slot busy, these queue; key 5 twice, and 300 has no value.
    let mut later = Vec::new();
    for key in [9, 5, 3, 5, 300] {
        later.push(loader.spawn_get(&batches, key));
    }
    settle().await;
    assert_eq!(
        loader.asked().len(),
        1,
        "nothing starts while the slot is busy"
    );
    loader.gate.add_permits(2);
    assert_eq!(first.await.unwrap(), Ok(Some(10)));
    let mut answers = Vec::new();
    for call in later {
        answers.push(call.await.unwrap());
    }
    assert_eq!(
        answers,
        vec![
            Ok(Some(90)),
            Ok(Some(50)),
            Ok(Some(30)),
            Ok(Some(50)),
            Ok(None)
        ]
    );
    assert_eq!(
        loader.asked(),
        vec![vec![1], vec![3, 5, 9, 300]],
        "one batch of the distinct keys, sorted"
    );
}

#[tokio::test]
async fn no_more_than_the_limit_of_batches_run_and_each_holds_at_most_max_keys() {
    let batches = Arc::new(Batched::new(2, 3));
    let loader = Loader::new(false);
    let mut calls = Vec::new();
    for key in 0..10 {
        calls.push(loader.spawn_get(&batches, key));
    }
    settle().await;
    assert_eq!(loader.asked().len(), 2, "two slots, two batches");
    loader.gate.add_permits(100);
    for (key, call) in (0..10).zip(calls) {
        assert_eq!(call.await.unwrap(), Ok(Some(key * 10)));
    }
    let asked = loader.asked();
    assert!(asked.iter().all(|batch| batch.len() <= 3), "{asked:?}");
    let mut all: Vec<u32> = asked.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..10).collect::<Vec<_>>(),
        "every key asked exactly once"
    );
}

#[tokio::test]
async fn a_failed_batch_fails_every_lookup_in_it_and_the_next_batch_starts_afresh() {
    let batches = Arc::new(Batched::<u32, u32>::new(1, 16));
    let failing =
        |_keys: Vec<u32>| async { Err(StorageError::Unavailable("connection reset".to_owned())) };
    let (a, b) = tokio::join!(batches.get(1, failing), batches.get(2, failing));
    let down = Err(StorageError::Unavailable("connection reset".to_owned()));
    assert_eq!((a, b), (down.clone(), down));
    let loader = Loader::new(true);
    assert_eq!(batches.get(4, loader.load()).await, Ok(Some(40)));
}

#[tokio::test]
async fn a_panicking_loader_answers_with_an_error_instead_of_leaving_lookups_waiting() {
    let batches = Arc::new(Batched::<u32, u32>::new(1, 16));
    let panicking = |_keys: Vec<u32>| async { panic!("loader bug") };
    let answer = tokio::time::timeout(Duration::from_secs(5), batches.get(1, panicking))
        .await
        .expect("answered, not left waiting");
    assert!(
        matches!(answer, Err(StorageError::Internal(_))),
        "{answer:?}"
    );
    // The slot was given back: later lookups run.
    let loader = Loader::new(true);
    assert_eq!(batches.get(2, loader.load()).await, Ok(Some(20)));
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_cancel_the_batch_it_shares() {
    let batches = Arc::new(Batched::new(1, 16));
    let loader = Loader::new(false);
    let busy = loader.spawn_get(&batches, 1);
    settle().await;
    let quitter = loader.spawn_get(&batches, 2);
    let stayer = loader.spawn_get(&batches, 3);
    settle().await;
    quitter.abort();
    loader.gate.add_permits(2);
    assert_eq!(busy.await.unwrap(), Ok(Some(10)));
    assert_eq!(stayer.await.unwrap(), Ok(Some(30)));
    assert_eq!(loader.asked(), vec![vec![1], vec![2, 3]]);
}
