//! `orderflow health`: asks a running server's `grpc.health.v1.Health` for
//! one service name and exits 0 only when it is SERVING. For container
//! `HEALTHCHECK`s and exec probes, where no grpc client is installed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Settings;

/// Checks `service` on the server `settings` describe (its `--listen`
/// address, reached on loopback when it listens on every interface; over
/// TLS when `--tls-cert` is set, trusting `ca`).
pub async fn check(
    settings: &Settings,
    service: &str,
    ca: Option<&std::path::Path>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let address = loopback(settings.listen);
    let endpoint = match (&settings.tls_cert, ca) {
        (None, _) => Endpoint::from_shared(format!("http://{address}"))?,
        (Some(_), Some(ca)) => {
            let pem =
                std::fs::read(ca).with_context(|| format!("--ca: cannot read {}", ca.display()))?;
            Endpoint::from_shared(format!("https://localhost:{}", address.port()))?.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )?
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
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .with_context(|| format!("health check of {service:?} failed"))?
        .into_inner();
    match answer.status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("{service:?} is {}", other.as_str_name()),
    }
}

/// `0.0.0.0:p` / `[::]:p` (listening everywhere) as the loopback address.
fn loopback(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}
