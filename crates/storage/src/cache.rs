//! The order cache: lock-free hits, bounded size, a TTL, and coalesced misses.
//!
//! The classic failure of an order cache is a `std::sync::Mutex` held across
//! an `.await` while the miss is fetched: under load every worker thread
//! blocks on it and the process deadlocks. Here:
//!
//! - **Hits take no lock.** Entries live in an [`scc::HashIndex`], whose
//!   `peek` is lock-free (epoch-based reclamation) and keeps entries inline in
//!   its buckets (one cache-line miss fewer per hit than node-per-entry maps
//!   such as papaya: see docs/benchmarks.md). A hit reads the entry, checks
//!   its expiry, sets its "referenced" bit if it was clear, and clones an
//!   `Arc`. Hit/miss counts go to per-thread stripes, not one shared atomic.
//! - **Bounded, with CLOCK eviction.** New keys join a queue; past
//!   `capacity`, the oldest key is evicted unless it was read since it was
//!   last examined (then it gets a second chance). The queue's mutex is taken
//!   only when a *new* key is stored (the miss path), never across an await.
//! - **TTL.** An entry older than `ttl` counts as a miss and is refetched.
//! - **Coalesced misses.** The first caller for a missing key starts one
//!   lookup on a task of its own; later callers subscribe to its result. No
//!   one holds a lock while waiting. The lookup runs to completion even if
//!   every caller gives up (a short client deadline still fills the cache), a
//!   panicking lookup fails its waiters instead of stranding them, and errors
//!   are never cached.
//! - **Read your writes.** Writes through [`CachedOrders`] store the
//!   committed order; a lookup that read an older version never overwrites a
//!   newer one (versions only grow).
//! - **Coherent across replicas.** Other replicas' writes arrive as
//!   [`OrderCache::changed`] (from PostgreSQL `NOTIFY`, `crate::listen`): an
//!   older cached copy is dropped, and a lookup that was in flight when the
//!   change arrived does not store what it read (it may predate the
//!   change). The feed holds a lease ([`OrderCache::trust_for`], renewed by
//!   its heartbeats): when the lease runs out (the feed is down or silent)
//!   every read goes to the database, and a new feed connection empties the
//!   cache first ([`OrderCache::flush`]), since changes may have been missed
//!   meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use domain::{NewOrder, Order, OrderId, OrderStatus, UserId};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::{Created, OrderPage, OrderRepository, StorageError};

mod entry;

pub use entry::CachedOrder;

/// Cache sizing and freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most orders kept. Default 100,000: about 50 MB at ~500 bytes per
    /// order, and the hot set of a busy instance.
    pub capacity: usize,
    /// How long an entry is served before it is refetched. Default 30 s:
    /// writes through this instance update the cache at once, so the TTL
    /// only bounds staleness from *other* instances' writes.
    pub ttl: Duration,
}

impl CacheConfig {
    /// The default [`Self::capacity`].
    pub const DEFAULT_CAPACITY: usize = 100_000;
    /// The default [`Self::ttl`].
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: Self::DEFAULT_CAPACITY,
            ttl: Self::DEFAULT_TTL,
        }
    }
}

/// Counters since start (sums of the per-thread stripes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not (absent or expired).
    pub misses: u64,
    /// Misses that waited for another caller's lookup instead of starting one.
    pub coalesced: u64,
    /// Entries removed to stay within capacity.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
}

/// The synchronous core: storage of orders with bounding and TTL. Used by
/// [`CachedOrders`]; public so benchmarks can measure the hit path alone.
pub struct OrderCache {
    clock_ms: Clock,
    /// The index holds only the pointer; expiry and the reference bit live
    /// in the shared allocation (see [`CachedOrder`]).
    entries: scc::HashIndex<OrderId, CachedOrder>,
    /// Keys in admission order for the CLOCK sweep. May hold keys already
    /// gone from `entries` (invalidated) or twice (re-admitted); the sweep
    /// skips those. Its length bounds the number of entries.
    clock: Mutex<VecDeque<OrderId>>,
    config: CacheConfig,
    hits: Striped,
    misses: Striped,
    coalesced: Striped,
    evictions: AtomicU64,
    /// Set once a change feed manages this cache (several replicas): from
    /// then on reads are served only while the feed's lease holds
    /// (`trusted_until`). Clear: one replica, always trusted.
    leased: AtomicBool,
    /// The coarse clock's time the lease runs out.
    trusted_until: AtomicU32,
    /// Per key stripe, a count of changes seen (and of flushes, on every
    /// stripe): a lookup stores its result only if its stripe's count did
    /// not move while it ran.
    generations: Box<[AtomicU64]>,
    /// Never used: what [`Self::stripe`] would fall back to out of range.
    generation_spare: AtomicU64,
    invalidations: AtomicU64,
}

/// Stripes of [`OrderCache::generations`].
const GENERATION_STRIPES: usize = 1024;

/// Where a lookup started, for [`OrderCache::store_if_unchanged`].
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl OrderCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_clock(config, quanta::Clock::new())
    }

    /// An empty cache reading time from `clock`; tests pass
    /// `quanta::Clock::mock()` to move time by hand.
    pub fn with_clock(config: CacheConfig, clock: quanta::Clock) -> Self {
        let capacity = config.capacity.max(1);
        Self {
            clock_ms: Clock::new(clock),
            entries: scc::HashIndex::with_capacity(capacity),
            clock: Mutex::new(VecDeque::with_capacity(capacity + 1)),
            config: CacheConfig { capacity, ..config },
            hits: Striped::default(),
            misses: Striped::default(),
            coalesced: Striped::default(),
            evictions: AtomicU64::new(0),
            leased: AtomicBool::new(false),
            trusted_until: AtomicU32::new(0),
            generations: (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            generation_spare: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    fn stripe(&self, id: &OrderId) -> &AtomicU64 {
        // The id's random tail (UUIDv7) spreads keys over the stripes.
        let [.., a, b] = *id.as_bytes();
        let index = usize::from(u16::from_le_bytes([a, b])) % GENERATION_STRIPES;
        // Always in range; `get` keeps the lints' no-panic rule.
        self.generations
            .get(index)
            .unwrap_or(&self.generation_spare)
    }

    /// The point a lookup of `id` starts from.
    pub fn generation(&self, id: &OrderId) -> Generation {
        Generation(self.stripe(id).load(Ordering::SeqCst))
    }

    /// Another replica committed `version` of `id`: a cached older version
    /// is dropped, and lookups of its stripe in flight will not store.
    pub fn changed(&self, id: &OrderId, version: u64) {
        self.stripe(id).fetch_add(1, Ordering::SeqCst);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.entries
            .remove_if_sync(id, |cached| cached.version() < version);
    }

    /// Stops serving from the cache until [`Self::trust_for`]: a change
    /// feed now manages it, and it is down (or not up yet).
    pub fn distrust(&self) {
        self.trusted_until
            .store(self.clock_ms.now(), Ordering::SeqCst);
        self.leased.store(true, Ordering::SeqCst);
    }

    /// Serves from the cache for `lease` from now: the change feed has just
    /// shown it delivers every change committed before the lease began.
    pub fn trust_for(&self, lease: Duration) {
        self.trusted_until
            .store(self.clock_ms.after(lease), Ordering::SeqCst);
    }

    /// Empties the cache; lookups in flight will not store. For a change
    /// feed that was replaced: changes may have been missed meanwhile.
    pub fn flush(&self) {
        for generation in &*self.generations {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        self.entries.clear_sync();
    }

    /// Whether reads are served from the cache now.
    pub fn is_trusted(&self) -> bool {
        !self.leased.load(Ordering::Relaxed)
            || self.clock_ms.is_before(
                self.clock_ms.now(),
                self.trusted_until.load(Ordering::Relaxed),
            )
    }

    /// Changes from other replicas applied since start.
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Relaxed)
    }

    /// [`Self::store`], unless a change to `order`'s stripe arrived since
    /// `since` (the order may predate it) or the cache is not trusted.
    pub fn store_if_unchanged(&self, order: CachedOrder, since: Generation) {
        if self.is_trusted() && self.generation(&order.id()).0 == since.0 {
            self.store(order);
        }
    }

    /// The cached order, if present and fresh, counted as a hit or a miss.
    /// Lock-free.
    #[inline]
    pub fn get(&self, id: &OrderId) -> Option<CachedOrder> {
        let found = self.peek(id);
        match found {
            Some(_) => self.hits.add(),
            None => self.misses.add(),
        }
        found
    }

    /// Like [`Self::get`], without counting.
    #[inline]
    fn peek(&self, id: &OrderId) -> Option<CachedOrder> {
        let now = self.clock_ms.now();
        if self.leased.load(Ordering::Relaxed)
            && !self
                .clock_ms
                .is_before(now, self.trusted_until.load(Ordering::Relaxed))
        {
            return None;
        }
        self.entries
            .peek_with(id, |_, order| {
                let slot = order.slot();
                if !self
                    .clock_ms
                    .is_before(now, slot.expires_at.load(Ordering::Relaxed))
                {
                    return None;
                }
                // Read before write: a hot entry's bit is already set, so
                // hits on it do not bounce its cache line between cores.
                if !slot.referenced.load(Ordering::Relaxed) {
                    slot.referenced.store(true, Ordering::Relaxed);
                }
                Some(order.clone())
            })
            .flatten()
    }

    /// Stores `order` unless a newer version is already cached.
    pub fn store(&self, order: CachedOrder) {
        let id = order.id();
        let expires_at = self.clock_ms.after(self.config.ttl);
        let slot = order.slot();
        slot.expires_at.store(expires_at, Ordering::Relaxed);
        slot.referenced.store(false, Ordering::Relaxed);
        // The bucket lock `entry_sync` takes is released at the end of the
        // match, before `admit` looks at other keys.
        let added = match self.entries.entry_sync(id) {
            scc::hash_index::Entry::Occupied(mut cached) => {
                if cached.get().version() <= order.version() {
                    cached.update(order);
                }
                false
            }
            scc::hash_index::Entry::Vacant(vacant) => {
                vacant.insert_entry(order);
                true
            }
        };
        if added {
            self.admit(id);
        }
    }

    /// Drops `id` from the cache.
    pub fn invalidate(&self, id: &OrderId) {
        self.entries.remove_sync(id);
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.sum(),
            coalesced: self.coalesced.sum(),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: u64::try_from(self.entries.len()).unwrap_or(u64::MAX),
        }
    }

    /// Publishes [`Self::stats`] through the `metrics` facade under the
    /// contract's names. Cheap; the server calls it periodically.
    pub fn publish_metrics(&self) {
        let stats = self.stats();
        metrics::counter!("orderflow_cache_hits_total").absolute(stats.hits);
        metrics::counter!("orderflow_cache_misses_total").absolute(stats.misses);
        metrics::counter!("orderflow_cache_coalesced_total").absolute(stats.coalesced);
        metrics::counter!("orderflow_cache_evictions_total").absolute(stats.evictions);
        #[allow(
            clippy::cast_precision_loss,
            reason = "a gauge of entry count; f64 is exact far beyond any capacity"
        )]
        metrics::gauge!("orderflow_cache_entries").set(stats.entries as f64);
    }

    /// Records a newly stored key and evicts past capacity (CLOCK).
    fn admit(&self, id: OrderId) {
        let mut victims = Vec::new();
        {
            let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
            clock.push_back(id);
            // Each pass over a key either evicts it, drops a stale copy, or
            // clears its bit, so this ends within two sweeps of the queue.
            while clock.len() > self.config.capacity {
                let Some(candidate) = clock.pop_front() else {
                    break;
                };
                let referenced = self.entries.peek_with(&candidate, |_, order| {
                    order.slot().referenced.swap(false, Ordering::Relaxed)
                });
                match referenced {
                    Some(true) => clock.push_back(candidate),
                    Some(false) => victims.push(candidate),
                    None => {}
                }
            }
        }
        for victim in victims {
            if self.entries.remove_sync(&victim) {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Milliseconds since the cache was made, as a wrapping `u32`, read from a
/// coarse clock.
///
/// Hits compare against [`quanta::Clock::recent`], an atomic load that an
/// upkeep thread refreshes every [`UPKEEP_INTERVAL`]: reading the real clock
/// on every hit (the vDSO's fenced `rdtsc`) serialised the CPU pipeline and
/// made hits 2.3x slower (docs/benchmarks.md). TTLs are thus accurate to
/// a few milliseconds.
///
/// Expiry times are compared with wrapping arithmetic (as TCP compares
/// sequence numbers), which is exact while a read and the expiry it checks
/// are less than 2^31 ms (24.8 days) apart. TTLs are clamped to [`MAX_TTL`]
/// (2^30 ms, 12.4 days), so a fresh entry always reads as fresh, and an
/// expired one reads as expired for at least 12.4 days after it expired
/// (an entry neither read nor evicted for longer would wrap).
struct Clock {
    source: quanta::Clock,
    epoch: quanta::Instant,
}

/// The longest TTL: half the wrapping clock's exact range (2^30 ms).
const MAX_TTL: Duration = Duration::from_millis(i32::MAX as u64 / 2);

/// How often the coarse clock is refreshed.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(5);

/// Starts quanta's process-wide upkeep thread once. If it cannot start,
/// `recent()` falls back to reading the real clock: slower, still correct.
fn ensure_upkeep() {
    static UPKEEP: std::sync::OnceLock<Option<quanta::Handle>> = std::sync::OnceLock::new();
    UPKEEP.get_or_init(|| match quanta::Upkeep::new(UPKEEP_INTERVAL).start() {
        Ok(handle) => Some(handle),
        // Someone else in this process runs one; their refreshes serve us.
        Err(quanta::Error::UpkeepRunning) => None,
        Err(error) => {
            tracing::warn!(%error, "coarse clock unavailable; cache hits will read the real clock");
            None
        }
    });
}

impl Clock {
    fn new(source: quanta::Clock) -> Self {
        ensure_upkeep();
        let epoch = source.now();
        Self { source, epoch }
    }

    #[inline]
    fn now(&self) -> u32 {
        let elapsed = self.source.recent().duration_since(self.epoch);
        // Truncation is the point: the clock wraps every 49.7 days.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "wrapping millisecond clock"
        )]
        let now = elapsed.as_millis() as u32;
        now
    }

    fn after(&self, ttl: Duration) -> u32 {
        #[allow(clippy::cast_possible_truncation, reason = "clamped below 2^31")]
        let ttl = ttl.min(MAX_TTL).as_millis() as u32;
        self.now().wrapping_add(ttl)
    }

    /// Whether `now` is strictly before `deadline`, modulo wrapping.
    #[inline]
    fn is_before(&self, now: u32, deadline: u32) -> bool {
        #[allow(clippy::cast_possible_wrap, reason = "wrapping comparison")]
        let ahead = deadline.wrapping_sub(now) as i32;
        ahead > 0
    }
}

/// What waiters of one in-flight lookup receive: `None` until it finishes.
type FlightResult = Option<Result<CachedOrder, StorageError>>;

/// An [`OrderRepository`] that serves `find_order` from an [`OrderCache`]
/// and keeps it current on writes. Cheap to clone.
pub struct CachedOrders<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for CachedOrders<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<R> {
    repo: R,
    cache: OrderCache,
    /// Lookups in progress, by key; each holds the receiving end its
    /// waiters subscribe to. An entry lives exactly as long as its lookup
    /// task (a drop guard removes it, also on panic).
    flights: scc::HashMap<OrderId, (Generation, watch::Receiver<FlightResult>)>,
}

impl<R: OrderRepository> CachedOrders<R> {
    /// Wraps `repo`.
    pub fn new(repo: R, config: CacheConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                repo,
                cache: OrderCache::new(config),
                flights: scc::HashMap::new(),
            }),
        }
    }

    /// The cache, for stats and metrics.
    pub fn cache(&self) -> &OrderCache {
        &self.inner.cache
    }

    /// The order from the cache, or from one shared repository lookup.
    ///
    /// A panic in the repository unwinds into the caller that started the
    /// lookup (the gRPC panic layer answers it); callers that were waiting
    /// for it get `StorageError::Internal`, and the next call starts afresh.
    pub async fn get_or_fetch(&self, id: OrderId) -> Result<CachedOrder, StorageError> {
        if let Some(order) = self.inner.cache.get(&id) {
            return Ok(order);
        }
        let since = self.inner.cache.generation(&id);
        let (sender, receiver) = watch::channel(None);
        // The bucket lock is held only inside this match, never across an
        // await.
        let joined = match self.inner.flights.entry_sync(id) {
            scc::hash_map::Entry::Occupied(flight) => Some(flight.get().clone()),
            scc::hash_map::Entry::Vacant(vacant) => {
                vacant.insert_entry((since, receiver));
                None
            }
        };
        if let Some((started, receiver)) = joined {
            if started.0 == since.0 {
                self.inner.cache.coalesced.add();
                return wait_for(receiver, id).await;
            }
            // That lookup began before another replica's change to this
            // key's stripe and may return the old version: read afresh.
            let found = CachedOrder::new(self.inner.repo.find_order(id).await?.into());
            self.inner.cache.store_if_unchanged(found.clone(), since);
            return Ok(found);
        }
        // We lead. A lookup may have finished between our miss and our
        // insert; if so, its result is already cached.
        let flight = Flight {
            inner: Arc::clone(&self.inner),
            id,
        };
        if let Some(order) = self.inner.cache.peek(&id) {
            drop(flight);
            let _ = sender.send(Some(Ok(order.clone())));
            return Ok(order);
        }
        // The lookup runs in the leader's span (a trace shows the database
        // call under the request that made it).
        let lookup = tokio::spawn(
            async move {
                let result = flight
                    .inner
                    .repo
                    .find_order(id)
                    .await
                    .map(|found| CachedOrder::new(found.into()));
                if let Ok(order) = &result {
                    flight.inner.cache.store_if_unchanged(order.clone(), since);
                }
                // Cache first, then forget the flight, then wake the waiters: a
                // caller arriving in between finds one or the other.
                drop(flight);
                let _ = sender.send(Some(result.clone()));
                result
            }
            .instrument(tracing::Span::current()),
        );
        match lookup.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(StorageError::Unavailable(format!(
                "the lookup of order {id} was cancelled: {join}"
            ))),
        }
    }
}

/// Removes its flight entry when the lookup task ends, however it ends.
struct Flight<R> {
    inner: Arc<Inner<R>>,
    id: OrderId,
}

impl<R> Drop for Flight<R> {
    fn drop(&mut self) {
        self.inner.flights.remove_sync(&self.id);
    }
}

async fn wait_for(
    mut receiver: watch::Receiver<FlightResult>,
    id: OrderId,
) -> Result<CachedOrder, StorageError> {
    // The borrow is cloned out at once; nothing is held across an await.
    match receiver.wait_for(Option::is_some).await {
        Ok(done) => done.clone().unwrap_or_else(|| Err(lookup_failed(id))),
        Err(_closed) => Err(lookup_failed(id)),
    }
}

fn lookup_failed(id: OrderId) -> StorageError {
    StorageError::Internal(format!(
        "the shared lookup of order {id} failed unexpectedly"
    ))
}

/// The cache is itself a repository: hits hand out the cached snapshot
/// without copying it.
impl<R: OrderRepository> OrderRepository for CachedOrders<R> {
    type Found = CachedOrder;

    async fn find_order(&self, id: OrderId) -> Result<CachedOrder, StorageError> {
        self.get_or_fetch(id).await
    }

    async fn create_order(&self, new: NewOrder) -> Result<Created, StorageError> {
        let created = self.inner.repo.create_order(new).await?;
        self.inner
            .cache
            .store(CachedOrder::new(created.order.clone()));
        Ok(created)
    }

    async fn update_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected_version: u64,
    ) -> Result<Order, StorageError> {
        match self
            .inner
            .repo
            .update_status(id, status, expected_version)
            .await
        {
            Ok(order) => {
                self.inner.cache.store(CachedOrder::new(order.clone()));
                Ok(order)
            }
            Err(error) => {
                // A stale version means our copy may be stale too.
                if matches!(error, StorageError::Conflict(_)) {
                    self.inner.cache.invalidate(&id);
                }
                Err(error)
            }
        }
    }

    async fn list_orders(
        &self,
        user_id: &UserId,
        page_size: u32,
        after: Option<OrderId>,
    ) -> Result<OrderPage, StorageError> {
        self.inner.repo.list_orders(user_id, page_size, after).await
    }
}

/// A counter split over cache-line-padded stripes, one per thread (modulo
/// the stripe count), so hot-path increments do not contend.
#[derive(Default)]
struct Striped([Padded; STRIPES]);

const STRIPES: usize = 8;

#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

impl Striped {
    #[inline]
    fn add(&self) {
        let stripe = STRIPE.with(|s| *s);
        if let Some(cell) = self.0.get(stripe) {
            cell.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.0
            .iter()
            .map(|cell| cell.0.load(Ordering::Relaxed))
            .sum()
    }
}
