//! Online backup and restore of an SQLite database (`orderflow backup`,
//! `orderflow restore`), and the lock that tells a restore a server holds
//! the database.
//!
//! A backup is `VACUUM INTO`: it reads the database in one read transaction
//! (a consistent snapshot: every write committed before it began is in the
//! copy) while writers go on in WAL mode, and writes a compact copy that is
//! a database of its own, not a file copy of pages mid-write. Its progress
//! is the copy's size against the source's. The copy is checked with
//! `PRAGMA integrity_check` before the backup counts as done.
//!
//! A serving process holds an exclusive lock on `<database>.lock` (an OS
//! file lock, released when the process ends, however it ends); a restore
//! takes the same lock first, so it refuses a database a server holds and
//! no server starts on one being restored. PostgreSQL has its own tools
//! (`pg_dump`, `pg_basebackup`); these work on SQLite only.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, RunQueryDsl as _, SqliteConnection};

use crate::StorageError;
use crate::config::{Backend, StoreConfig};

/// Where a backup stands: bytes written of about how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupProgress {
    /// Bytes of the copy written so far.
    pub written: u64,
    /// The source's size (the copy is at most this: it leaves free pages
    /// out).
    pub total: u64,
}

/// What a finished backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDone {
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// The exclusive hold a serving process keeps on its SQLite database (see
/// the module documentation); released when dropped or when the process
/// ends.
#[derive(Debug)]
pub struct DatabaseHold {
    _file: File,
}

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

fn sqlite_only(config: &StoreConfig, what: &str) -> Result<PathBuf, StorageError> {
    match config.backend() {
        Backend::Postgres => Err(StorageError::Misconfigured(format!(
            "{what} works on SQLite only; for PostgreSQL use its own tools: \
             pg_dump (a logical copy) or pg_basebackup (a physical one, with WAL archiving \
             for point-in-time recovery)"
        ))),
        Backend::Sqlite => Ok(PathBuf::from(config.sqlite_path())),
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the serving hold on `config`'s SQLite database: fails, naming the
/// lock file, if another process holds it (a server, or a restore). `None`
/// on PostgreSQL, where any number of replicas serve one database.
pub fn hold(config: &StoreConfig) -> Result<Option<DatabaseHold>, StorageError> {
    let path = config.sqlite_path();
    if config.backend() != Backend::Sqlite || path.starts_with("file:") || path == ":memory:" {
        return Ok(None);
    }
    let lock = lock_path(Path::new(config.sqlite_path()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| StorageError::Misconfigured(format!("cannot open {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(DatabaseHold { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Misconfigured(format!(
            "another process holds {} (a running server, or a restore): one server per SQLite \
             database",
            lock.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::Misconfigured(format!(
            "cannot lock {}: {e}",
            lock.display()
        ))),
    }
}

/// Writes a consistent copy of `config`'s SQLite database to `to` (which
/// must not exist) while the server goes on writing, calling `progress`
/// about every `every` until done; checks the copy's integrity.
pub async fn backup(
    config: &StoreConfig,
    to: &Path,
    every: Duration,
    progress: impl Fn(BackupProgress) + Send + 'static,
) -> Result<BackupDone, StorageError> {
    let source = sqlite_only(config, "backup")?;
    if !source.exists() {
        return Err(StorageError::Misconfigured(format!(
            "no SQLite database at {}",
            source.display()
        )));
    }
    if to.exists() {
        return Err(StorageError::Misconfigured(format!(
            "{} exists; a backup never overwrites: choose a new name",
            to.display()
        )));
    }
    let to = to.to_owned();
    tokio::task::spawn_blocking(move || backup_blocking(&source, &to, every, progress))
        .await
        .map_err(|e| StorageError::Internal(format!("the backup task failed: {e}")))?
}

fn backup_blocking(
    source: &Path,
    to: &Path,
    every: Duration,
    progress: impl Fn(BackupProgress) + Send + 'static,
) -> Result<BackupDone, StorageError> {
    let mut conn = SqliteConnection::establish(&source.display().to_string())?;
    conn.batch_execute("PRAGMA busy_timeout = 5000;")?;
    let pages: Number = diesel::sql_query(
        "SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()",
    )
    .get_result(&mut conn)?;
    let total = u64::try_from(pages.n).unwrap_or(0);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watched = to.to_owned();
    let reporter = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
            let written = std::fs::metadata(&watched).map_or(0, |m| m.len());
            progress(BackupProgress { written, total });
        }
    });
    let target = to.display().to_string().replace('\'', "''");
    let vacuumed = conn.batch_execute(&format!("VACUUM INTO '{target}'"));
    drop(done);
    let _ = reporter.join();
    vacuumed?;
    check_integrity(to)?;
    let bytes = std::fs::metadata(to).map_or(0, |m| m.len());
    Ok(BackupDone {
        bytes,
        path: to.to_owned(),
    })
}

/// `PRAGMA integrity_check` of the database at `path`, read only.
fn check_integrity(path: &Path) -> Result<(), StorageError> {
    let uri = crate::db::read_only_uri(&path.display().to_string());
    let mut conn = SqliteConnection::establish(&uri)?;
    let lines: Vec<Line> = diesel::sql_query("PRAGMA integrity_check").load(&mut conn)?;
    match lines.as_slice() {
        [line] if line.integrity_check == "ok" => Ok(()),
        _ => Err(StorageError::Misconfigured(format!(
            "{} fails SQLite's integrity check: {}",
            path.display(),
            lines
                .iter()
                .take(5)
                .map(|l| l.integrity_check.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// Puts the backup `from` in place of `config`'s SQLite database: checks it
/// (integrity, and that it is an orderflow database), takes the serving
/// hold (refusing while a server holds the database), moves the current
/// database aside (returned) and copies the backup in. A database at a
/// newer schema than the backup is migrated forward by the next start.
pub fn restore(config: &StoreConfig, from: &Path) -> Result<Option<PathBuf>, StorageError> {
    let database = sqlite_only(config, "restore")?;
    check_integrity(from)?;
    let uri = crate::db::read_only_uri(&from.display().to_string());
    let mut conn = SqliteConnection::establish(&uri)?;
    let tables: Number = diesel::sql_query(
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN ('orders', 'events')",
    )
    .get_result(&mut conn)?;
    drop(conn);
    if tables.n != 2 {
        return Err(StorageError::Misconfigured(format!(
            "{} is not an orderflow database (no orders and events tables)",
            from.display()
        )));
    }
    let _hold = hold(config)?;
    let staged = sibling(&database, ".restoring");
    std::fs::copy(from, &staged).map_err(|e| io("copy the backup", &staged, &e))?;
    File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", &staged, &e))?;
    let aside = if database.exists() {
        let aside = sibling(
            &database,
            &format!(".replaced-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")),
        );
        std::fs::rename(&database, &aside).map_err(|e| io("move aside", &database, &e))?;
        Some(aside)
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        let stale = sibling(&database, suffix);
        if stale.exists() {
            let kept = aside
                .as_ref()
                .map_or_else(|| sibling(&stale, ".stale"), |a| sibling(a, suffix));
            std::fs::rename(&stale, &kept).map_err(|e| io("move aside", &stale, &e))?;
        }
    }
    std::fs::rename(&staged, &database).map_err(|e| io("put in place", &database, &e))?;
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", dir, &e))?;
    }
    Ok(aside)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> StorageError {
    StorageError::Internal(format!("cannot {what} {}: {e}", path.display()))
}
