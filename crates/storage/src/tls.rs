//! TLS to PostgreSQL, with libpq's `sslmode` meanings.
//!
//! tokio-postgres parses `sslmode=disable|prefer|require` only, and no
//! `sslrootcert`; managed PostgreSQL is reached with `verify-full` and a CA
//! file. So the URL's TLS options are taken out here and turned into a
//! rustls client configuration (tokio-postgres-rustls), and the rest of the
//! URL goes to tokio-postgres:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | no |
//! | `allow`, `prefer` (default) | if the server offers it | only with `sslrootcert` |
//! | `require` | always | only with `sslrootcert` (as libpq: then as `verify-ca`) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name |
//!
//! Trusted roots: the `sslrootcert` file (PEM), or the system's store when
//! it is absent or `sslrootcert=system`. Client certificates (`sslcert`,
//! `sslkey`) are refused with a clear error rather than ignored.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A PostgreSQL URL split into what tokio-postgres reads and the TLS
/// connector built from its TLS options.
pub(crate) struct PgTarget {
    /// The URL without the TLS options tokio-postgres does not know.
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector for `config`'s `sslmode`.
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl PgTarget {
    /// Parses `url`. A malformed URL, an unknown `sslmode`, an unreadable or
    /// empty `sslrootcert`, or a client certificate is an error naming the
    /// option.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (rest, options) = split_tls_options(url)?;
        let mode = match options.mode.as_deref() {
            None | Some("prefer" | "allow") => Mode::Prefer,
            Some("disable") => Mode::Disable,
            Some("require") => Mode::Require,
            Some("verify-ca") => Mode::VerifyCa,
            Some("verify-full") => Mode::VerifyFull,
            Some(other) => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        };
        if options.client_cert {
            return Err(
                "sslcert / sslkey (client certificates) are not supported; authenticate with a \
                 password"
                    .to_owned(),
            );
        }
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e| format!("malformed URL: {e}"))?;
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let root = options.root_cert.as_deref();
        let check = match (mode, root) {
            (Mode::VerifyFull, _) => Check::Full,
            (Mode::VerifyCa, _) | (Mode::Require | Mode::Prefer, Some(_)) => Check::Chain,
            (Mode::Disable, _) | (Mode::Prefer | Mode::Require, None) => Check::Nothing,
        };
        let tls = client_config(check, root)?;
        Ok(Self {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        })
    }
}

/// The TLS options found in a URL's query.
#[derive(Debug, Default)]
struct TlsOptions {
    mode: Option<String>,
    root_cert: Option<String>,
    client_cert: bool,
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a
/// `postgres://` URL's query. A key=value connection string is passed on
/// whole (tokio-postgres reads its `sslmode`).
fn split_tls_options(url: &str) -> Result<(String, TlsOptions), String> {
    let mut options = TlsOptions::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => options.mode = Some(percent_decode(value)?),
            "sslrootcert" => options.root_cert = Some(percent_decode(value)?),
            "sslcert" | "sslkey" => options.client_cert = true,
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, options))
}

/// `%XX` escapes in a query value (a path with spaces, say).
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("malformed URL: bad %-escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("malformed URL: {value:?} is not UTF-8"))
}

/// What the client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing (`require` without a root: encryption against passive
    /// listeners only, as libpq).
    Nothing,
    /// The chain to a trusted root, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

fn client_config(check: Check, root: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = match check {
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth(),
        Check::Chain | Check::Full => {
            let roots = Arc::new(roots(root)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            if check == Check::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

/// The trusted roots: the `sslrootcert` PEM file, or the system's store.
fn roots(root: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path:?}: cannot read it: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {path:?}: not PEM certificates: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path:?}: holds no usable certificate"));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "sslmode verify-ca/verify-full: the system has no trusted roots (install \
                     ca-certificates) and no sslrootcert was given"
                        .to_owned(),
                );
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must verify; the name may be anything.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a root: any certificate, but the handshake's
/// signatures are still checked (the session is encrypted to whoever holds
/// the certificate's key).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_and_the_rest_kept() {
        let (rest, options) = split_tls_options(
            "postgres://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%20dir%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(options.mode.as_deref(), Some("verify-full"));
        assert_eq!(options.root_cert.as_deref(), Some("/tmp/ca dir/ca.pem"));
        let (rest, _) = split_tls_options("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        let (rest, options) = split_tls_options("host=h sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), options.mode),
            ("host=h sslmode=require", None)
        );
    }

    #[test]
    fn bad_tls_options_name_themselves() {
        let error = |url: &str| PgTarget::parse(url).err().unwrap();
        assert!(error("postgres://h/db?sslmode=verify").contains("sslmode \"verify\""));
        assert!(
            error("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .contains("sslrootcert \"/nonexistent.pem\"")
        );
        assert!(error("postgres://h/db?sslcert=/c.pem&sslkey=/k.pem").contains("sslcert"));
        assert!(error("postgres://h/db?sslrootcert=%zz").contains("%-escape"));
    }

    #[test]
    fn modes_map_onto_tokio_postgres() {
        let mode = |url: &str| PgTarget::parse(url).unwrap().config.get_ssl_mode();
        assert_eq!(mode("postgres://h/db"), SslMode::Prefer);
        assert_eq!(mode("postgres://h/db?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgres://h/db?sslmode=require"), SslMode::Require);
        assert_eq!(
            mode("postgres://h/db?sslmode=verify-full&sslrootcert=system"),
            SslMode::Require
        );
    }
}
