//! Start-up: what must hold before anything serves. Settings read and
//! checked (the pipeline file, TLS files, the credentials files, the
//! metrics listener, the gRPC listener), then the database connected, retrying only an unreachable
//! one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use grpc_api::auth::Authority;
use storage::{Database, StorageError, StoreConfig};
use tokio::net::TcpListener;
use transform_engine::PipelineSpec;

use crate::config::Settings;

/// What start-up hands to the wiring.
pub(super) struct Started {
    pub(super) pipeline: PipelineSpec,
    pub(super) tls: Option<tonic::transport::ServerTlsConfig>,
    /// Who may call what, and the watch that reloads it.
    pub(super) authority: (Arc<Authority>, crate::credentials::Watch),
    pub(super) listener: TcpListener,
    pub(super) db: Database,
    /// One server per SQLite database, held until the process ends
    /// (`storage::backup`); `None` on PostgreSQL.
    pub(super) _hold: Option<storage::backup::DatabaseHold>,
}

/// Reads and checks the settings, binds the listeners, connects.
pub(super) async fn start(settings: &Settings) -> anyhow::Result<Started> {
    let pipeline = match &settings.pipeline {
        Some(path) => PipelineSpec::from_file(path)?,
        None => PipelineSpec::default(),
    };
    // Read before anything starts: a bad file fails at once, naming it.
    let tls = crate::tls::server(settings, *settings.handshake_timeout)?;
    let authority = crate::credentials::Files::new(settings).load()?;
    crate::telemetry::metrics(settings.metrics_listen)?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let db = connect(settings, Open::CreateIfMissing).await?;
    // After connecting, which checked the path (and created the file).
    let hold =
        storage::backup::hold(&store_config(settings)).map_err(|e| database_error(settings, e))?;
    Ok(Started {
        pipeline,
        tls,
        authority,
        listener,
        db,
        _hold: hold,
    })
}

/// The database settings these flags describe.
pub fn store_config(settings: &Settings) -> StoreConfig {
    let mut config =
        StoreConfig::new(settings.database_url.clone()).with_budget(*settings.db_timeout);
    if let Some(size) = settings.db_pool_size {
        config.max_connections = size;
    }
    config
}

/// How start-up opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create a SQLite file that is not there (serving, `migrate`, import).
    CreateIfMissing,
    /// Read only, no migrations (`events export`): the database must
    /// exist, and may be a read-only file or a hot standby.
    ReadOnly,
}

/// Connects (and but for [`Open::ReadOnly`] migrates), retrying an unreachable database with backoff for
/// up to `startup_timeout`. A configuration that can never work (see
/// [`StorageError::Misconfigured`]) fails at once, naming the setting.
pub async fn connect(settings: &Settings, open: Open) -> anyhow::Result<Database> {
    let config = store_config(settings);
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = match open {
            Open::CreateIfMissing => Database::connect(config.clone()).await,
            Open::ReadOnly => Database::connect_read_only(config.clone()).await,
        };
        match attempt {
            Ok(db) => return Ok(db),
            Err(StorageError::Unavailable(reason))
                if started.elapsed() + delay < *settings.startup_timeout =>
            {
                tracing::warn!(%reason, retry_in = ?delay, "database unreachable at start-up; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error @ StorageError::Misconfigured(_)) => {
                return Err(database_error(settings, error));
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot open the database (gave up after {:?})",
                        started.elapsed()
                    )
                });
            }
        }
    }
}

/// A storage error as one line for the operator: a configuration that can
/// never work names the setting (the password redacted).
pub fn database_error(settings: &Settings, error: StorageError) -> anyhow::Error {
    match error {
        StorageError::Misconfigured(reason) => anyhow::anyhow!(
            "--database-url / DATABASE_URL ({}): {reason}",
            redact_password(&settings.database_url)
        ),
        other => anyhow::Error::new(other),
    }
}

/// `url` with any password replaced by `***`, fit for an error message.
fn redact_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
