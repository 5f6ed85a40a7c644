//! How to reach the database: [`StoreConfig`] and the [`Backend`] a URL
//! selects, with the defaults the `orderflow` flags take.

use std::time::Duration;

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

    /// The default pool size, sized for a 2-core instance: 8 PostgreSQL
    /// connections (the database does the work; more only queue there), 4
    /// SQLite connections (one writer at a time anyway, readers in parallel
    /// under WAL).
    pub fn default_pool_size(self) -> u32 {
        match self {
            Self::Postgres => 8,
            Self::Sqlite => 4,
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
    /// The default [`Self::operation_timeout`].
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
    /// The longest [`Self::acquire_timeout`] [`Self::with_budget`] picks.
    pub const MAX_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

    /// `url` with the backend's default pool size and the default budget.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let max_connections = Backend::of(&url).default_pool_size();
        Self {
            url,
            max_connections,
            acquire_timeout: Self::MAX_ACQUIRE_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// This configuration with `budget` per operation, and the wait for a
    /// connection derived from it (at most [`Self::MAX_ACQUIRE_TIMEOUT`], at
    /// least 100 ms) so a refused connection is reported within the budget.
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.operation_timeout = budget;
        self.acquire_timeout = budget
            .min(Self::MAX_ACQUIRE_TIMEOUT)
            .max(Duration::from_millis(100));
        self
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
