//! Test databases: a temp SQLite file, or a PostgreSQL schema of its own that
//! is dropped when the test ends.

use std::ops::Deref;
use std::time::Duration;

use storage::{Database, StoreConfig};

/// A migrated database that cleans up after itself.
pub struct TestDb {
    db: Database,
    config: StoreConfig,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres { base_url: String, schema: String },
}

impl Deref for TestDb {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

fn test_config(url: String) -> StoreConfig {
    let mut config = StoreConfig::new(url);
    // Generous: CI machines are slow, and these are not timing tests.
    config.operation_timeout = Duration::from_secs(20);
    config.acquire_timeout = Duration::from_secs(10);
    config
}

#[allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test support: set-up failures fail the test"
)]
impl TestDb {
    /// A migrated SQLite database in a temp directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path().join("orderflow.db").display().to_string());
        let db = Database::connect(config.clone()).await.unwrap();
        Self {
            db,
            config,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A migrated PostgreSQL schema of its own; `None` (test skipped, with a
    /// notice) when no PostgreSQL is configured, unless
    /// `ORDERFLOW_REQUIRE_POSTGRES=1`, which makes that a failure.
    pub async fn postgres() -> Option<Self> {
        let base_url = postgres_url()?;
        let schema = format!("orderflow_test_{}", rand::random::<u64>());
        Database::open(StoreConfig::new(base_url.clone()))
            .execute_raw(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let config = test_config(schema_url(&base_url, &schema));
        let db = Database::connect(config.clone()).await.unwrap();
        Some(Self {
            db,
            config,
            cleanup: Cleanup::Postgres { base_url, schema },
        })
    }

    /// The configuration, to open a second, independent pool on the same
    /// data (or to hand its URL to a process).
    pub fn config(&self) -> StoreConfig {
        self.config.clone()
    }

    /// The database URL (`DATABASE_URL` for the binary).
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The schema name on PostgreSQL (also the connections' application_name).
    pub fn postgres_schema(&self) -> Option<&str> {
        match &self.cleanup {
            Cleanup::Postgres { schema, .. } => Some(schema),
            Cleanup::Sqlite(_) => None,
        }
    }
}

/// The PostgreSQL URL for tests, or `None` to skip.
///
/// # Panics
/// When `ORDERFLOW_REQUIRE_POSTGRES=1` and no URL is configured.
#[allow(clippy::panic, reason = "test support: a required database is missing")]
pub fn postgres_url() -> Option<String> {
    match std::env::var("ORDERFLOW_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("ORDERFLOW_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("ORDERFLOW_REQUIRE_POSTGRES=1 but ORDERFLOW_TEST_DATABASE_URL is unset")
        }
        _ => {
            eprintln!("skipped: set ORDERFLOW_TEST_DATABASE_URL to run the PostgreSQL tests");
            None
        }
    }
}

/// `base_url` with every session confined to `schema` and named after it.
pub fn schema_url(base_url: &str, schema: &str) -> String {
    let separator = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{separator}options=-c%20search_path%3D{schema}&application_name={schema}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { base_url, schema } = &self.cleanup {
            let (base_url, schema) = (base_url.clone(), schema.clone());
            // Drop runs inside the test's runtime; clean up on a thread of
            // our own with its own runtime.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    Database::open(StoreConfig::new(base_url))
                        .execute_raw(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("warning: could not drop test schema: {dropped:?}");
            }
        }
    }
}
