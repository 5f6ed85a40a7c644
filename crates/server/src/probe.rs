//! `orderflow health`: asks a running server's `grpc.health.v1.Health` for
//! one service name and exits 0 only when it is SERVING. For container
//! `HEALTHCHECK`s and exec probes, where no grpc client is installed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Settings;

/// Checks `service` on the server `settings` describe (its `--listen`
/// address, reached on loopback when it listens on every interface; over
/// TLS when `--tls-cert` is set, trusting `ca`, and presenting `identity`,
/// a certificate and key file, when `--tls-client-ca` asks clients for one;
/// with `--client-token`, sent as the bearer token).
pub async fn check(
    settings: &Settings,
    service: &str,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let address = loopback(settings.listen);
    let endpoint = match (&settings.tls_cert, ca) {
        (None, _) => Endpoint::from_shared(format!("http://{address}"))?,
        (Some(_), Some(ca)) => {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("--ca", ca)?))
                .domain_name("localhost");
            match (identity, &settings.tls_client_ca) {
                (Some((cert, key)), _) => {
                    tls = tls.identity(Identity::from_pem(
                        read("--cert", cert)?,
                        read("--key", key)?,
                    ));
                }
                (None, Some(_)) => bail!(
                    "the server asks clients for a certificate (--tls-client-ca); give the \
                     probe's with --cert and --key"
                ),
                (None, None) => {}
            }
            Endpoint::from_shared(format!("https://localhost:{}", address.port()))?
                .tls_config(tls)?
        }
        (Some(_), None) => bail!(
            "the server serves TLS (--tls-cert); give the CA that signed its certificate with --ca"
        ),
    };
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {address}"))?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    // Health needs no credential here; a proxy in front may.
    if let Some(token) = settings.client_token() {
        let value = format!("Bearer {token}")
            .parse()
            .context("--client-token: not valid metadata (visible ASCII only)")?;
        request.metadata_mut().insert("authorization", value);
    }
    let answer = HealthClient::new(channel)
        .check(request)
        .await
        .with_context(|| format!("health check of {service:?} failed"))?
        .into_inner();
    match answer.status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("{service:?} is {}", other.as_str_name()),
    }
}

/// A PEM file given with `flag`.
fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// `0.0.0.0:p` / `[::]:p` (listening everywhere) as the loopback address.
pub fn loopback(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}
