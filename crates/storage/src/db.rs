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
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::StorageError;
use crate::migrate;

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

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`
    Postgres,
    /// Anything else: a file path, `sqlite://path` or `file:` URI.
    Sqlite,
}

impl Backend {
    /// The backend `url` selects.
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How to reach the database and how long to wait for it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…` for PostgreSQL; otherwise a SQLite path.
    pub url: String,
    /// Pool size: the most connections (and, for SQLite, blocking threads)
    /// in use at once. Callers beyond it wait up to `acquire_timeout`.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection (which includes
    /// connecting) before the operation fails as `Unavailable`.
    pub acquire_timeout: Duration,
    /// Budget for a whole operation, connection included: a dead or hung
    /// database fails the call in this time instead of hanging it.
    pub operation_timeout: Duration,
}

impl StoreConfig {
    /// Defaults sized for a 2-core instance: 8 PostgreSQL connections (the
    /// database does the work; more only queue there), 4 SQLite connections
    /// (one writer at a time anyway, readers in parallel under WAL).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let max_connections = match Backend::of(&url) {
            Backend::Postgres => 8,
            Backend::Sqlite => 4,
        };
        Self {
            url,
            max_connections,
            acquire_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(5),
        }
    }

    /// The backend the URL selects.
    pub fn backend(&self) -> Backend {
        Backend::of(&self.url)
    }

    /// The URL SQLite's driver understands (`sqlite://x.db` → `x.db`).
    pub(crate) fn sqlite_path(&self) -> &str {
        self.url.strip_prefix("sqlite://").unwrap_or(&self.url)
    }
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
/// SQLite inserts (sync diesel emulates them per row, and rows with absent
/// optional values need that emulation), so on SQLite the batch runs as sync
/// diesel in a single blocking-pool hop, inside the caller's transaction.
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

enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// A handle to the database: cheap to clone, shared by every repository.
#[derive(Clone)]
pub struct Database {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pools: Pools,
    config: StoreConfig,
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
    pub async fn connect(config: StoreConfig) -> Result<Self, StorageError> {
        migrate::run(&config).await?;
        Ok(Self::open(config))
    }

    /// Opens the pool without migrating. Connections are made on demand, so
    /// this succeeds even while the database is down; calls then fail as
    /// `Unavailable` within `acquire_timeout`.
    pub fn open(config: StoreConfig) -> Self {
        let pools = match config.backend() {
            Backend::Postgres => {
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new(config.url.clone());
                Pools::Postgres(pool_builder(&config).build_unchecked(manager))
            }
            Backend::Sqlite => {
                let mut setup = ManagerConfig::<SqliteConn>::default();
                setup.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let manager =
                    AsyncDieselConnectionManager::new_with_config(config.sqlite_path(), setup);
                Pools::Sqlite(pool_builder(&config).build_unchecked(manager))
            }
        };
        Self {
            inner: std::sync::Arc::new(Inner { pools, config }),
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

    /// A round trip through the same pool the repositories use: what health
    /// checks should call.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.timed(async {
            let mut conn = self.acquire().await?;
            let query = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"));
            let one: i32 = with_conn!(&mut conn, |c| query.get_result(c).await)?;
            if one == 1 {
                Ok(())
            } else {
                Err(StorageError::Internal(format!("SELECT 1 returned {one}")))
            }
        })
        .await
    }

    /// A pooled connection, or `Unavailable` after `acquire_timeout`.
    pub(crate) async fn acquire(&self) -> Result<Conn, StorageError> {
        Ok(match &self.inner.pools {
            Pools::Postgres(pool) => Conn::Postgres(pool.get_owned().await?),
            Pools::Sqlite(pool) => Conn::Sqlite(pool.get_owned().await?),
        })
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
    pub(crate) async fn write<T, F, Fut>(&self, work: F) -> Result<T, StorageError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        self.timed(async {
            let conn = self.acquire().await?;
            match tokio::spawn(work(conn)).await {
                Ok(result) => result,
                Err(join) if join.is_panic() => {
                    tracing::error!("a storage write panicked; the transaction was rolled back");
                    Err(StorageError::Internal(
                        "the write failed unexpectedly".to_owned(),
                    ))
                }
                Err(join) => Err(StorageError::Unavailable(format!(
                    "the write task was cancelled: {join}"
                ))),
            }
        })
        .await
    }

    /// Inserts `rows` in one write transaction (in chunks of
    /// [`ROWS_PER_INSERT`]): all of them are stored, in order, or none.
    pub(crate) async fn insert_all<R>(&self, rows: Vec<R>) -> Result<(), StorageError>
    where
        R: Send + 'static,
        AsyncPgConnection: InsertRows<R>,
        SqliteConn: InsertRows<R>,
    {
        self.write(move |mut conn| async move {
            write_transaction!(&mut conn, |c| {
                for chunk in chunked(rows) {
                    c.insert_rows(chunk).await?;
                }
                Ok::<_, StorageError>(())
            })
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

/// Rows per INSERT statement: SQLite binds at most 32,766 parameters.
const ROWS_PER_INSERT: usize = 1_000;

/// `rows` in owned chunks of at most [`ROWS_PER_INSERT`].
fn chunked<R>(mut rows: Vec<R>) -> Vec<Vec<R>> {
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(ROWS_PER_INSERT));
    while rows.len() > ROWS_PER_INSERT {
        let rest = rows.split_off(ROWS_PER_INSERT);
        chunks.push(std::mem::replace(&mut rows, rest));
    }
    chunks.push(rows);
    chunks
}

fn pool_builder<M: bb8::ManageConnection>(config: &StoreConfig) -> bb8::Builder<M> {
    bb8::Pool::builder()
        .max_size(config.max_connections.max(1))
        .min_idle(Some(0))
        .connection_timeout(config.acquire_timeout)
        // Keep a connection that was fine when returned; `has_broken` still
        // drops any with an open transaction. Ping-on-checkout would add a
        // round trip to every query.
        .test_on_check_out(false)
}
