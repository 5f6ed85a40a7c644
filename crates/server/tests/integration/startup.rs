//! Start-up failures: one clear error line and a non-zero exit, never a
//! panic or a backtrace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::BINARY;

fn orderflow(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let output = Command::new(BINARY)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

fn assert_clean_failure(code: Option<i32>, stderr: &str, needle: &str) {
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn a_bad_flag_value_is_one_clear_error() {
    let (code, stderr, _) = orderflow(
        &[("ORDERFLOW_OVERFLOW_POLICY", "shed-everything")],
        &["migrate"],
    );
    assert_clean_failure(code, &stderr, "is not an overflow policy");
}

#[test]
fn a_bad_pipeline_file_names_the_step_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, "[[steps]]\nkind = \"deduplicate\"\nwindow = 0\n").unwrap();
    let db = dir.path().join("x.db").display().to_string();
    let (code, stderr, _) = orderflow(
        &[
            ("DATABASE_URL", &db),
            ("ORDERFLOW_PIPELINE", &file.display().to_string()),
            ("ORDERFLOW_LISTEN", "127.0.0.1:0"),
        ],
        &[],
    );
    assert_clean_failure(code, &stderr, "steps[0] (deduplicate): window: is 0");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

/// A new SQLite database in a directory the server's user cannot write
/// fails at once, naming the setting and the directory. It was taken for an
/// unreachable database and retried ("unable to open the database file")
/// until the start-up timeout. Root writes anywhere, so as root the server
/// runs as `nobody` (through `setpriv`).
#[test]
fn a_new_sqlite_database_in_an_unwritable_directory_fails_at_once() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let root = std::fs::metadata(&locked).unwrap().uid() == 0;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let url = locked.join("orders.db").display().to_string();
    // A copy of the binary where `nobody` can reach it (the checkout may
    // sit in a directory only its owner can enter).
    let binary = dir.path().join("orderflow");
    if std::fs::hard_link(BINARY, &binary).is_err() {
        std::fs::copy(BINARY, &binary).unwrap();
    }
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: running as root and no setpriv to run the server as nobody");
        return;
    }
    let command = || {
        let mut command = if root {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            command.arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        command.env_clear().envs([
            ("DATABASE_URL", url.as_str()),
            ("ORDERFLOW_LISTEN", "127.0.0.1:0"),
            ("ORDERFLOW_METRICS_LISTEN", "127.0.0.1:0"),
            ("ORDERFLOW_STARTUP_TIMEOUT", "30s"),
        ]);
        command
    };
    for args in [&[][..], &["migrate"][..]] {
        let started = Instant::now();
        let output = command().args(args).stdin(Stdio::null()).output().unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_clean_failure(output.status.code(), &stderr, "is not writable");
        assert!(stderr.contains("--database-url / DATABASE_URL"), "{stderr}");
        assert!(stderr.contains(&locked.display().to_string()), "{stderr}");
        assert!(!stderr.contains("retrying"), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(15), "{args:?}: took {took:?}");
        assert!(!locked.join("orders.db").exists());
    }
}

#[test]
fn an_unreachable_database_is_retried_then_reported() {
    let (code, stderr, took) = orderflow(
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:9/orderflow"),
            ("ORDERFLOW_STARTUP_TIMEOUT", "1s"),
            ("ORDERFLOW_DB_TIMEOUT", "300ms"),
            ("RUST_LOG", "warn"),
        ],
        &["migrate"],
    );
    assert_clean_failure(code, &stderr, "database unavailable");
    assert!(stderr.contains("retrying"), "start-up retried: {stderr}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "took {took:?}"
    );
}

/// A configuration that can never work fails without retrying, whatever the
/// command, with one line naming the setting. The start-up budget is 30 s;
/// finishing well inside it shows nothing was retried.
pub fn assert_fails_at_once(url: &str, needle: &str) {
    assert_commands_fail_at_once(&[&[], &["migrate"], &["events", "export"]], url, needle);
}

fn assert_commands_fail_at_once(commands: &[&[&str]], url: &str, needle: &str) {
    for args in commands {
        let (code, stderr, took) = orderflow(
            &[
                ("DATABASE_URL", url),
                ("ORDERFLOW_LISTEN", "127.0.0.1:0"),
                ("ORDERFLOW_METRICS_LISTEN", "127.0.0.1:0"),
                ("ORDERFLOW_STARTUP_TIMEOUT", "30s"),
            ],
            args,
        );
        assert_clean_failure(code, &stderr, needle);
        assert!(
            stderr.contains("DATABASE_URL"),
            "{args:?}: names the setting: {stderr}"
        );
        assert!(!stderr.contains("retrying"), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(15), "{args:?}: took {took:?}");
    }
}

#[test]
fn a_sqlite_path_in_a_missing_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("orderflow.db");
    assert_fails_at_once(&path.display().to_string(), "does not exist");
}

#[test]
fn a_directory_as_the_sqlite_path_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails_at_once(&dir.path().display().to_string(), "is a directory");
}

#[test]
fn a_read_only_sqlite_database_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderflow.db").display().to_string();
    let (code, stderr, _) = orderflow(&[("DATABASE_URL", &path)], &["migrate"]);
    assert_eq!(code, Some(0), "{stderr}");
    // Opened read-only (as a read-only file or mount would be; the tests run
    // as root, for whom file modes do not bind).
    let (code, stderr, _) = orderflow(
        &[
            ("DATABASE_URL", &format!("file:{path}?mode=ro")),
            ("ORDERFLOW_LISTEN", "127.0.0.1:0"),
            ("ORDERFLOW_METRICS_LISTEN", "127.0.0.1:0"),
        ],
        &[],
    );
    assert_clean_failure(code, &stderr, "read-only");
}

#[test]
fn export_of_a_missing_sqlite_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.db");
    let url = path.display().to_string();
    assert_commands_fail_at_once(&[&["events", "export"]], &url, "no SQLite database at");
    assert!(!path.exists(), "no database was created");
}

#[test]
fn a_malformed_postgres_url_fails_at_once() {
    let (code, stderr, took) = orderflow(
        &[
            ("DATABASE_URL", "postgres://[::1"),
            ("ORDERFLOW_STARTUP_TIMEOUT", "30s"),
        ],
        &["migrate"],
    );
    assert_clean_failure(code, &stderr, "malformed URL");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_fails_at_once("postgres://[::1", "malformed URL");
}

#[test]
fn a_missing_postgres_database_or_role_fails_at_once() {
    let Some(base) = test_support::postgres_url() else {
        return;
    };
    let (prefix, _) = base.rsplit_once('/').unwrap();
    assert_fails_at_once(
        &format!("{prefix}/orderflow_no_such_database"),
        "does not exist",
    );
    let role = base.replacen(
        "postgres://postgres@",
        "postgres://orderflow_no_such_role@",
        1,
    );
    assert_ne!(role, base, "the test URL names the postgres role");
    assert_fails_at_once(&role, "does not exist");
}

#[test]
fn an_import_that_is_not_utf8_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db").display().to_string();
    let file = dir.path().join("events.jsonl");
    let mut bytes = br#"{"user_id":"u","action":"login"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"user_id\":\"\xff\",\"action\":\"login\"}\n");
    std::fs::write(&file, bytes).unwrap();
    let (code, stderr, _) = orderflow(
        &[("DATABASE_URL", &db)],
        &["events", "import", &file.display().to_string()],
    );
    assert_clean_failure(code, &stderr, "line 2: malformed event: not valid UTF-8");
}

/// An import is one transaction however long it takes: a file that takes
/// longer to store than the operation budget (`ORDERFLOW_DB_TIMEOUT`, which
/// bounds the server's writes) is stored whole, not abandoned as unconfirmed.
#[test]
fn an_import_outlasting_the_operation_budget_is_stored_whole() {
    const EVENTS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db").display().to_string();
    let file = dir.path().join("events.jsonl");
    let lines: String = (0..EVENTS)
        .map(|i| format!("{{\"event_id\":\"e-{i}\",\"user_id\":\"u\",\"action\":\"login\"}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let (code, stderr, _) = orderflow(
        &[("DATABASE_URL", &db), ("ORDERFLOW_DB_TIMEOUT", "50ms")],
        &["events", "import", &file.display().to_string()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let output = Command::new(BINARY)
        .env_clear()
        .env("DATABASE_URL", &db)
        .args(["events", "export"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        output.stdout,
        std::fs::read(&file).unwrap(),
        "the export is the file imported"
    );
}

/// The deploy gate on a new SQLite file: `migrate --status` lists every
/// migration pending, exits non-zero and creates nothing; after `migrate`
/// it lists them applied and exits 0.
#[test]
fn migrate_status_gates_a_new_database_until_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let db = path.display().to_string();
    let status = || {
        Command::new(BINARY)
            .env_clear()
            .env("DATABASE_URL", &db)
            .args(["migrate", "--status"])
            .output()
            .unwrap()
    };
    let before = status();
    assert!(!before.status.success(), "{before:?}");
    let listed = String::from_utf8(before.stdout).unwrap();
    let pending = listed
        .lines()
        .filter(|l| l.starts_with("pending  "))
        .count();
    assert!(pending >= 10, "{listed}");
    assert!(
        listed.ends_with(&format!("0 applied, {pending} pending\n")),
        "{listed}"
    );
    assert!(!path.exists(), "asking created the database");

    let (code, stderr, _) = orderflow(&[("DATABASE_URL", &db)], &["migrate"]);
    assert_eq!(code, Some(0), "{stderr}");
    let after = status();
    assert!(after.status.success(), "{after:?}");
    let listed = String::from_utf8(after.stdout).unwrap();
    assert!(
        listed.ends_with(&format!("{pending} applied, 0 pending\n")),
        "{listed}"
    );
}

/// `orderflow health` (the image's HEALTHCHECK): exit 0 for a SERVING name,
/// non-zero with one line for an unknown name or a server that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_exits_zero_only_while_serving() {
    let db = test_support::TestDb::sqlite().await;
    let server = crate::support::Server::start(&db, &[]);
    let listen = server.address.trim_start_matches("http://").to_owned();
    let health = |args: &[&str]| {
        let mut all = vec!["health"];
        all.extend_from_slice(args);
        orderflow(&[("ORDERFLOW_LISTEN", &listen)], &all)
    };
    // The port opens before the first readiness probe has run; under load
    // that probe can take a while, so wait (bounded) for readiness first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&["--service", "readiness"]).0 != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for service in ["readiness", "liveness", ""] {
        let (code, stderr, _) = health(&["--service", service]);
        assert_eq!(code, Some(0), "{service:?}: {stderr}");
    }
    let (code, stderr, _) = health(&["--service", "no.such.Service"]);
    assert_clean_failure(code, &stderr, "no.such.Service");
    drop(server);
    let (code, stderr, took) = health(&["--timeout", "1s"]);
    assert_clean_failure(code, &stderr, "cannot reach");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
