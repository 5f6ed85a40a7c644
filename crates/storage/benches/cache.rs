//! The order cache against its baselines, same run: two threads, 95% hits /
//! 5% writes over 100,000 orders. Baselines: `Mutex<HashMap>` (the naive
//! shape, a lock around a map) and `moka::sync::Cache` (bounded + TTL, like ours). Ours runs with
//! bounding (capacity = the data set), TTL and the CLOCK bookkeeping on; the
//! hit path measured is the one `CachedOrders::get_or_fetch` takes first.
//!
//! Run: `cargo bench -p storage --bench cache`; the ratios go to
//! docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark code fails loudly"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::{Cents, Currency, NewOrder, Order, OrderId, OrderLine, ProductId, Quantity, UserId};
use storage::{CacheConfig, CachedOrder, OrderCache};

const ORDERS: usize = 100_000;
const THREADS: usize = 2;

fn orders() -> Vec<Arc<Order>> {
    (0..ORDERS)
        .map(|n| {
            let line = OrderLine::new(
                "lines[0]",
                ProductId::parse(format!("p-{}", n % 100)).unwrap(),
                Quantity::parse_field("q", 1).unwrap(),
                Cents::new(100),
            )
            .unwrap();
            let new = NewOrder::new(
                UserId::parse(format!("u-{n}")).unwrap(),
                vec![line],
                Currency::parse("EUR").unwrap(),
                None,
            )
            .unwrap();
            Arc::new(Order::place(OrderId::generate(), new, chrono::Utc::now()))
        })
        .collect()
}

/// A cache under test: read one order (returning a counted reference, as a
/// caller would keep it), write the `n`th order.
trait Subject: Sync {
    fn read(&self, id: &OrderId) -> bool;
    fn write(&self, n: usize);
}

/// Ours stores `CachedOrder`s (one reference-counted allocation each, like
/// `Arc<Order>`); the shared copies are made once, outside the timing.
struct Ours(OrderCache, Vec<CachedOrder>);
impl Subject for Ours {
    fn read(&self, id: &OrderId) -> bool {
        black_box(self.0.get(id)).is_some()
    }
    fn write(&self, n: usize) {
        self.0.store(self.1[n].clone());
    }
}

struct Locked(Mutex<HashMap<OrderId, Arc<Order>>>, Vec<Arc<Order>>);
impl Subject for Locked {
    fn read(&self, id: &OrderId) -> bool {
        black_box(self.0.lock().unwrap().get(id).cloned()).is_some()
    }
    fn write(&self, n: usize) {
        let order = &self.1[n];
        self.0.lock().unwrap().insert(order.id(), Arc::clone(order));
    }
}

struct Moka(moka::sync::Cache<OrderId, Arc<Order>>, Vec<Arc<Order>>);
impl Subject for Moka {
    fn read(&self, id: &OrderId) -> bool {
        black_box(self.0.get(id)).is_some()
    }
    fn write(&self, n: usize) {
        let order = &self.1[n];
        self.0.insert(order.id(), Arc::clone(order));
    }
}

/// Unbounded, no TTL, no coalescing: what the bare maps cost.
struct Papaya(papaya::HashMap<OrderId, Arc<Order>>, Vec<Arc<Order>>);
impl Subject for Papaya {
    fn read(&self, id: &OrderId) -> bool {
        black_box(self.0.pin().get(id).cloned()).is_some()
    }
    fn write(&self, n: usize) {
        let order = &self.1[n];
        self.0.pin().insert(order.id(), Arc::clone(order));
    }
}

struct SccIndex(scc::HashIndex<OrderId, Arc<Order>>, Vec<Arc<Order>>);
impl Subject for SccIndex {
    fn read(&self, id: &OrderId) -> bool {
        black_box(self.0.peek_with(id, |_, order| Arc::clone(order))).is_some()
    }
    fn write(&self, n: usize) {
        let order = &self.1[n];
        match self.0.entry_sync(order.id()) {
            scc::hash_index::Entry::Occupied(mut entry) => entry.update(Arc::clone(order)),
            scc::hash_index::Entry::Vacant(entry) => {
                entry.insert_entry(Arc::clone(order));
            }
        }
    }
}

/// `iters` operations per thread on `THREADS` threads; 1 in 20 is a write.
fn run(subject: &dyn Subject, ids: &[OrderId], iters: u64) -> Duration {
    let barrier = std::sync::Barrier::new(THREADS + 1);
    let write_every: u64 = std::env::var("BENCH_WRITE_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let barrier = &barrier;
            scope.spawn(move || {
                // A cheap per-thread xorshift: random keys, no shared state.
                let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1);
                barrier.wait();
                for _ in 0..iters {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = (x % ORDERS as u64) as usize;
                    if x.is_multiple_of(write_every) {
                        subject.write(n);
                    } else {
                        black_box(subject.read(&ids[n]));
                    }
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let started = Instant::now();
        barrier.wait();
        started.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let orders = orders();
    // Keys in their own dense array, so choosing one does not itself miss
    // the CPU cache on a random order.
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id()).collect();
    let config = CacheConfig {
        capacity: ORDERS,
        ttl: Duration::from_secs(600),
    };
    let ours = Ours(
        OrderCache::new(config),
        orders
            .iter()
            .map(|o| CachedOrder::new(Order::clone(o)))
            .collect(),
    );
    let locked = Locked(Mutex::new(HashMap::with_capacity(ORDERS)), orders.clone());
    let moka = Moka(
        moka::sync::Cache::builder()
            .max_capacity(ORDERS as u64)
            .time_to_live(config.ttl)
            .build(),
        orders.clone(),
    );
    let raw = Papaya(papaya::HashMap::with_capacity(ORDERS), orders.clone());
    let scc_index = SccIndex(scc::HashIndex::with_capacity(ORDERS), orders.clone());
    for n in 0..ORDERS {
        ours.write(n);
        raw.write(n);
        scc_index.write(n);
        locked.write(n);
        moka.write(n);
    }
    moka.0.run_pending_tasks();

    let mut group = c.benchmark_group("cache_95_read_5_write_2_threads");
    group.throughput(Throughput::Elements(THREADS as u64));
    let subjects: [(&str, &dyn Subject); 5] = [
        ("mutex_hashmap", &locked),
        ("moka_sync", &moka),
        ("papaya_unbounded", &raw),
        ("scc_hashindex_unbounded", &scc_index),
        ("orderflow", &ours),
    ];
    for (name, subject) in subjects {
        group.bench_function(name, |b| b.iter_custom(|iters| run(subject, &ids, iters)));
    }
    group.finish();
    let stats = ours.0.stats();
    assert_eq!(stats.evictions, 0, "the data set fits");
    assert_eq!(
        stats.misses, 0,
        "every read was a hit: TTL and bounding on, never tripped"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
