//! `AuthLayer`: each call's credential, scope and rate, checked before the
//! handler runs (see the module documentation of `crate::auth`).

use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::{Clock as _, DefaultClock};
use http::{Request, Response};
use rustls_pki_types::CertificateDer;
use subtle::ConstantTimeEq as _;
use tonic::Status;

use super::{Authority, Credentials, Mode, Principal, digest};
use crate::audit::Audit;
use crate::layers::{BoxFuture, short_circuit};
use crate::rpcs::Rpc;
use crate::status::{self, Reason};

/// The certificate chain a mutual-TLS client presented, leaf first. The
/// server's connection layer puts it in each request's extensions (tonic
/// keeps it under a type of the server's making).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Checks each call against the [`Authority`]'s current credentials.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authority: Arc<Authority>,
}

impl AuthLayer {
    /// Checks calls against `authority`.
    pub fn new(authority: Arc<Authority>) -> Self {
        Self { authority }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            authority: Arc::clone(&self.authority),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    authority: Arc<Authority>,
}

impl<S, B, R> tower::Service<Request<B>> for Auth<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let credentials = self.authority.current.load();
        // Without auth, not even the RPC is looked up.
        if !matches!(credentials.mode, Mode::Open)
            && let Some(rpc) = crate::rpcs::find(request.uri().path())
            && let Err(status) = admit(&credentials, rpc, &request)
        {
            return short_circuit(status);
        }
        Box::pin(self.inner.call(request))
    }
}

/// Whether `request` may call `rpc` under `credentials`.
fn admit<B>(credentials: &Credentials, rpc: &Rpc, request: &Request<B>) -> Result<(), Status> {
    match &credentials.mode {
        Mode::Open => Ok(()),
        Mode::Token(expected) => {
            if !rpc.guarded {
                return Ok(());
            }
            match bearer(request) {
                Some(token) if bool::from(digest(token).ct_eq(expected)) => Ok(()),
                _ => Err(unauthenticated(
                    "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
                )),
            }
        }
        Mode::Principals { principals, jwks } => {
            let Some(scope) = rpc.scope else {
                return Ok(());
            };
            let principal = match bearer(request) {
                // A JWT verified before: its cache entry, without hashing
                // it for the principals' digests first.
                Some(token)
                    if let Some(jwks) = jwks
                        && looks_like_jwt(token)
                        && let Some(remembered) = jwks.remembered(token) =>
                {
                    remembered.map_err(|refused| unauthenticated(&refused.to_string()))?
                }
                Some(token) => match principals.by_token(token) {
                    Some(principal) => Arc::clone(principal),
                    None => match jwks {
                        Some(jwks) if looks_like_jwt(token) => jwks
                            .verify(token, principals)
                            .map_err(|refused| unauthenticated(&refused.to_string()))?,
                        _ => return Err(unauthenticated("unknown bearer token")),
                    },
                },
                None => match peer_names(request, |names| principals.by_san(names).cloned()) {
                    Some(principal) => principal,
                    None => {
                        return Err(unauthenticated(
                            "no credential: send `authorization: Bearer <token or JWT>`, or a \
                             client certificate that names a principal",
                        ));
                    }
                },
            };
            if let Some(audit) = request.extensions().get::<Arc<Audit>>() {
                audit.principal(principal.name());
            }
            if !principal.scopes().contains(scope) {
                count("MISSING_SCOPE");
                return Err(status::error(
                    Reason::MissingScope,
                    format!(
                        "principal {:?} lacks scope \"{scope}\", which {} needs",
                        principal.name(),
                        rpc.method
                    ),
                )
                .meta("scope", scope)
                .meta("principal", principal.name())
                .status());
            }
            within_rate(&principal)
        }
    }
}

/// The call's place in its principal's rate: RATE_LIMITED past it.
fn within_rate(principal: &Principal) -> Result<(), Status> {
    let Some(limit) = principal.limit() else {
        return Ok(());
    };
    match limit.limiter.check() {
        Ok(()) => Ok(()),
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            count("RATE_LIMITED");
            metrics::counter!("orderflow_rate_limited_total", "principal" => principal.name().to_string())
                .increment(1);
            Err(status::error(
                Reason::RateLimited,
                format!(
                    "principal {:?} is over its rate ({}); retry in {} ms",
                    principal.name(),
                    limit.rate(),
                    wait.as_millis().max(1)
                ),
            )
            .meta("principal", principal.name())
            .meta("rate", limit.rate())
            .retry_after(wait.max(std::time::Duration::from_millis(1)))
            .status())
        }
    }
}

fn unauthenticated(message: &str) -> Status {
    count("UNAUTHENTICATED");
    status::error(Reason::Unauthenticated, message.to_owned()).status()
}

fn count(reason: &'static str) {
    metrics::counter!("orderflow_auth_refused_total", "reason" => reason).increment(1);
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Three base64url parts: a JWS in compact form.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// `find` over the URI and DNS names of the client certificate's subject
/// alternative names, if the connection presented one.
fn peer_names<B, T>(
    request: &Request<B>,
    find: impl FnOnce(&mut dyn Iterator<Item = &str>) -> Option<T>,
) -> Option<T> {
    let chain = request.extensions().get::<PeerCertificates>()?;
    let leaf = chain.0.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let mut names = cert.valid_uri_names().chain(cert.valid_dns_names());
    find(&mut names)
}
