//! Who may call what. Without settings, nothing is checked. With only a
//! bearer token (`ORDERFLOW_AUTH_TOKEN`), the RPCs the table marks
//! `guarded` need it, as before principals existed. With principals (the
//! credentials file) or a JWK set, every RPC with a scope in
//! [`crate::rpcs::RPCS`] needs a credential naming a principal that holds
//! that scope, within that principal's rate; health and reflection stay
//! open.
//!
//! A credential is a bearer token (a principal's, by the SHA-256 of it), a
//! bearer JWT verified against the key set, or, without a bearer token, the
//! client certificate of a mutual-TLS connection, by a URI or DNS name of
//! its subject alternative names.
//!
//! The settings live in an [`Authority`]: each call reads the current
//! [`Credentials`] without a lock, and a reload swaps in a new version
//! whole. A call is checked once, when it starts: a stream already open
//! keeps the authorization it started with after a reload.

mod jwt;
mod layer;
mod principals;
mod scope;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use jwt::{JwtRules, LEEWAY_SECONDS, Refused};
pub use layer::{AuthLayer, PeerCertificates};
pub use principals::{Principal, digest, parse_rate};
pub use scope::{Scope, Scopes};

use jwt::Jwks;
use principals::Principals;

/// The principal name `ORDERFLOW_AUTH_TOKEN`'s token gets when credentials
/// are configured too.
pub const AUTH_TOKEN_PRINCIPAL: &str = "auth-token";

/// A credentials file or JWK set that cannot be used: what is wrong, naming
/// the entry (never a token), and which file it is in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthConfigError {
    message: String,
    file: File,
}

/// The file an [`AuthConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// The credentials file (`ORDERFLOW_CREDENTIALS`).
    Credentials,
    /// The JWK set (`ORDERFLOW_JWT_JWKS`).
    Jwks,
}

impl AuthConfigError {
    fn new(message: String) -> Self {
        Self {
            message,
            file: File::Credentials,
        }
    }

    fn in_file(mut self, file: File) -> Self {
        self.file = file;
        self
    }

    /// The file the error is about.
    pub fn file(&self) -> File {
        self.file
    }
}

/// The texts one version of the credentials is made from.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// `ORDERFLOW_AUTH_TOKEN`.
    pub token: Option<&'a str>,
    /// The credentials file's text (TOML).
    pub credentials: Option<&'a str>,
    /// The JWK set file's text (JSON).
    pub jwks: Option<&'a str>,
    /// The checks on every JWT.
    pub rules: JwtRules,
}

/// One version of who may call what.
#[derive(Debug, Default)]
pub struct Credentials {
    mode: Mode,
}

#[derive(Debug, Default)]
enum Mode {
    /// No checks.
    #[default]
    Open,
    /// `ORDERFLOW_AUTH_TOKEN` alone: its digest, needed by guarded RPCs.
    Token([u8; 32]),
    /// Principals and scopes.
    Principals {
        principals: Principals,
        jwks: Option<Jwks>,
    },
}

impl Credentials {
    /// Builds a version from `sources`; `previous` lends its rate limiters
    /// to principals whose name and rate are unchanged.
    pub fn build(sources: &Sources<'_>, previous: &Credentials) -> Result<Self, AuthConfigError> {
        if sources.credentials.is_none() && sources.jwks.is_none() {
            return Ok(Self {
                mode: sources.token.map_or(Mode::Open, |t| Mode::Token(digest(t))),
            });
        }
        let empty = Principals::default();
        let before = match &previous.mode {
            Mode::Principals { principals, .. } => principals,
            _ => &empty,
        };
        let mut principals = match sources.credentials {
            Some(text) => Principals::parse(text, before)?,
            None => Principals::default(),
        };
        if let Some(token) = sources.token {
            principals.add_token(AUTH_TOKEN_PRINCIPAL, token)?;
        }
        let jwks = sources
            .jwks
            .map(|text| Jwks::parse(text, &sources.rules))
            .transpose()
            .map_err(|e| e.in_file(File::Jwks))?;
        Ok(Self {
            mode: Mode::Principals { principals, jwks },
        })
    }

    /// Whether principals are configured (and so each mutation is audited).
    pub fn names_principals(&self) -> bool {
        matches!(self.mode, Mode::Principals { .. })
    }

    /// `(principals, keys)`, for the log line of a (re)load.
    pub fn counts(&self) -> (usize, usize) {
        match &self.mode {
            Mode::Principals { principals, jwks } => {
                (principals.len(), jwks.as_ref().map_or(0, Jwks::len))
            }
            _ => (0, 0),
        }
    }
}

/// The current [`Credentials`], shared by every connection; see the module
/// documentation.
#[derive(Debug, Default)]
pub struct Authority {
    current: ArcSwap<Credentials>,
}

impl Authority {
    /// An authority holding `credentials`.
    pub fn new(credentials: Credentials) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(credentials),
        })
    }

    /// The current version.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Builds a version from `sources` and makes it current; on an error the
    /// current one stays.
    pub fn reload(&self, sources: &Sources<'_>) -> Result<(usize, usize), AuthConfigError> {
        let next = Credentials::build(sources, &self.current.load())?;
        let counts = next.counts();
        self.current.store(Arc::new(next));
        Ok(counts)
    }
}
