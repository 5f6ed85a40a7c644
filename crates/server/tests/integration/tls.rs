//! TLS on every connection the server makes or takes: PostgreSQL under
//! `sslmode=verify-full` with a CA made for the test, and gRPC with server
//! TLS and mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use storage::{Database, StoreConfig};
use test_support::{TestCa, TestDb};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::support::Server;

/// The local PostgreSQL serving a certificate from `ca` for `localhost`
/// until dropped (`ALTER SYSTEM` on `ssl_cert_file` / `ssl_key_file`, then a
/// reload: PostgreSQL re-reads its TLS files on SIGHUP). Other sessions are
/// not disturbed; their TLS (under `prefer`) checks no certificate.
struct PostgresCertificate {
    base_url: String,
    dir: PathBuf,
}

impl PostgresCertificate {
    /// `None` (the test skips, saying why) when PostgreSQL is not on this
    /// machine to read the files, unless `ORDERFLOW_REQUIRE_POSTGRES_TLS=1`.
    async fn install(base_url: &str, ca: &TestCa) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("orderflow-pg-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let issued = ca.server(&["localhost", "127.0.0.1"]);
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        set_mode(&cert, 0o644);
        // PostgreSQL refuses a key others can read; it must own it.
        set_mode(&key, 0o600);
        chown_to_postgres(&key);
        let admin = Database::open(StoreConfig::new(base_url.to_owned()));
        let readable = admin
            .execute_raw(&format!("SELECT pg_read_file('{}')", key.display()))
            .await;
        if let Err(error) = readable {
            let _ = std::fs::remove_dir_all(&dir);
            assert!(
                std::env::var("ORDERFLOW_REQUIRE_POSTGRES_TLS").as_deref() != Ok("1"),
                "ORDERFLOW_REQUIRE_POSTGRES_TLS=1 but PostgreSQL cannot read the test key: {error}"
            );
            eprintln!("skipped: PostgreSQL cannot read files on this machine ({error})");
            return None;
        }
        for statement in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            admin.execute_raw(&statement).await.unwrap();
        }
        // The postmaster reloads asynchronously.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some(Self {
            base_url: base_url.to_owned(),
            dir,
        })
    }
}

impl Drop for PostgresCertificate {
    fn drop(&mut self) {
        let url = self.base_url.clone();
        crate::support::on_own_runtime(async move {
            let admin = Database::open(StoreConfig::new(url));
            for statement in [
                "ALTER SYSTEM RESET ssl_cert_file",
                "ALTER SYSTEM RESET ssl_key_file",
                "SELECT pg_reload_conf()",
            ] {
                admin.execute_raw(statement).await.unwrap();
            }
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_to_postgres(path: &Path) {
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
        // Only root may give a file away; elsewhere PostgreSQL runs as us.
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
}

/// `url` with its host as `localhost` (the name in the certificate) and
/// `extra` query options appended.
fn with_tls(url: &str, extra: &str) -> String {
    let url = url.replacen("@127.0.0.1", "@localhost", 1);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_serves_with_the_right_ca_and_fails_fast_with_another() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let ca = TestCa::new("orderflow test CA");
    let Some(installed) =
        PostgresCertificate::install(&test_support::postgres_url().unwrap(), &ca).await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, ca.cert_pem()).unwrap();
    let foreign = dir.path().join("foreign.pem");
    std::fs::write(&foreign, TestCa::new("someone else").cert_pem()).unwrap();

    // The right CA: migrations, then SERVING, and an RPC round trip through
    // the database.
    let url = with_tls(
        db.url(),
        &format!("sslmode=verify-full&sslrootcert={}", trusted.display()),
    );
    let server = Server::start_url(&url, &[]);
    // Health follows the monitor's first ping through the pool.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "readiness".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if answer.status == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not SERVING under verify-full: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut orders = server.orders().await;
    orders
        .create_order(crate::suite::create("u-tls", ""))
        .await
        .unwrap();
    drop(server);

    // A CA that did not sign the server's certificate: every command fails
    // at once, naming certificate verification and the setting.
    let url = with_tls(
        db.url(),
        &format!("sslmode=verify-full&sslrootcert={}", foreign.display()),
    );
    crate::startup::assert_fails_at_once(&url, "invalid peer certificate");
    drop(installed);
}

/// A CA, and a server certificate from it for `localhost` and 127.0.0.1,
/// written as files the binary reads.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
}

impl Files {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("orderflow test CA");
        let server = ca.server(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        Self { dir, ca }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes `issued`'s certificate and key as `NAME.crt` and `NAME.key`.
    pub fn write(&self, name: &str, issued: &test_support::Issued) {
        std::fs::write(
            self.dir.path().join(format!("{name}.crt")),
            &issued.cert_pem,
        )
        .unwrap();
        std::fs::write(self.dir.path().join(format!("{name}.key")), &issued.key_pem).unwrap();
    }
}

/// `orderflow health ARGS` with `env` and nothing else: its exit code and
/// standard error.
fn health(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(crate::support::BINARY)
        .env_clear()
        .envs(env.iter().copied())
        .arg("health")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The port of a started server.
pub fn port(server: &Server) -> u16 {
    server.address.rsplit(':').next().unwrap().parse().unwrap()
}

/// GetOrder for an unknown id through `client`: `Ok` if the server
/// answered (NOT_FOUND), the transport's error otherwise.
async fn answered(client: orderflow_proto::ClientBuilder) -> Result<(), String> {
    let client = client.connect().await.map_err(|e| e.to_string())?;
    let status = client
        .orders()
        .get_order(orderflow_proto::proto::GetOrderRequest {
            order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        })
        .await
        .unwrap_err();
    if status.code() == tonic::Code::NotFound {
        Ok(())
    } else {
        Err(format!("{status:?}"))
    }
}

pub fn trusting(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_answers_tls_clients_only() {
    let files = Files::new();
    let db = TestDb::sqlite().await;
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_TLS_CERT", &files.path("server.crt")),
            ("ORDERFLOW_TLS_KEY", &files.path("server.key")),
        ],
    );
    let port = port(&server);
    let https = format!("https://localhost:{port}");
    answered(orderflow_proto::Client::builder(&https).tls(trusting(&files.ca.cert_pem())))
        .await
        .expect("a client trusting the CA gets answers");

    let plaintext = answered(orderflow_proto::Client::builder(format!(
        "http://127.0.0.1:{port}"
    )))
    .await;
    assert!(plaintext.is_err(), "plaintext was answered");

    let foreign = TestCa::new("someone else");
    let distrusting =
        answered(orderflow_proto::Client::builder(&https).tls(trusting(&foreign.cert_pem()))).await;
    assert!(
        distrusting.is_err(),
        "a client trusting another CA connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let files = Files::new();
    let clients = TestCa::new("orderflow clients CA");
    std::fs::write(files.dir.path().join("clients.pem"), clients.cert_pem()).unwrap();
    let db = TestDb::sqlite().await;
    let (cert, key, client_ca) = (
        files.path("server.crt"),
        files.path("server.key"),
        files.path("clients.pem"),
    );
    let settings = [
        ("ORDERFLOW_TLS_CERT", cert.as_str()),
        ("ORDERFLOW_TLS_KEY", key.as_str()),
        ("ORDERFLOW_TLS_CLIENT_CA", client_ca.as_str()),
    ];
    let server = Server::start(&db, &settings);
    let https = format!("https://localhost:{}", port(&server));
    let ca = files.ca.cert_pem();

    // The health probe, with the server's settings: it must present a
    // certificate from the clients' CA, and says so when given none.
    let listen = format!("127.0.0.1:{}", port(&server));
    let mut probe_env = settings.to_vec();
    probe_env.push(("ORDERFLOW_LISTEN", &listen));
    let ca_file = files.path("ca.pem");
    let (code, stderr) = health(&probe_env, &["--ca", &ca_file]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--cert and --key"), "{stderr}");
    files.write("probe", &clients.client("probe"));
    files.write(
        "stranger",
        &TestCa::new("not the clients CA").client("stranger"),
    );
    let (probe_cert, probe_key) = (files.path("probe.crt"), files.path("probe.key"));
    let (code, stderr) = health(
        &probe_env,
        &["--ca", &ca_file, "--cert", &probe_cert, "--key", &probe_key],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (stranger_cert, stranger_key) = (files.path("stranger.crt"), files.path("stranger.key"));
    let (code, stderr) = health(
        &probe_env,
        &[
            "--ca",
            &ca_file,
            "--cert",
            &stranger_cert,
            "--key",
            &stranger_key,
        ],
    );
    assert_eq!(
        code,
        Some(1),
        "a certificate from another CA passed: {stderr}"
    );

    let anonymous = answered(orderflow_proto::Client::builder(&https).tls(trusting(&ca))).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was answered"
    );

    let stranger = TestCa::new("not the clients CA").client("intruder");
    let intruder = answered(
        orderflow_proto::Client::builder(&https)
            .tls(trusting(&ca).identity(Identity::from_pem(stranger.cert_pem, stranger.key_pem))),
    )
    .await;
    assert!(
        intruder.is_err(),
        "a certificate from another CA was accepted"
    );

    let member = clients.client("billing");
    answered(
        orderflow_proto::Client::builder(&https)
            .tls(trusting(&ca).identity(Identity::from_pem(member.cert_pem, member.key_pem))),
    )
    .await
    .expect("a client with a certificate from the clients CA gets answers");
}

#[test]
fn unreadable_or_wrong_tls_files_fail_start_up_naming_the_setting() {
    let files = Files::new();
    let cases = [
        (
            "/nonexistent/server.crt".to_owned(),
            files.path("server.key"),
            "--tls-cert / ORDERFLOW_TLS_CERT",
        ),
        (
            files.path("server.key"),
            files.path("server.key"),
            "--tls-cert / ORDERFLOW_TLS_CERT",
        ),
        (
            files.path("server.crt"),
            files.path("ca.pem"),
            "--tls-key / ORDERFLOW_TLS_KEY",
        ),
    ];
    for (cert, key, needle) in cases {
        // No database is opened: the files are read first.
        let output = std::process::Command::new(crate::support::BINARY)
            .env_clear()
            .env("DATABASE_URL", "/nonexistent/never-opened.db")
            .env("ORDERFLOW_LISTEN", "127.0.0.1:0")
            .env("ORDERFLOW_METRICS_LISTEN", "127.0.0.1:0")
            .env("ORDERFLOW_TLS_CERT", &cert)
            .env("ORDERFLOW_TLS_KEY", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{cert} {key}: started");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
