//! Schema migrations, embedded in the binary and run at start-up (and by
//! `orderflow migrate`). Re-running is a no-op: diesel records applied
//! versions in `__diesel_schema_migrations`. [`status`] reads that record
//! without changing anything (`orderflow migrate --status`, a deploy gate).
//!
//! diesel's migration harness is synchronous, so it runs on tokio's blocking
//! pool (never on a worker, and on any runtime flavour: no `block_in_place`).
//! On PostgreSQL the whole run holds a session advisory lock, so instances
//! starting together migrate one after another and none serves a
//! half-migrated schema.

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StorageError;
use crate::config::{Backend, StoreConfig};

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// Advisory-lock key that serialises migrations ("orderflw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_6465_7266_6c77;

/// Applies every pending migration; returns how many were applied.
pub async fn run(config: &StoreConfig) -> Result<usize, StorageError> {
    let backend = config.backend();
    let work = async {
        let task = match backend {
            Backend::Postgres => {
                // Connected here, where a failure keeps its class (see
                // `connect.rs`), then driven synchronously by the harness.
                let conn = crate::connect::postgres(&config.url).await?;
                let conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                tokio::task::spawn_blocking(move || migrate_postgres(conn))
            }
            Backend::Sqlite => {
                let path = config.sqlite_path().to_owned();
                tokio::task::spawn_blocking(move || migrate_sqlite(&path))
            }
        };
        task.await
            .map_err(|e| StorageError::Internal(format!("migration task failed: {e}")))?
    };
    let applied = tokio::time::timeout(
        config
            .operation_timeout
            .max(std::time::Duration::from_secs(60)),
        work,
    )
    .await
    .map_err(|_| StorageError::Unavailable("migrations did not finish in time".to_owned()))??;
    if applied > 0 {
        tracing::info!(applied, ?backend, "applied database migrations");
    }
    Ok(applied)
}

fn migrate_postgres(
    mut conn: AsyncConnectionWrapper<AsyncPgConnection>,
) -> Result<usize, StorageError> {
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let result = apply(&mut conn, POSTGRES);
    // Closing the session releases the lock too; unlocking explicitly just
    // lets a waiting instance go on a little sooner.
    if let Err(e) = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")) {
        tracing::warn!(error = %e, "could not release the migration lock; closing the session releases it");
    }
    result
}

fn migrate_sqlite(path: &str) -> Result<usize, StorageError> {
    // Two connections switching a new file to WAL at once can get SQLITE_BUSY
    // without the busy handler being consulted (SQLite's deadlock avoidance),
    // so a locked start is retried a few times before it counts as an error.
    let mut attempt = 0u32;
    loop {
        match migrate_sqlite_once(path) {
            Err(StorageError::Unavailable(reason)) if attempt < 20 && reason.contains("locked") => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(
                    u64::from(attempt.min(10)) * 25,
                ));
            }
            result => return result,
        }
    }
}

fn migrate_sqlite_once(path: &str) -> Result<usize, StorageError> {
    let mut conn = SqliteConnection::establish(path)?;
    // The timeout first (so a concurrent opener waits instead of failing);
    // WAL is a property of the file, set before any table exists.
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;",
    )?;
    // SQLite's counterpart of the advisory lock: the whole run holds the
    // write lock (`BEGIN EXCLUSIVE`), so instances starting together on one
    // file migrate one after another and the later ones find nothing pending.
    conn.exclusive_transaction(|conn| apply(conn, SQLITE))
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<usize, StorageError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    conn.run_pending_migrations(migrations)
        .map(|applied| applied.len())
        .map_err(|e| StorageError::Internal(format!("migration failed: {e}")))
}

/// Which of the binary's migrations a database has applied, and which it
/// still lacks, by name (`2026-12-04-000003_events_expired`), oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Applied, by this binary's names.
    pub applied: Vec<String>,
    /// Not applied yet: `orderflow migrate` (or start-up) applies them.
    pub pending: Vec<String>,
}

/// Reads which migrations are applied, changing nothing: no migration runs,
/// no bookkeeping table is created, and a SQLite file that does not exist
/// is reported with every migration pending (and not created).
pub async fn status(config: &StoreConfig) -> Result<MigrationStatus, StorageError> {
    let (names, applied) = match config.backend() {
        Backend::Postgres => {
            let conn = crate::connect::postgres(&config.url).await?;
            let conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
            let applied = tokio::task::spawn_blocking(move || applied_postgres(conn))
                .await
                .map_err(|e| StorageError::Internal(format!("migration status failed: {e}")))??;
            (names_of::<diesel::pg::Pg>(&POSTGRES)?, applied)
        }
        Backend::Sqlite => {
            let path = config.sqlite_path().to_owned();
            let applied = if path.starts_with("file:") || std::path::Path::new(&path).exists() {
                tokio::task::spawn_blocking(move || applied_sqlite(&path))
                    .await
                    .map_err(|e| {
                        StorageError::Internal(format!("migration status failed: {e}"))
                    })??
            } else {
                Vec::new()
            };
            (names_of::<diesel::sqlite::Sqlite>(&SQLITE)?, applied)
        }
    };
    let (applied, pending) = names
        .into_iter()
        .partition(|(version, _)| applied.contains(version));
    let names = |list: Vec<(String, String)>| list.into_iter().map(|(_, name)| name).collect();
    Ok(MigrationStatus {
        applied: names(applied),
        pending: names(pending),
    })
}

/// (version, name) of every embedded migration, oldest first.
fn names_of<DB: diesel::backend::Backend>(
    migrations: &EmbeddedMigrations,
) -> Result<Vec<(String, String)>, StorageError> {
    let mut names: Vec<(String, String)> =
        diesel::migration::MigrationSource::<DB>::migrations(migrations)
            .map_err(|e| StorageError::Internal(format!("embedded migrations: {e}")))?
            .iter()
            .map(|m| (m.name().version().to_string(), m.name().to_string()))
            .collect();
    names.sort();
    Ok(names)
}

#[derive(diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

#[derive(diesel::QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

fn applied_postgres(
    mut conn: AsyncConnectionWrapper<AsyncPgConnection>,
) -> Result<Vec<String>, StorageError> {
    applied(
        &mut conn,
        "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present",
    )
}

fn applied_sqlite(path: &str) -> Result<Vec<String>, StorageError> {
    let mut conn = SqliteConnection::establish(&crate::db::read_only_uri(path))?;
    applied(
        &mut conn,
        "SELECT count(*) > 0 AS present FROM sqlite_master \
         WHERE type = 'table' AND name = '__diesel_schema_migrations'",
    )
}

/// The versions `__diesel_schema_migrations` records, none if `present`
/// (a query answering whether that table exists) says it does not.
fn applied<C>(conn: &mut C, present: &str) -> Result<Vec<String>, StorageError>
where
    C: Connection,
    for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, C, Present>
        + diesel::query_dsl::LoadQuery<'a, C, VersionRow>,
{
    use diesel::RunQueryDsl as _;
    let table: Present = diesel::sql_query(present).get_result(conn)?;
    if !table.present {
        return Ok(Vec::new());
    }
    let rows: Vec<VersionRow> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load(conn)?;
    Ok(rows.into_iter().map(|row| row.version).collect())
}
