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
