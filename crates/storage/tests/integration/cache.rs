//! The order cache against a repository test double. A double is used here
//! only because these tests need a lookup that sleeps, panics or fails on
//! demand; the real repositories are covered by the backend suite (and one
//! test here runs the cache over real SQLite).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{NewOrder, Order, OrderId, OrderStatus, UserId};
use storage::{
    CacheConfig, CachedOrder, CachedOrders, Conflict, Created, FoundOrder, OrderForm, OrderPage,
    OrderRepository, StorageError,
};

use crate::suite::new_order;

/// How a [`FakeRepo`] lookup behaves.
#[derive(Clone, Copy)]
enum Lookup {
    Normal,
    PanicOnce,
    UnavailableOnce,
}

struct FakeRepo {
    orders: Mutex<HashMap<OrderId, Order>>,
    calls: Mutex<HashMap<OrderId, usize>>,
    delay: Duration,
    behaviour: Lookup,
    failed: AtomicUsize,
}

impl FakeRepo {
    fn new(delay: Duration, behaviour: Lookup) -> Self {
        Self {
            orders: Mutex::default(),
            calls: Mutex::default(),
            delay,
            behaviour,
            failed: AtomicUsize::new(0),
        }
    }

    fn seed(&self, n: usize) -> Vec<OrderId> {
        (0..n)
            .map(|i| {
                let order = Order::place(
                    OrderId::generate(),
                    new_order(&format!("u-{i}"), None, &[1]),
                    chrono::Utc::now(),
                );
                let id = order.id();
                self.orders.lock().unwrap().insert(id, order);
                id
            })
            .collect()
    }

    fn calls(&self, id: OrderId) -> usize {
        self.calls.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

impl OrderRepository for FakeRepo {
    type Found = Order;

    async fn find_order(&self, id: OrderId) -> Result<Order, StorageError> {
        *self.calls.lock().unwrap().entry(id).or_default() += 1;
        tokio::time::sleep(self.delay).await;
        let first_failure = self.failed.fetch_add(1, Ordering::SeqCst) == 0;
        match self.behaviour {
            Lookup::PanicOnce if first_failure => panic!("repository exploded"),
            Lookup::UnavailableOnce if first_failure => {
                return Err(StorageError::Unavailable("down".into()));
            }
            _ => {}
        }
        let found = self.orders.lock().unwrap().get(&id).cloned();
        found.ok_or(StorageError::NotFound {
            entity: "order",
            id: id.to_string(),
        })
    }

    async fn create_order(&self, new: NewOrder) -> Result<Created, StorageError> {
        let order = Order::place(OrderId::generate(), new, chrono::Utc::now());
        self.orders
            .lock()
            .unwrap()
            .insert(order.id(), order.clone());
        Ok(Created {
            order,
            created: true,
        })
    }

    async fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> Result<Order, StorageError> {
        let mut orders = self.orders.lock().unwrap();
        let current = orders.get(&id).cloned().ok_or(StorageError::NotFound {
            entity: "order",
            id: id.to_string(),
        })?;
        if current.version() != expected_version {
            return Err(Conflict::StaleVersion {
                id: id.to_string(),
                expected: expected_version,
                actual: current.version(),
            }
            .into());
        }
        let updated = current.with_status(status, chrono::Utc::now())?;
        orders.insert(id, updated.clone());
        Ok(updated)
    }

    async fn list_orders(
        &self,
        _user_id: &UserId,
        _page_size: u32,
        _after: Option<OrderId>,
    ) -> Result<OrderPage, StorageError> {
        Ok(OrderPage {
            orders: vec![],
            next: None,
        })
    }
}

fn cached(delay_ms: u64, behaviour: Lookup) -> (CachedOrders<Arc<FakeRepo>>, Arc<FakeRepo>) {
    let repo = Arc::new(FakeRepo::new(Duration::from_millis(delay_ms), behaviour));
    (
        CachedOrders::new(Arc::clone(&repo), CacheConfig::default()),
        repo,
    )
}

/// The classic cache deadlock (a lock held across the lookup's await), as a
/// regression test: one thread, 1,000 concurrent
/// lookups on five keys against a lookup that awaits. With a lock held
/// across that await this never finishes; here it does, with one lookup per key.
#[test]
fn thousand_concurrent_misses_on_one_thread_finish_with_one_lookup_per_key() {
    // The runtime runs on a thread of its own: a deadlock blocks that thread
    // (no in-runtime timeout could fire), and this thread reports it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            let (cache, repo) = cached(20, Lookup::Normal);
            let ids = repo.seed(5);
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..1_000 {
                let (cache, id) = (cache.clone(), ids[n % ids.len()]);
                tasks.spawn(async move { cache.get_or_fetch(id).await.map(|o| o.id() == id) });
            }
            let all = tasks.join_all().await;
            let calls: Vec<usize> = ids.iter().map(|id| repo.calls(*id)).collect();
            (all, calls, cache.cache().stats())
        });
        let _ = done.send(outcome);
    });
    let (all, calls, stats) = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("1,000 concurrent lookups must finish: a deadlock blocked the runtime");
    assert!(all.into_iter().all(|r| r == Ok(true)));
    assert_eq!(calls, vec![1; 5], "one repository call per key");
    assert_eq!(stats.misses, 1_000);
    assert_eq!(stats.coalesced, 995);
}

/// moka#240: every caller's deadline is shorter than the lookup. The lookup
/// still finishes and fills the cache, so the next caller hits.
#[tokio::test(start_paused = true)]
async fn callers_with_short_deadlines_still_let_the_lookup_fill_the_cache() {
    let (cache, repo) = cached(200, Lookup::Normal);
    let id = repo.seed(1)[0];
    for _ in 0..3 {
        let gave_up = tokio::time::timeout(Duration::from_millis(10), cache.get_or_fetch(id)).await;
        assert!(gave_up.is_err());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        cache.cache().get(&id).is_some(),
        "the abandoned lookup filled the cache"
    );
    assert_eq!(cache.get_or_fetch(id).await.unwrap().id(), id);
    assert_eq!(repo.calls(id), 1);
}

/// The caller that started a lookup is cancelled; those waiting on it are not
/// stranded.
#[tokio::test(start_paused = true)]
async fn cancelling_the_leading_caller_does_not_strand_its_waiters() {
    let (cache, repo) = cached(100, Lookup::Normal);
    let id = repo.seed(1)[0];
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_fetch(id).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_or_fetch(id).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    for waiter in waiters {
        let order = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter must not hang")
            .unwrap()
            .unwrap();
        assert_eq!(order.id(), id);
    }
    assert_eq!(repo.calls(id), 1);
}

/// A panicking lookup reaches the caller that started it; its waiters get an
/// error instead of hanging; the next call for the key works.
#[tokio::test(start_paused = true)]
async fn a_panicking_lookup_reaches_only_its_caller_and_the_key_recovers() {
    let (cache, repo) = cached(50, Lookup::PanicOnce);
    let id = repo.seed(1)[0];
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_fetch(id).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_fetch(id).await })
    };
    let leader = leader.await.unwrap_err();
    assert!(
        leader.is_panic(),
        "the panic unwinds into the leading caller"
    );
    let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter must not hang")
        .expect("the waiter itself does not panic");
    assert!(
        matches!(waited, Err(StorageError::Internal(_))),
        "{waited:?}"
    );
    assert_eq!(cache.get_or_fetch(id).await.unwrap().id(), id);
    assert_eq!(repo.calls(id), 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let (cache, repo) = cached(0, Lookup::UnavailableOnce);
    let id = repo.seed(1)[0];
    assert!(matches!(
        cache.get_or_fetch(id).await,
        Err(StorageError::Unavailable(_))
    ));
    assert_eq!(cache.get_or_fetch(id).await.unwrap().id(), id);
    let missing = OrderId::generate();
    assert!(matches!(
        cache.get_or_fetch(missing).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(cache.get_or_fetch(missing).await.is_err());
    assert_eq!(repo.calls(id), 2);
    assert_eq!(repo.calls(missing), 2);
}

#[tokio::test(start_paused = true)]
async fn writes_through_the_cache_are_read_back_without_a_lookup() {
    let (cache, repo) = cached(0, Lookup::Normal);
    let created = cache
        .create_order(new_order("u-w", None, &[5]))
        .await
        .unwrap()
        .order;
    assert_eq!(*cache.find_order(created.id()).await.unwrap(), created);
    let paid = cache
        .update_status(created.id(), OrderStatus::Paid, 1)
        .await
        .unwrap();
    assert_eq!(*cache.find_order(created.id()).await.unwrap(), paid);
    assert_eq!(repo.calls(created.id()), 0, "both reads were hits");

    // Another writer moves the order on behind this cache's back; our stale
    // update fails and drops the stale copy, so the next read refetches.
    repo.update_status(created.id(), OrderStatus::Shipped, 2)
        .await
        .unwrap();
    let stale = cache
        .update_status(created.id(), OrderStatus::Cancelled, 2)
        .await;
    assert!(matches!(stale, Err(StorageError::Conflict(_))));
    assert_eq!(
        cache.find_order(created.id()).await.unwrap().status(),
        OrderStatus::Shipped
    );
    assert_eq!(repo.calls(created.id()), 1);
}

/// A derived form that counts how often it is computed.
#[derive(Clone, Debug, PartialEq)]
struct Described(String);

static DESCRIBED: AtomicUsize = AtomicUsize::new(0);

impl OrderForm for Described {
    fn of(order: &Order) -> Self {
        DESCRIBED.fetch_add(1, Ordering::SeqCst);
        Self(format!(
            "{} v{} {:?}",
            order.id(),
            order.version(),
            order.status()
        ))
    }
}

/// Another form, asked of the same snapshot after the first.
#[derive(Clone, Debug, PartialEq)]
struct Version(u64);

impl OrderForm for Version {
    fn of(order: &Order) -> Self {
        Self(order.version())
    }
}

/// A hit hands out the form its snapshot computed on first use; a change to
/// the order replaces the snapshot, and with it the form.
#[tokio::test]
async fn a_snapshot_computes_its_form_once_and_a_change_replaces_it() {
    let (cache, _repo) = cached(0, Lookup::Normal);
    let created = cache
        .create_order(new_order("u-form", None, &[5]))
        .await
        .unwrap()
        .order;
    let before = DESCRIBED.load(Ordering::SeqCst);
    let first: Described = cache.find_order(created.id()).await.unwrap().form();
    let again: Described = cache.find_order(created.id()).await.unwrap().form();
    assert_eq!(first, again);
    assert_eq!(
        DESCRIBED.load(Ordering::SeqCst) - before,
        1,
        "computed once"
    );
    // A second kind of form is still right, just not kept.
    let version: Version = cache.find_order(created.id()).await.unwrap().form();
    assert_eq!(version, Version(1));

    let paid = cache
        .update_status(created.id(), OrderStatus::Paid, 1)
        .await
        .unwrap();
    let after: Described = cache.find_order(created.id()).await.unwrap().form();
    assert_eq!(after, Described::of(&paid));
    assert_ne!(after, first);
    // A plain order computes the form on every call.
    let plain = before + 3;
    assert_eq!(DESCRIBED.load(Ordering::SeqCst), plain);
    let _: Described = paid.form();
    assert_eq!(DESCRIBED.load(Ordering::SeqCst), plain + 1);
}

/// A lookup that read version 1 finishes after a write stored version 2: the
/// cache keeps version 2.
#[tokio::test(start_paused = true)]
async fn a_slow_lookup_never_overwrites_a_newer_write() {
    let (cache, repo) = cached(100, Lookup::Normal);
    let id = repo.seed(1)[0];
    let order = repo.orders.lock().unwrap()[&id].clone();
    let lookup = {
        let cache = cache.clone();
        // The double reads the order only after its delay, so hand it the
        // old version explicitly by making the write land in the cache only.
        tokio::spawn(async move { cache.get_or_fetch(id).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let newer = order
        .with_status(OrderStatus::Paid, chrono::Utc::now())
        .unwrap();
    cache.cache().store(CachedOrder::new(newer.clone()));
    let looked_up = lookup.await.unwrap().unwrap();
    assert_eq!(looked_up.version(), 1, "the repository still had version 1");
    assert_eq!(*cache.cache().get(&id).unwrap(), newer);
}

#[test]
fn capacity_is_bounded_and_recently_read_entries_survive() {
    let cache = storage::OrderCache::new(CacheConfig {
        capacity: 100,
        ttl: Duration::from_secs(60),
    });
    let repo = FakeRepo::new(Duration::ZERO, Lookup::Normal);
    let ids = repo.seed(1_000);
    let orders = repo.orders.lock().unwrap().clone();
    let hot = ids[0];
    for id in &ids {
        cache.store(CachedOrder::new(orders[id].clone()));
        // Keep reading the hot key: CLOCK gives it a second chance each sweep.
        assert!(cache.get(&hot).is_some(), "the hot entry was evicted");
    }
    let stats = cache.stats();
    assert!(stats.entries <= 100, "{stats:?}");
    assert!(stats.evictions >= 900, "{stats:?}");
}

#[test]
fn entries_expire_after_the_ttl() {
    let (clock, time) = quanta::Clock::mock();
    let cache = storage::OrderCache::with_clock(
        CacheConfig {
            capacity: 10,
            ttl: Duration::from_secs(30),
        },
        clock,
    );
    let repo = FakeRepo::new(Duration::ZERO, Lookup::Normal);
    let id = repo.seed(1)[0];
    let order = repo.orders.lock().unwrap()[&id].clone();
    cache.store(CachedOrder::new(order.clone()));
    time.increment(Duration::from_secs(29));
    assert!(cache.get(&id).is_some(), "fresh until the TTL");
    time.increment(Duration::from_secs(2));
    assert!(cache.get(&id).is_none(), "expired entries are misses");
    // Storing again (a refetch) makes it fresh again.
    cache.store(CachedOrder::new(order));
    assert!(cache.get(&id).is_some());
}

/// The cache over the real SQLite repository, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_over_real_sqlite() {
    let db = test_support::TestDb::sqlite().await;
    let cache = CachedOrders::new(storage::Database::open(db.config()), CacheConfig::default());
    let order = db
        .create_order(new_order("u-real", None, &[7]))
        .await
        .unwrap()
        .order;
    let id = order.id();
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.find_order(id).await })
        })
        .collect();
    for lookup in lookups {
        assert_eq!(*lookup.await.unwrap().unwrap(), order);
    }
    let stats = cache.cache().stats();
    assert_eq!(stats.hits + stats.misses, 50);
    assert!(stats.misses - stats.coalesced <= 2, "{stats:?}");
}

/// Another replica's change drops an older copy and keeps a newer one.
#[test]
fn a_change_from_another_replica_drops_only_older_copies() {
    let cache = storage::OrderCache::new(CacheConfig::default());
    let repo = FakeRepo::new(Duration::ZERO, Lookup::Normal);
    let id = repo.seed(1)[0];
    let order = repo.orders.lock().unwrap()[&id].clone();
    cache.store(CachedOrder::new(order.clone()));
    cache.changed(&id, 1);
    assert!(cache.get(&id).is_some(), "version 1 is not older than 1");
    cache.changed(&id, 2);
    assert!(cache.get(&id).is_none(), "version 1 is older than 2");
    assert_eq!(cache.invalidations(), 2);
    // A lookup that started before a change does not store what it read.
    let since = cache.generation(&id);
    cache.changed(&id, 3);
    cache.store_if_unchanged(CachedOrder::new(order.clone()), since);
    assert!(
        cache.get(&id).is_none(),
        "read before the change: not stored"
    );
    let since = cache.generation(&id);
    cache.store_if_unchanged(CachedOrder::new(order), since);
    assert!(cache.get(&id).is_some(), "no change since: stored");
}

/// Callers arriving after a change do not join a lookup that started
/// before it (it may return the old version); their own read is cached.
#[tokio::test]
async fn a_lookup_in_flight_when_a_change_arrives_is_not_joined() {
    let (cache, repo) = cached(100, Lookup::Normal);
    let id = repo.seed(1)[0];
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_fetch(id).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    cache.cache().changed(&id, 2);
    // A caller after the change starts its own lookup instead of joining.
    cache.get_or_fetch(id).await.unwrap();
    slow.await.unwrap().unwrap();
    assert_eq!(
        repo.calls(id),
        2,
        "the late caller did not join the old lookup"
    );
    // The late caller's read (after the change) is what is cached.
    assert!(cache.cache().get(&id).is_some());
}

/// Without a live lease every read goes to the repository; a lease serves
/// from the cache until it runs out; a flush empties it.
#[test]
fn reads_bypass_the_cache_outside_the_feeds_lease() {
    let (clock, time) = quanta::Clock::mock();
    let cache = storage::OrderCache::with_clock(CacheConfig::default(), clock);
    let repo = FakeRepo::new(Duration::ZERO, Lookup::Normal);
    let id = repo.seed(1)[0];
    let order = repo.orders.lock().unwrap()[&id].clone();
    cache.store(CachedOrder::new(order.clone()));
    assert!(cache.get(&id).is_some(), "no feed: always trusted");
    cache.distrust();
    assert!(!cache.is_trusted());
    assert!(cache.get(&id).is_none(), "a feed that is down: bypassed");
    cache.trust_for(Duration::from_secs(1));
    assert!(cache.get(&id).is_some(), "inside the lease");
    time.increment(Duration::from_millis(1_100));
    assert!(cache.get(&id).is_none(), "the lease ran out: bypassed");
    cache.trust_for(Duration::from_secs(1));
    cache.flush();
    assert!(cache.get(&id).is_none(), "flushed");
    let since = cache.generation(&id);
    cache.flush();
    cache.store_if_unchanged(CachedOrder::new(order), since);
    assert!(
        cache.get(&id).is_none(),
        "a lookup from before a flush is not stored"
    );
}
