//! What the workspace's test suites share, in one place: the fixtures
//! ([`LEGACY_EVENTS`], [`TWELVE_STEPS`]), and with the `db` feature the
//! test databases ([`TestDb`]: a temp SQLite file, or a PostgreSQL schema of
//! its own dropped afterwards) and [`backend_tests!`], which runs one suite
//! on both backends; with `tls` test certificate authorities, with `jwt`
//! test signing keys and tokens.
//!
//! Only ever a dev-dependency: `scripts/check-architecture.sh` checks the
//! normal graph, which never contains it.

#[cfg(feature = "db")]
mod db;

#[cfg(feature = "db")]
pub use db::{TestDb, postgres_url, schema_url};

#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use tls::{Issued, TestCa};

/// Test JWTs (the `jwt` feature).
#[cfg(feature = "jwt")]
pub mod jwt;

/// Every `.rs` file under the `src/` of every workspace crate, for checks
/// over the sources (module docs, emitted metric names). `crates` is the
/// workspace's `crates/` directory.
///
/// # Panics
/// If a directory cannot be read.
#[allow(
    clippy::unwrap_used,
    reason = "test support: an unreadable tree fails the test"
)]
pub fn workspace_sources(crates: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for krate in std::fs::read_dir(crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut files);
        }
    }
    files
}

/// The project's copy of the legacy event fixture: 500 stored events, each
/// of which must load and write back byte for byte.
pub const LEGACY_EVENTS: &str = include_str!("../data/legacy-events.jsonl");

/// Twelve pipeline steps of all five kinds: what the benchmarks, the
/// overload tests and `scripts/bench.sh` run.
pub const TWELVE_STEPS: &str = include_str!("../data/twelve-steps.toml");

/// [`LEGACY_EVENTS`], parsed.
///
/// # Panics
/// If a fixture line no longer parses (the golden test says which).
#[allow(
    clippy::expect_used,
    reason = "test support: a broken fixture fails the test"
)]
pub fn legacy_events() -> Vec<domain::Event> {
    LEGACY_EVENTS
        .lines()
        .map(|line| domain::Event::from_json(line).expect("the fixture parses"))
        .collect()
}

/// `count` events cycling through `fixture` (typically [`legacy_events`]),
/// each id replaced by one unique to `round` (`r{round}-{n}`), so a
/// de-duplication step sees fresh traffic every round, not the previous
/// round again: the pipeline benchmark's and `step_costs`'s input.
///
/// # Panics
/// Never for a valid round number; a generated id that did not parse would
/// fail the run.
#[allow(
    clippy::expect_used,
    reason = "test support: a generated id that does not parse fails the run"
)]
pub fn with_fresh_ids(fixture: &[domain::Event], round: u64, count: usize) -> Vec<domain::Event> {
    fixture
        .iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(n, event)| {
            let mut event = event.clone();
            if event.event_id.is_some() {
                let id = domain::EventId::parse(format!("r{round}-{n}")).expect("a valid id");
                event.event_id = Some(id);
            }
            event
        })
        .collect()
}

/// Generates `sqlite::$name` and `postgres::$name` for each function of the
/// invoking crate's `suite` module (invoke it at the crate root); each
/// receives a fresh, migrated [`TestDb`]. A PostgreSQL test without a
/// configured server is skipped with a notice (failed under
/// `ORDERFLOW_REQUIRE_POSTGRES=1`).
#[cfg(feature = "db")]
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::suite::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::suite::$name(&db).await;
                }
            )*
        }
    };
}
