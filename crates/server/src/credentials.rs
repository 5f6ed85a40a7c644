//! The credentials files: read at start (a file that cannot be read or
//! parsed stops start-up, naming its setting), then watched. SIGHUP, or a
//! change of either file's contents (checked every [`POLL`]), reloads both;
//! a version that does not parse keeps the previous one and logs an error.
//!
//! Polling the contents, rather than watching the files with inotify,
//! follows every way a file gets replaced: an editor's rename, a Kubernetes
//! Secret's symlink swap, a file on a network mount, where file events are
//! missed or arrive for the wrong path. Two small files read twice a second
//! cost nothing worth measuring.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use grpc_api::auth::{Authority, Credentials, File, JwtRules, Sources};

use crate::config::Settings;

/// How often the files are read to see whether they changed.
pub const POLL: Duration = Duration::from_millis(500);

/// Where the credentials come from.
#[derive(Debug, Clone)]
pub struct Files {
    token: Option<String>,
    credentials: Option<PathBuf>,
    jwks: Option<PathBuf>,
    rules: JwtRules,
}

/// The files' contents at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Texts {
    credentials: Option<String>,
    jwks: Option<String>,
}

impl Files {
    /// The sources `settings` name.
    pub fn new(settings: &Settings) -> Self {
        Self {
            token: settings.auth_token.clone(),
            credentials: settings.credentials.clone(),
            jwks: settings.jwt_jwks.clone(),
            rules: JwtRules {
                issuer: settings.jwt_issuer.clone(),
                audience: settings.jwt_audience.clone(),
            },
        }
    }

    fn read(&self) -> anyhow::Result<Texts> {
        let read = |path: &Option<PathBuf>, setting: &str| {
            path.as_deref()
                .map(|path| read_text(path, setting))
                .transpose()
        };
        Ok(Texts {
            credentials: read(&self.credentials, "--credentials / ORDERFLOW_CREDENTIALS")?,
            jwks: read(&self.jwks, "--jwt-jwks / ORDERFLOW_JWT_JWKS")?,
        })
    }

    fn sources<'a>(&'a self, texts: &'a Texts) -> Sources<'a> {
        Sources {
            token: self.token.as_deref(),
            credentials: texts.credentials.as_deref(),
            jwks: texts.jwks.as_deref(),
            rules: self.rules.clone(),
        }
    }

    /// Whether anything is watched.
    fn watched(&self) -> bool {
        self.credentials.is_some() || self.jwks.is_some()
    }

    /// The authority of the files as they are now: start-up's, so a file
    /// that is missing or does not parse fails it, naming the setting.
    pub fn load(&self) -> anyhow::Result<(Arc<Authority>, Watch)> {
        let texts = self.read()?;
        let credentials = Credentials::build(&self.sources(&texts), &Credentials::default())
            .map_err(|e| anyhow::anyhow!("{}: {e}", setting(e.file())))?;
        if credentials.names_principals() {
            let (principals, keys) = credentials.counts();
            tracing::info!(
                principals,
                keys,
                "credentials loaded: every RPC but health and reflection needs a credential"
            );
            if self.token.is_some() {
                tracing::warn!(
                    principal = grpc_api::auth::AUTH_TOKEN_PRINCIPAL,
                    "ORDERFLOW_AUTH_TOKEN is set beside principals: its token holds every scope; \
                     give its clients principals of their own, then unset it"
                );
            }
            if self.jwks.is_some() && (self.rules.issuer.is_none() || self.rules.audience.is_none())
            {
                tracing::warn!(
                    "ORDERFLOW_JWT_ISSUER or ORDERFLOW_JWT_AUDIENCE is unset: JWTs signed by the \
                     key set are accepted whatever issued them or whom they were meant for"
                );
            }
        }
        let authority = Authority::new(credentials);
        Ok((
            Arc::clone(&authority),
            Watch {
                files: self.clone(),
                authority,
                seen: texts,
            },
        ))
    }
}

/// Reloads on SIGHUP and on a change of the files: see the module
/// documentation.
#[derive(Debug)]
pub struct Watch {
    files: Files,
    authority: Arc<Authority>,
    seen: Texts,
}

impl Watch {
    /// The watch, to run until the task is aborted. Without files there is
    /// nothing to reload, and SIGHUP only says so (rather than end the
    /// process, its default). The SIGHUP handler is installed by this call,
    /// before the server announces itself, not when the task first runs.
    pub fn run(self) -> impl std::future::Future<Output = ()> {
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; credentials reload on file changes only");
                None
            }
        };
        self.watch(hangup)
    }

    async fn watch(mut self, mut hangup: Option<tokio::signal::unix::Signal>) {
        if !self.files.watched() {
            while let Some(signal) = hangup.as_mut() {
                if signal.recv().await.is_none() {
                    break;
                }
                tracing::info!("SIGHUP: no credentials files are configured; nothing to reload");
            }
            return;
        }
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = poll.tick() => "file change",
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
            };
            self.reload(trigger).await;
        }
    }

    async fn reload(&mut self, trigger: &'static str) {
        let files = self.files.clone();
        let texts = match tokio::task::spawn_blocking(move || files.read()).await {
            Ok(Ok(texts)) => texts,
            Ok(Err(error)) => {
                if trigger == "SIGHUP" || self.seen != Texts::default() {
                    fail(trigger, &format!("{error:#}"));
                    // Reported once until the files read again.
                    self.seen = Texts::default();
                }
                return;
            }
            Err(error) => {
                fail(trigger, &error.to_string());
                return;
            }
        };
        if trigger != "SIGHUP" && texts == self.seen {
            return;
        }
        let outcome = self.authority.reload(&self.files.sources(&texts));
        self.seen = texts;
        match outcome {
            Ok((principals, keys)) => {
                metrics::counter!("orderflow_credentials_reloads_total", "result" => "ok")
                    .increment(1);
                tracing::info!(trigger, principals, keys, "credentials reloaded");
            }
            Err(error) => {
                fail(trigger, &format!("{}: {error}", setting(error.file())));
            }
        }
    }
}

/// The setting that names `file`.
fn setting(file: File) -> &'static str {
    match file {
        File::Credentials => "--credentials / ORDERFLOW_CREDENTIALS",
        File::Jwks => "--jwt-jwks / ORDERFLOW_JWT_JWKS",
    }
}

fn fail(trigger: &str, error: &str) {
    metrics::counter!("orderflow_credentials_reloads_total", "result" => "error").increment(1);
    tracing::error!(trigger, %error, "credentials not reloaded; the previous ones stay in force");
}

fn read_text(path: &Path, setting: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))
}
