//! The database event log's consumer lease: one process at a time consumes
//! the log in a database.
//!
//! Each process keeps its own backlog bound and counters over the batches
//! it appended and processes itself (transform-engine's `log::bound`), so
//! two processes consuming one database log would each see the other's
//! work as missing; and two commits of overlapping ranges would store
//! outputs twice. So a process that uses the database log holds a lease:
//! - **PostgreSQL**: a session advisory lock held on a connection of its
//!   own, kept alive by a query every [`HEARTBEAT`]. Its key is
//!   ([`LEASE_CLASS`], a hash of the schema), so deployments in separate
//!   schemas of one database do not contend. The lock ends with the
//!   session, so a killed holder frees it at once.
//! - **SQLite**: the serving process's exclusive lock on `<database>.lock`
//!   (`backup`) already makes it the only one; the lease is granted.
//!
//! [`Database::claim_log_lease`] waits for the lease up to a limit and then
//! answers [`Claim::Elsewhere`], naming whoever holds it. Once held, a lost connection is replaced
//! and the lock taken again; if another process took it meanwhile, the
//! lease is **lost** ([`LogLease::lost`]) and the holder must stop
//! consuming at once (the server exits). Commits carry their own fence too
//! (`Database::commit_log` stores only over the cursor it started from), so
//! a holder that has not yet noticed cannot store a range twice.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::StorageError;
use crate::config::Backend;
use crate::connect::Postgres;
use crate::db::Database;

/// First half of the consumer lease's advisory-lock key ("logl"); the
/// second is `hashtext(current_schema())`.
pub const LEASE_CLASS: i32 = 0x6c6f_676c;
/// How often the lease's connection proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat or a claim may take before the connection is
/// treated as gone.
const ANSWER: Duration = Duration::from_secs(5);
/// How often a claim asks again while another process holds the lease.
const RETRY: Duration = Duration::from_millis(250);

/// What a claim came to.
#[derive(Debug)]
pub enum Claim {
    /// The lease is this process's.
    Held(LogLease),
    /// Another process held it for the whole wait: who, as PostgreSQL
    /// knows its session.
    Elsewhere(String),
}

/// The consumer lease, held until this is dropped.
#[derive(Debug)]
pub struct LogLease {
    lost: watch::Receiver<Option<String>>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    /// A lease nobody can take (SQLite's) keeps its sender here: a
    /// closed channel would read as lost.
    _kept: Option<watch::Sender<Option<String>>>,
}

impl LogLease {
    /// Resolves when the lease is lost to another process, with what is
    /// known of the new holder; never, while it is held.
    pub async fn lost(&mut self) -> String {
        match self.lost.wait_for(Option::is_some).await {
            Ok(holder) => holder.clone().unwrap_or_default(),
            // The keeper is gone without saying (a panic): not held.
            Err(_) => "unknown (the lease's keeper stopped)".to_owned(),
        }
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }
}

impl Drop for LogLease {
    fn drop(&mut self) {
        // Closing its connection frees the lock.
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

impl Database {
    /// Takes the event log's consumer lease, waiting up to `wait` while
    /// another process holds it; past that, [`Claim::Elsewhere`] naming the
    /// holder (its `application_name`, address and backend pid). Failures
    /// to reach the database are retried within the same wait.
    pub async fn claim_log_lease(&self, wait: Duration) -> Result<Claim, StorageError> {
        if self.backend() == Backend::Sqlite {
            let (kept, lost) = watch::channel(None);
            return Ok(Claim::Held(LogLease {
                lost,
                keeper: None,
                _kept: Some(kept),
            }));
        }
        let postgres = Postgres::new(&self.config().url);
        let deadline = Instant::now() + wait;
        let mut said = Instant::now();
        loop {
            match try_lock(&postgres).await {
                Ok(Locked::Held(session)) => {
                    let (tell, lost) = watch::channel(None);
                    let keeper = tokio::spawn(keep(postgres, session, tell));
                    return Ok(Claim::Held(LogLease {
                        lost,
                        keeper: Some(keeper),
                        _kept: None,
                    }));
                }
                Ok(Locked::Taken(holder, _)) => {
                    if Instant::now() >= deadline {
                        return Ok(Claim::Elsewhere(holder));
                    }
                    if said.elapsed() >= Duration::from_secs(5) {
                        tracing::warn!(%holder, "waiting for the database event log's consumer lease");
                        said = Instant::now();
                    }
                }
                Err(StorageError::Misconfigured(message)) => {
                    return Err(StorageError::Misconfigured(message));
                }
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "cannot reach the database for the event log's lease; retrying");
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// A connection and the task that drives it.
struct Session {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    /// Its backend's pid (`pg_backend_pid()`).
    pid: i32,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

enum Locked {
    /// The lock is this session's.
    Held(Session),
    /// Another session holds it: who, and its backend's pid if known.
    Taken(String, Option<i32>),
}

/// One attempt: a new connection, `pg_try_advisory_lock`.
async fn try_lock(postgres: &Postgres) -> Result<Locked, StorageError> {
    let attempt = async {
        let (client, connection) = postgres.connect_raw().await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "event log lease connection ended");
            }
        });
        let mut session = Session {
            client,
            driver,
            pid: 0,
        };
        let row = session
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema())), pg_backend_pid()",
                &[&LEASE_CLASS],
            )
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let held: bool = row
            .try_get(0)
            .map_err(|e| StorageError::Internal(e.to_string()))?;
        session.pid = row
            .try_get(1)
            .map_err(|e| StorageError::Internal(e.to_string()))?;
        if held {
            return Ok(Locked::Held(session));
        }
        let (holder, pid) = holder(&session.client).await;
        Ok(Locked::Taken(holder, pid))
    };
    tokio::time::timeout(ANSWER, attempt)
        .await
        .map_err(|_| StorageError::Unavailable(format!("no answer within {ANSWER:?}")))?
}

/// Who holds the lock, as PostgreSQL knows the session, and its pid.
async fn holder(client: &tokio_postgres::Client) -> (String, Option<i32>) {
    // A two-part key is kept as classid and objid, with objsubid 2.
    let row = client
        .query_opt(
            "SELECT a.application_name, host(a.client_addr), a.pid \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid = $1::int4::oid AND l.objid = hashtext(current_schema())::oid \
             LIMIT 1",
            &[&LEASE_CLASS],
        )
        .await;
    match row {
        Ok(Some(row)) => {
            let name: Option<String> = row.try_get(0).ok().flatten();
            let address: Option<String> = row.try_get(1).ok().flatten();
            let pid: Option<i32> = row.try_get(2).ok();
            let holder = format!(
                "application {:?}, from {}, backend pid {}",
                name.unwrap_or_default(),
                address.unwrap_or_else(|| "a local socket".to_owned()),
                pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
            );
            (holder, pid)
        }
        Ok(None) => ("a session that has just let go of it".to_owned(), None),
        Err(error) => (format!("unknown: {error}"), None),
    }
}

/// Keeps the lease: a heartbeat on its session; a session that fails is
/// replaced and the lock taken again, until another process has it.
async fn keep(postgres: Postgres, mut session: Session, lost: watch::Sender<Option<String>>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        heartbeat.tick().await;
        let alive = tokio::time::timeout(ANSWER, session.client.simple_query("SELECT 1")).await;
        if matches!(alive, Ok(Ok(_))) {
            continue;
        }
        tracing::warn!("the event log lease's connection failed; taking the lease again");
        session = loop {
            match try_lock(&postgres).await {
                Ok(Locked::Held(session)) => {
                    tracing::info!("event log lease taken again");
                    break session;
                }
                // The session this process holds it by is alive on the
                // database's side (a connection cut in between, not
                // closed): nobody else can take the lock meanwhile.
                Ok(Locked::Taken(_, Some(pid))) if pid == session.pid => {
                    let alive =
                        tokio::time::timeout(ANSWER, session.client.simple_query("SELECT 1")).await;
                    if matches!(alive, Ok(Ok(_))) {
                        tracing::info!("the event log lease's connection answers again");
                        break session;
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Locked::Taken(holder, _)) => {
                    tracing::error!(%holder, "the event log's consumer lease was taken by another process");
                    let _ = lost.send(Some(holder));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take the event log's lease again yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
    }
}
