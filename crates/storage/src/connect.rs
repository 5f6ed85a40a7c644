//! Opening connections, and telling a database that is away from a
//! configuration that can never work.
//!
//! A refused connection or a failed DNS lookup is transient (the database
//! may come back): [`StorageError::Unavailable`]. "database does not
//! exist", an unknown role, failed authentication, a malformed URL, or a
//! SQLite path that cannot hold a database are permanent:
//! [`StorageError::Misconfigured`], which start-up, `migrate` and the
//! operator commands report at once, naming the setting, instead of
//! retrying. diesel's connection error carries only text, so the class
//! rides in its variant: `InvalidConnectionUrl` for permanent, anything else
//! for transient (see the `From` impl in `error.rs`).

use std::path::Path;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use tokio_postgres::error::SqlState;

use crate::StorageError;
use crate::tls::PgTarget;

/// SQLSTATEs a retry cannot fix: the database, role or password is wrong.
const PERMANENT: [SqlState; 4] = [
    SqlState::INVALID_CATALOG_NAME,
    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
    SqlState::INVALID_PASSWORD,
    SqlState::INSUFFICIENT_PRIVILEGE,
];

/// How long opening a PostgreSQL connection may take when the URL does not
/// say (`connect_timeout=`): a black-holed address fails in this time
/// instead of the operating system's TCP timeout.
pub const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to PostgreSQL at `url`, classifying a failure.
pub(crate) async fn postgres(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    Postgres::new(url).connect().await
}

/// A PostgreSQL URL parsed once, with its TLS connector, for a pool's
/// connections (building a TLS configuration reads the system's roots).
pub(crate) struct Postgres {
    target: Result<PgTarget, String>,
}

impl Postgres {
    /// Parses `url`; an error is reported by each [`Self::connect`].
    pub(crate) fn new(url: &str) -> Self {
        let target = PgTarget::parse(url).map(|mut target| {
            if target.config.get_connect_timeout().is_none() {
                target.config.connect_timeout(POSTGRES_CONNECT_TIMEOUT);
            }
            target
        });
        Self { target }
    }

    /// Opens one connection, classifying a failure: a URL, role, password
    /// or certificate that cannot work is `InvalidConnectionUrl`.
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let target = self
            .target
            .as_ref()
            .map_err(|e| ConnectionError::InvalidConnectionUrl(e.clone()))?;
        let (client, connection) =
            target
                .config
                .connect(target.tls.clone())
                .await
                .map_err(|e| {
                    let message = postgres_message(&e);
                    match e.code() {
                        Some(code) if PERMANENT.contains(code) => {
                            ConnectionError::InvalidConnectionUrl(message)
                        }
                        None if is_tls_refusal(&message) => ConnectionError::InvalidConnectionUrl(
                            format!("TLS: {message} (check sslmode and sslrootcert)"),
                        ),
                        _ => ConnectionError::BadConnection(message),
                    }
                })?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// A raw tokio-postgres connection (for `LISTEN`): the client, and the
/// connection to drive for its messages.
pub(crate) type RawConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream,
>;

impl Postgres {
    /// Opens one connection as tokio-postgres hands it out, classified as
    /// [`Self::connect`] does.
    pub(crate) async fn connect_raw(
        &self,
    ) -> Result<(tokio_postgres::Client, RawConnection), StorageError> {
        let target = self
            .target
            .as_ref()
            .map_err(|e| StorageError::Misconfigured(e.clone()))?;
        target
            .config
            .connect(target.tls.clone())
            .await
            .map_err(|e| StorageError::Unavailable(postgres_message(&e)))
    }
}

/// A certificate that failed verification, or a server without TLS under
/// `sslmode=require` or stricter: no retry changes either.
fn is_tls_refusal(message: &str) -> bool {
    message.contains("invalid peer certificate") || message.contains("server does not support TLS")
}

/// The server's own words where there are some ("database \"x\" does not
/// exist"), else the client library's ("Connection refused").
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}

/// Checks that `path` can hold a SQLite database before SQLite is asked to
/// open it: its directory exists and it is not itself a directory, and a
/// new database's directory is writable. With
/// `must_exist` (read-only commands such as `events export`), a missing file
/// is an error too, instead of an empty database created as a side effect.
pub(crate) fn check_sqlite_path(path: &str, must_exist: bool) -> Result<(), StorageError> {
    // `file:` URIs and `:memory:` are SQLite's to interpret.
    if path.starts_with("file:") || path == ":memory:" {
        return Ok(());
    }
    let file = Path::new(path);
    let misconfigured = |what: String| Err(StorageError::Misconfigured(what));
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_dir() => misconfigured(format!("{path} is a directory, not a file")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                misconfigured(format!("the directory {} does not exist", parent.display()))
            } else if must_exist {
                misconfigured(format!("no SQLite database at {path}"))
            } else {
                check_writable_dir(parent, path)
            }
        }
        Err(e) => misconfigured(format!("cannot use {path}: {e}")),
    }
}

/// SQLite creates a new database in `dir`, and its `-wal` and `-shm` files
/// beside it: in a directory this user cannot write, every attempt fails
/// the same way ("unable to open database file"), so it is a setting to
/// fix, not a database to wait for. Probed by creating and removing a file
/// there.
fn check_writable_dir(dir: &Path, path: &str) -> Result<(), StorageError> {
    let probe = dir.join(format!(".orderflow-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
    {
        Ok(_) => {
            // Only a stray empty file is left if this fails; nothing reads it.
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(StorageError::Misconfigured(format!(
            "cannot create the database {path}: the directory {} is not writable by this user ({e})",
            dir.display()
        ))),
    }
}
