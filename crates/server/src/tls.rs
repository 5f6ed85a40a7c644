//! TLS settings into tonic's configurations: the gRPC server's identity
//! and optional client CA (mutual TLS), and the OTLP exporter's trust. Each
//! unreadable or malformed file fails start-up naming its setting.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::Settings;

/// The gRPC server's TLS, when `--tls-cert` is set. `handshake_timeout`
/// bounds each TLS handshake as it bounds a plaintext connection's first
/// bytes.
pub fn server(
    settings: &Settings,
    handshake_timeout: Duration,
) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
        return Ok(None);
    };
    let cert = read_pem(cert, "--tls-cert / ORDERFLOW_TLS_CERT", "CERTIFICATE")?;
    let key = read_pem(key, "--tls-key / ORDERFLOW_TLS_KEY", "PRIVATE KEY")?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(handshake_timeout);
    if let Some(ca) = &settings.tls_client_ca {
        let ca = read_pem(
            ca,
            "--tls-client-ca / ORDERFLOW_TLS_CLIENT_CA",
            "CERTIFICATE",
        )?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(config))
}

/// The OTLP exporter's TLS for an `https://` endpoint: the system's roots,
/// or the bundle in `OTEL_EXPORTER_OTLP_CERTIFICATE`.
pub fn otlp(settings: &Settings) -> anyhow::Result<ClientTlsConfig> {
    Ok(match &settings.otlp_certificate {
        Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(
            path,
            "--otlp-certificate / OTEL_EXPORTER_OTLP_CERTIFICATE",
            "CERTIFICATE",
        )?)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}

/// Reads a PEM file, checking it holds a `label` block, so a wrong file
/// (a key given as the certificate) fails here, naming the setting.
fn read_pem(path: &Path, setting: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    anyhow::ensure!(
        text.contains(&format!("-----BEGIN {label}"))
            || (label == "PRIVATE KEY" && text.contains(" PRIVATE KEY-----")),
        "{setting}: {} holds no PEM {label}",
        path.display()
    );
    Ok(bytes)
}
