//! The connection layer: one pool per backend behind an enum, connection
//! set-up (SQLite pragmas), time budgets, and the two ways queries run.
//!
//! Queries are written once against the shared schema and run on either
//! backend through [`with_conn!`] / [`write_transaction!`], which expand the
//! same body for each connection type (what diesel's sync-only
//! `MultiConnection` derive would do).
//!
//! Nothing here blocks a tokio worker: PostgreSQL goes through diesel-async's
//! pure-Rust `AsyncPgConnection`; SQLite through `SyncConnectionWrapper`,
//! which runs each statement on tokio's blocking pool, bounded by the pool
//! size.

use std::future::Future;

use chrono::Utc;
use diesel::{ExpressionMethods, QueryDsl, SqliteConnection};
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain::WriteId;

use crate::StorageError;
use crate::config::{Backend, StoreConfig};
use crate::migrate;
use crate::schema::applied_writes;

/// The SQLite connection type.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Pragmas every SQLite connection runs first.
/// - WAL: readers never block the writer and vice versa.
/// - `synchronous = FULL`: an acknowledged commit survives power loss.
/// - `busy_timeout`: a writer waits for the write lock instead of failing.
/// - `foreign_keys`: off by default in SQLite; our schema relies on them.
///
/// `busy_timeout` comes first: switching the journal mode takes a lock, and
/// without the timeout a connection opened beside another fails at once with
/// "database is locked".
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// Whether the SQLite database takes writes: a table created and rolled
/// back, the write lock tried without waiting (a held lock means someone is
/// writing, so the file is writable). Leaves the connection as it found it.
async fn sqlite_write_probe(
    mut c: PooledConnection<'static, SqliteConn>,
) -> Result<bool, StorageError> {
    c.batch_execute("PRAGMA busy_timeout = 0").await?;
    let probe = c
        .batch_execute("BEGIN IMMEDIATE; CREATE TABLE orderflow_write_probe (x INTEGER); ROLLBACK;")
        .await;
    // Whatever happened, leave no transaction open and restore the timeout
    // before the connection goes back to the pool.
    if probe.is_err() {
        let _rolled_back = c.batch_execute("ROLLBACK").await;
    }
    c.batch_execute(SQLITE_PRAGMAS).await?;
    match probe.map_err(StorageError::from) {
        Ok(()) | Err(StorageError::Unavailable(_)) => Ok(true),
        Err(StorageError::Misconfigured(_)) => Ok(false),
        Err(other) => Err(other),
    }
}

/// The read-only session: waits for a writer's lock like the others, and
/// refuses any statement that would write.
const SQLITE_READ_ONLY_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;";

/// What a pool may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// `path` as a SQLite URI that opens the file read-only (a `file:` URI
/// given by the operator is kept as it is).
pub(crate) fn read_only_uri(path: &str) -> String {
    if path.starts_with("file:") {
        return path.to_owned();
    }
    let escaped = path
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}?mode=ro")
}

/// A pooled connection to either backend.
#[allow(
    clippy::large_enum_variant,
    reason = "one Conn per operation, moved once; boxing would add an allocation per query for nothing"
)]
pub(crate) enum Conn {
    Postgres(PooledConnection<'static, AsyncPgConnection>),
    Sqlite(PooledConnection<'static, SqliteConn>),
}

/// Runs `$body` with `$c` bound to the concrete connection; the body is
/// compiled once per backend.
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Postgres(pooled) => {
                let $c: &mut ::diesel_async::AsyncPgConnection = &mut *pooled;
                $body
            }
            $crate::db::Conn::Sqlite(pooled) => {
                let $c: &mut $crate::db::SqliteConn = &mut *pooled;
                $body
            }
        }
    };
}

/// Runs `$body` in a write transaction: plain `BEGIN` on PostgreSQL,
/// `BEGIN IMMEDIATE` on SQLite (take the write lock up front, so two writers
/// never deadlock upgrading read locks). Commits on `Ok`, rolls back on `Err`.
macro_rules! write_transaction {
    ($conn:expr, |$c:ident| $body:block) => {
        match $conn {
            $crate::db::Conn::Postgres(pooled) => {
                ::diesel_async::AsyncConnection::transaction(&mut *pooled, async move |$c| $body)
                    .await
            }
            $crate::db::Conn::Sqlite(pooled) => {
                pooled.immediate_transaction(async move |$c| $body).await
            }
        }
    };
}

pub(crate) use {with_conn, write_transaction};

/// Inserts many rows of one type in one go.
///
/// PostgreSQL takes them as one multi-row INSERT. diesel-async cannot batch
/// SQLite inserts, so on SQLite the batch runs as sync diesel in a single
/// blocking-pool hop, inside the caller's transaction: one multi-row INSERT
/// for a row type without DEFAULT values (`treat_none_as_default_value =
/// false`), one statement per row otherwise.
pub(crate) trait InsertRows<R> {
    fn insert_rows(
        &mut self,
        rows: Vec<R>,
    ) -> impl Future<Output = diesel::QueryResult<usize>> + Send;
}

/// Implements [`InsertRows`] for a row type on both connection types.
macro_rules! insert_rows {
    ($row:ty => $table:path) => {
        impl $crate::db::InsertRows<$row> for ::diesel_async::AsyncPgConnection {
            async fn insert_rows(&mut self, rows: Vec<$row>) -> ::diesel::QueryResult<usize> {
                ::diesel_async::RunQueryDsl::execute(
                    ::diesel::insert_into($table).values(rows),
                    self,
                )
                .await
            }
        }
        impl $crate::db::InsertRows<$row> for $crate::db::SqliteConn {
            async fn insert_rows(&mut self, rows: Vec<$row>) -> ::diesel::QueryResult<usize> {
                self.spawn_blocking(move |c| {
                    ::diesel::RunQueryDsl::execute(::diesel::insert_into($table).values(rows), c)
                })
                .await
            }
        }
    };
}

pub(crate) use insert_rows;

/// The channel every committed order change is announced on (PostgreSQL
/// `NOTIFY`), for the other replicas' caches (`crate::listen`).
pub const ORDER_CHANGES_CHANNEL: &str = "orderflow_orders";

/// Announces a changed order to the other replicas, inside the writing
/// transaction: PostgreSQL delivers a `NOTIFY` only when (and if) the
/// transaction commits, in commit order. SQLite serves one replica, so
/// there it does nothing.
pub(crate) trait Announce {
    fn announce(
        &mut self,
        order_id: &str,
        version: i64,
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send;
}

impl Announce for AsyncPgConnection {
    async fn announce(&mut self, order_id: &str, version: i64) -> diesel::QueryResult<()> {
        use diesel::sql_types::Text;
        diesel_async::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(ORDER_CHANGES_CHANNEL)
                .bind::<Text, _>(format!("{order_id} {version}")),
            self,
        )
        .await
        .map(|_| ())
    }
}

impl Announce for SqliteConn {
    async fn announce(&mut self, _order_id: &str, _version: i64) -> diesel::QueryResult<()> {
        Ok(())
    }
}

enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// A pooled PostgreSQL connection shared by readers.
pub(crate) type SharedPg = std::sync::Arc<PooledConnection<'static, AsyncPgConnection>>;

/// The most shared readers [`Database::reader`] rotates over: two measured
/// better than four for point reads on two cores (docs/benchmarks.md);
/// one would keep all of PostgreSQL's work on a single backend process.
const READERS: usize = 2;

#[derive(Default)]
struct Readers {
    /// How many of `slots` are used: a quarter of the pool at most, so
    /// writers always keep most of it; none for a pool under four.
    used: usize,
    next: std::sync::atomic::AtomicUsize,
    slots: [std::sync::Mutex<Option<SharedPg>>; READERS],
    /// Held while a slot's connection is taken from the pool, so a burst
    /// of reads finding it empty takes one connection, not one each.
    filling: [tokio::sync::Mutex<()>; READERS],
}

impl Readers {
    fn for_pool(max_connections: u32) -> Self {
        let quarter = usize::try_from(max_connections / 4).unwrap_or(READERS);
        Self {
            used: quarter.min(READERS),
            ..Self::default()
        }
    }
}

/// Locks a reader slot; held only to copy or replace the pointer, never
/// across an await.
fn lock(slot: &std::sync::Mutex<Option<SharedPg>>) -> std::sync::MutexGuard<'_, Option<SharedPg>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A handle to the database: cheap to clone, shared by every repository.
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: std::sync::Arc<Inner>,
}

pub(crate) struct Inner {
    pools: Pools,
    /// PostgreSQL's shared readers (see [`Database::reader`]).
    readers: Readers,
    /// Order lookups by id, batched onto the shared readers (PostgreSQL
    /// only: see [`Database::order_reads`]).
    order_reads: Option<std::sync::Arc<crate::orders::OrderReads>>,
    config: StoreConfig,
    /// The pool's latest failure to connect (see [`Database::acquire`]).
    connect_errors: tokio::sync::watch::Sender<Option<StorageError>>,
    /// Ticks when events are stored (`crate::feed`).
    pub(crate) stored: crate::feed::StoredSignal,
}

/// Hands the pool's connection failures to waiting callers. bb8 opens
/// connections in the background and only logs why one failed; a caller
/// would wait its whole `acquire_timeout` for a connection that a refused
/// socket already said will not come.
#[derive(Debug, Clone)]
struct ConnectErrors(tokio::sync::watch::Sender<Option<StorageError>>);

impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for ConnectErrors {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        let error = StorageError::from(error);
        tracing::debug!(%error, "could not open a database connection");
        self.0.send_replace(Some(error));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(self.clone())
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Runs pending migrations (PostgreSQL: under an advisory lock, so
    /// instances starting together migrate once), then opens the pool. The
    /// returned database is ready: no caller sees a half-migrated schema.
    ///
    /// A configuration that can never work fails at once as
    /// [`StorageError::Misconfigured`]: a malformed URL, a database or role
    /// that does not exist, failed authentication, a SQLite path in a
    /// missing directory or naming a directory, a new SQLite database in a
    /// directory this user cannot write, a database that is read-only. Only [`StorageError::Unavailable`] is worth retrying.
    pub async fn connect(config: StoreConfig) -> Result<Self, StorageError> {
        if config.backend() == Backend::Sqlite {
            crate::connect::check_sqlite_path(config.sqlite_path(), false)?;
        }
        migrate::run(&config).await?;
        let db = Self::open(config);
        db.check_writable().await?;
        Ok(db)
    }

    /// For commands that only read (`events export`): no migrations, no
    /// write probe, and on SQLite a connection that cannot write
    /// (`mode=ro`, `PRAGMA query_only`), so it works on a read-only file or
    /// a PostgreSQL hot standby. The file must exist; a read checks the
    /// database answers and holds the schema.
    pub async fn connect_read_only(config: StoreConfig) -> Result<Self, StorageError> {
        if config.backend() == Backend::Sqlite {
            crate::connect::check_sqlite_path(config.sqlite_path(), true)?;
        }
        let db = Self::open_with(config, Access::ReadOnly);
        crate::EventStore::read_events(&db, None, 1).await?;
        Ok(db)
    }

    /// Opens the pool without migrating. Connections are made on demand, so
    /// this succeeds even while the database is down; calls then fail as
    /// `Unavailable` within `acquire_timeout`.
    pub fn open(config: StoreConfig) -> Self {
        Self::open_with(config, Access::ReadWrite)
    }

    fn open_with(config: StoreConfig, access: Access) -> Self {
        let (errors, _) = tokio::sync::watch::channel(None);
        let pools = match config.backend() {
            Backend::Postgres => {
                let mut setup = ManagerConfig::<AsyncPgConnection>::default();
                let postgres = std::sync::Arc::new(crate::connect::Postgres::new(&config.url));
                setup.custom_setup = Box::new(move |_| {
                    let postgres = std::sync::Arc::clone(&postgres);
                    Box::pin(async move { postgres.connect().await })
                });
                let manager =
                    AsyncDieselConnectionManager::new_with_config(config.url.clone(), setup);
                Pools::Postgres(pool_builder(&config, &errors).build_unchecked(manager))
            }
            Backend::Sqlite => {
                let mut setup = ManagerConfig::<SqliteConn>::default();
                let pragmas = match access {
                    Access::ReadWrite => SQLITE_PRAGMAS,
                    Access::ReadOnly => SQLITE_READ_ONLY_PRAGMAS,
                };
                setup.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(pragmas)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let path = match access {
                    Access::ReadWrite => config.sqlite_path().to_owned(),
                    Access::ReadOnly => read_only_uri(config.sqlite_path()),
                };
                let manager = AsyncDieselConnectionManager::new_with_config(path, setup);
                Pools::Sqlite(pool_builder(&config, &errors).build_unchecked(manager))
            }
        };
        let readers = match config.backend() {
            Backend::Postgres => Readers::for_pool(config.max_connections),
            Backend::Sqlite => Readers::default(),
        };
        Self {
            inner: std::sync::Arc::new(Inner {
                pools,
                order_reads: (readers.used > 0).then(|| {
                    std::sync::Arc::new(crate::orders::OrderReads::for_readers(readers.used))
                }),
                readers,
                config,
                connect_errors: errors,
                stored: crate::feed::StoredSignal::default(),
            }),
        }
    }

    /// The pool's connections: `(open, idle)`.
    pub fn pool_connections(&self) -> (u32, u32) {
        let state = match &self.inner.pools {
            Pools::Postgres(pool) => pool.state(),
            Pools::Sqlite(pool) => pool.state(),
        };
        (state.connections, state.idle_connections)
    }

    /// OpenTelemetry's `db.system.name` for this backend (on the database
    /// calls' CLIENT spans).
    pub fn db_system(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.inner.config.backend()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// A round trip through the same pool the repositories use, which also
    /// checks the database takes writes: what health checks should call.
    /// A read-only database is [`StorageError::Misconfigured`].
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.timed(self.check_writable()).await
    }

    /// Whether the database would take a write, without writing.
    ///
    /// PostgreSQL: not a standby, and not read-only by default. SQLite: a
    /// table created and rolled back (the schema page is written to the
    /// transaction only); the write lock is tried without waiting, and a
    /// held lock means someone is writing, so the file is writable.
    ///
    /// The SQLite probe changes the connection's session (its busy timeout,
    /// a transaction) and puts it back, so it runs on a task of its own that
    /// owns the connection, as writes do: a caller that gives up (the
    /// health monitor's timeout) cannot return it to the pool half-way.
    async fn check_writable(&self) -> Result<(), StorageError> {
        let conn = self.acquire().await?;
        let writable = match conn {
            Conn::Postgres(mut c) => {
                let query = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                ));
                query.get_result::<bool>(&mut *c).await?
            }
            Conn::Sqlite(c) => tokio::spawn(sqlite_write_probe(c))
                .await
                .map_err(|e| StorageError::Internal(format!("the write probe failed: {e}")))??,
        };
        if writable {
            Ok(())
        } else {
            Err(StorageError::Misconfigured(
                "the database is read-only".to_owned(),
            ))
        }
    }

    /// A pooled connection; `Unavailable` after `acquire_timeout`, or at
    /// once if an attempt to connect fails meanwhile (a refused connection
    /// is known at once; waiting out the timeout only delays the answer).
    pub(crate) async fn acquire(&self) -> Result<Conn, StorageError> {
        let mut failures = self.inner.connect_errors.subscribe();
        failures.mark_unchanged();
        let get = async {
            Ok(match &self.inner.pools {
                Pools::Postgres(pool) => Conn::Postgres(pool.get_owned().await?),
                Pools::Sqlite(pool) => Conn::Sqlite(pool.get_owned().await?),
            })
        };
        tokio::select! {
            conn = get => conn,
            Ok(()) = failures.changed() => {
                let error = failures.borrow_and_update().clone();
                Err(error.unwrap_or_else(|| {
                    StorageError::Unavailable("could not connect".to_owned())
                }))
            }
        }
    }

    /// A PostgreSQL connection shared by concurrent point reads, and taken
    /// from the pool like any other: `None` on SQLite, or with a pool too
    /// small to spare one (see `Readers`). Its queries pipeline:
    /// tokio-postgres writes every query queued on a connection in one go
    /// and reads their answers the same way, so many concurrent reads cost
    /// a few system calls instead of two each, on both sides. Reads rotate
    /// over up to [`READERS`] of them, so PostgreSQL works on more than one
    /// backend at a time. Only single statements outside transactions run
    /// on one; a caller that sees it fail calls [`Database::drop_reader`],
    /// and the next read takes a fresh connection.
    pub(crate) async fn reader(&self) -> Result<Option<SharedPg>, StorageError> {
        let readers = &self.inner.readers;
        if readers.used == 0 {
            return Ok(None);
        }
        let turn = readers
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % readers.used;
        let (Some(slot), Some(filling)) = (readers.slots.get(turn), readers.filling.get(turn))
        else {
            return Ok(None);
        };
        let kept = || lock(slot).as_ref().map(std::sync::Arc::clone);
        if let Some(shared) = kept() {
            return Ok(Some(shared));
        }
        let _filling = filling.lock().await;
        if let Some(shared) = kept() {
            return Ok(Some(shared));
        }
        let Conn::Postgres(mut conn) = self.acquire().await? else {
            return Ok(None);
        };
        // Point reads ask for a list of ids (`= ANY($1)`), as many as are
        // queued. PostgreSQL's default (`auto`) plans such a statement
        // afresh for every execution when its first ones had few ids, at
        // about half the rate of reusing the one generic plan, which for a
        // primary-key lookup is as good as any (docs/benchmarks.md).
        if let Err(error) = conn
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
        {
            tracing::warn!(%error, "could not set plan_cache_mode on a shared reader (PostgreSQL 12 or later has it); point reads may be slower");
        }
        let shared = std::sync::Arc::new(conn);
        *lock(slot) = Some(std::sync::Arc::clone(&shared));
        Ok(Some(shared))
    }

    /// Order lookups by id, folded into one statement per batch on the
    /// shared readers (as many batches in flight as there are readers):
    /// `None` where [`Self::reader`] has no connection to share.
    pub(crate) fn order_reads(&self) -> Option<&std::sync::Arc<crate::orders::OrderReads>> {
        self.inner.order_reads.as_ref()
    }

    /// Batched order lookups so far (PostgreSQL; zeros on SQLite): the
    /// statements run, and the distinct ids they asked for. Their ratio is
    /// the mean batch size.
    pub fn order_read_batches(&self) -> (u64, u64) {
        self.order_reads().map_or((0, 0), |reads| reads.counts())
    }

    /// Stops sharing `broken` (a read on it failed); it returns to the pool,
    /// which checks it, once its last reader is done.
    pub(crate) fn drop_reader(&self, broken: &SharedPg) {
        for slot in &self.inner.readers.slots {
            let mut kept = lock(slot);
            if kept
                .as_ref()
                .is_some_and(|k| std::sync::Arc::ptr_eq(k, broken))
            {
                *kept = None;
            }
        }
    }

    /// `operation` bounded by the operation budget.
    pub(crate) async fn timed<T>(
        &self,
        operation: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let budget = self.inner.config.operation_timeout;
        tokio::time::timeout(budget, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "no answer within {budget:?}"
                )))
            })
    }

    /// Runs a write on its own task, which owns the connection.
    ///
    /// If the caller is cancelled (client deadline, dropped request) the task
    /// still runs the transaction to its commit or rollback, so a connection
    /// never goes back to the pool with a transaction open, and a write is
    /// either wholly applied or not at all. (The pool also discards any
    /// connection whose transaction manager reports an open transaction.)
    ///
    /// The budget splits the failure in two. Before the task starts (no
    /// connection within the budget) nothing was sent: `Unavailable`, safe to
    /// retry. Once it has started, a budget that runs out leaves the task
    /// running to its end, so the write may still commit: `OutcomeUnknown`,
    /// which only an idempotent write may retry blindly.
    pub(crate) async fn write<T, F, Fut>(&self, work: F) -> Result<T, StorageError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        self.write_within(work, true).await
    }

    /// [`Self::write`], except that once the task has started it is awaited
    /// to its end: the answer is always the write's real outcome (but for a
    /// runtime shutting down). For a caller that must know whether the
    /// write landed before it goes on (the event log's writer); its own
    /// callers keep their deadlines.
    pub(crate) async fn write_to_end<T, F, Fut>(&self, work: F) -> Result<T, StorageError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        self.write_within(work, false).await
    }

    async fn write_within<T, F, Fut>(&self, work: F, bounded: bool) -> Result<T, StorageError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        let budget = self.inner.config.operation_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let conn = tokio::time::timeout_at(deadline, self.acquire())
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "no connection within {budget:?}"
                )))
            })?;
        let task = tokio::spawn(work(conn));
        let finished = if bounded {
            tokio::time::timeout_at(deadline, task).await
        } else {
            Ok(task.await)
        };
        match finished {
            Ok(Ok(result)) => result,
            Ok(Err(join)) if join.is_panic() => {
                tracing::error!("a storage write panicked; the transaction was rolled back");
                Err(StorageError::Internal(
                    "the write failed unexpectedly".to_owned(),
                ))
            }
            // Only a runtime shutting down cancels the task: it may have
            // committed before it was stopped.
            Ok(Err(join)) => Err(StorageError::OutcomeUnknown(format!(
                "the write task was cancelled: {join}"
            ))),
            Err(_) => Err(StorageError::OutcomeUnknown(format!(
                "the write was sent but not confirmed within {budget:?}"
            ))),
        }
    }

    /// Inserts `rows` into `target` in one write transaction (in chunks of
    /// [`ROWS_PER_INSERT`]): all of them are stored, in order, or none.
    ///
    /// Idempotent per `write`: the id is claimed in `applied_writes` in the
    /// same transaction, and an attempt that finds it claimed stores nothing
    /// and says where the earlier one went. A repeat after
    /// [`StorageError::OutcomeUnknown`] is therefore safe; if the first
    /// attempt is still in flight, the repeat waits for it on the id's key
    /// (PostgreSQL) or the write lock (SQLite).
    pub(crate) async fn insert_all<R>(
        &self,
        write: WriteId,
        target: &'static str,
        rows: Vec<R>,
    ) -> Result<Written, StorageError>
    where
        R: Send + 'static,
        AsyncPgConnection: InsertRows<R>,
        SqliteConn: InsertRows<R>,
    {
        self.insert_all_within(write, target, rows, true).await
    }

    /// [`Self::insert_all`], bounded by the operation budget or not
    /// (`bounded: false`: the answer is the write's real outcome however
    /// long it takes, for an import of a large file whose caller waits).
    pub(crate) async fn insert_all_within<R>(
        &self,
        write: WriteId,
        target: &'static str,
        rows: Vec<R>,
        bounded: bool,
    ) -> Result<Written, StorageError>
    where
        R: Send + 'static,
        AsyncPgConnection: InsertRows<R>,
        SqliteConn: InsertRows<R>,
    {
        let write_id = write.to_string();
        self.write_within(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                let claimed = diesel::insert_into(applied_writes::table)
                    .values((
                        applied_writes::write_id.eq(&write_id),
                        applied_writes::target.eq(target),
                        applied_writes::applied_at.eq(Utc::now().naive_utc()),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await?;
                if claimed == 0 {
                    let earlier: String = applied_writes::table
                        .find(&write_id)
                        .select(applied_writes::target)
                        .first(c)
                        .await?;
                    tracing::debug!(%write_id, %earlier, "write already applied; stored nothing");
                    return Ok(if earlier == target {
                        Written::AlreadyStored
                    } else {
                        Written::StoredElsewhere
                    });
                }
                for chunk in chunked(rows) {
                    c.insert_rows(chunk).await?;
                }
                Ok::<_, StorageError>(Written::Stored)
            })
        }, bounded)
        .await
    }

    /// Forgets the write ids recorded more than `age` ago, so
    /// `applied_writes` stays small; returns how many. A write id is only
    /// repeated by its writer's retries (seconds apart), so any age of
    /// minutes keeps every repeat recognised. The server calls this
    /// periodically.
    pub async fn forget_applied_writes(
        &self,
        age: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let age = chrono::Duration::from_std(age)
            .map_err(|e| StorageError::Internal(format!("write-id age out of range: {e}")))?;
        let before = (Utc::now() - age).naive_utc();
        self.write(move |mut conn| async move {
            with_conn!(&mut conn, |c| {
                diesel::delete(applied_writes::table.filter(applied_writes::applied_at.lt(before)))
                    .execute(c)
                    .await
            })
            .map_err(StorageError::from)
        })
        .await
    }

    /// Runs `sql` on a pooled connection. Used by tests and tools that need
    /// to look at the database directly.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            with_conn!(&mut conn, |c| c.batch_execute(sql).await)?;
            Ok(())
        })
        .await
    }
}

/// What an idempotent batch write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The rows were stored now.
    Stored,
    /// An earlier attempt with the same write id stored them here.
    AlreadyStored,
    /// An earlier write with the same id went to the other store (the event
    /// append this dead-letter write stood in for did commit after all).
    StoredElsewhere,
}

/// Rows per INSERT statement: SQLite binds at most 32,766 parameters.
const ROWS_PER_INSERT: usize = 1_000;

/// `rows` in owned chunks of at most [`ROWS_PER_INSERT`]; none for none.
/// Each chunk holds only its own rows: `Vec::split_off` would leave every
/// chunk with the capacity of all the rows after it, memory quadratic in
/// the rows (a 20 MB import took 1.7 GB).
pub(crate) fn chunked<R>(rows: Vec<R>) -> Vec<Vec<R>> {
    chunked_within(rows, ROWS_PER_INSERT, usize::MAX, |_| 0)
}

/// `rows` in owned chunks, as [`chunked`], of at most `max_rows` rows (at
/// least 1) whose `bytes` add up to at most `max_bytes`; a row larger than
/// that goes in a chunk of its own.
pub(crate) fn chunked_within<R>(
    rows: Vec<R>,
    max_rows: usize,
    max_bytes: usize,
    bytes: impl Fn(&R) -> usize,
) -> Vec<Vec<R>> {
    let max_rows = max_rows.max(1);
    let mut lengths = Vec::new();
    let (mut len, mut used) = (0_usize, 0_usize);
    for row in &rows {
        let size = bytes(row);
        if len == max_rows || (len > 0 && used.saturating_add(size) > max_bytes) {
            lengths.push(len);
            (len, used) = (0, 0);
        }
        len += 1;
        used = used.saturating_add(size);
    }
    if len > 0 {
        lengths.push(len);
    }
    // `take` knows its length, so each chunk is allocated at its size.
    let mut rows = rows.into_iter();
    lengths
        .into_iter()
        .map(|len| rows.by_ref().take(len).collect())
        .collect()
}

fn pool_builder<M>(
    config: &StoreConfig,
    errors: &tokio::sync::watch::Sender<Option<StorageError>>,
) -> bb8::Builder<M>
where
    M: bb8::ManageConnection<Error = diesel_async::pooled_connection::PoolError>,
{
    bb8::Pool::builder()
        .max_size(config.max_connections.max(1))
        // A failed connect is reported (see `ConnectErrors`) and the next
        // caller tries afresh, instead of bb8 retrying behind callers' backs.
        .retry_connection(false)
        .error_sink(Box::new(ConnectErrors(errors.clone())))
        .min_idle(Some(0))
        .connection_timeout(config.acquire_timeout)
        // Keep a connection that was fine when returned; `has_broken` still
        // drops any with an open transaction. Ping-on-checkout would add a
        // round trip to every query.
        .test_on_check_out(false)
}

#[cfg(test)]
mod tests;
