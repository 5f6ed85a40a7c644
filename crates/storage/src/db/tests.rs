//! The health ping against cancellation: whatever moment its caller gives
//! up at (the monitor's timeout), the SQLite connection it used goes back to
//! the pool as it came: outside any transaction, with its busy timeout.
//! And the chunks a large insert is cut into.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection as _;

use super::{Conn, Database, ROWS_PER_INSERT, chunked, chunked_within};
use crate::config::StoreConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ping_returns_its_connection_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ping.db").display().to_string();
    let config = StoreConfig::new(path);
    let pool = config.max_connections as usize;
    let db = Database::connect(config).await.unwrap();
    for _ in 0..pool {
        db.ping().await.unwrap();
    }
    let started = std::time::Instant::now();
    for _ in 0..20 {
        db.ping().await.unwrap();
    }
    let whole = u64::try_from(started.elapsed().as_micros() / 20)
        .unwrap()
        .max(20);
    let mut cancelled = 0;
    for i in 0..1_000u64 {
        // Cut off anywhere from before its first statement to after its last.
        let cut = Duration::from_micros((i * 7919) % (whole * 2));
        if tokio::time::timeout(cut, db.ping()).await.is_err() {
            cancelled += 1;
        }
    }
    eprintln!("{cancelled} of 1000 pings cancelled; a whole ping took {whole} us");
    // Give a probe still running on its own (if any) time to finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..pool {
        let mut conn = db.acquire().await.unwrap();
        let Conn::Sqlite(c) = &mut conn else {
            unreachable!("a SQLite pool")
        };
        // Inside a transaction left open, BEGIN fails.
        c.batch_execute("BEGIN; ROLLBACK;")
            .await
            .expect("the connection came back inside a transaction");
        let timeout: Vec<BusyTimeout> =
            diesel_async::RunQueryDsl::load(diesel::sql_query("PRAGMA busy_timeout"), &mut **c)
                .await
                .unwrap();
        assert_eq!(
            timeout.first().map(|t| t.timeout),
            Some(5_000),
            "the connection came back with the probe's busy timeout"
        );
        held.push(conn);
    }
}

#[derive(diesel::QueryableByName)]
struct BusyTimeout {
    #[diesel(sql_type = diesel::sql_types::Integer, column_name = "timeout")]
    timeout: i32,
}

/// Chunks keep the rows in order, none over the limit, and hold no more
/// memory than their rows: with `Vec::split_off` each kept the capacity of
/// every row after it (quadratic; an import of 200,000 events took 1.7 GB).
#[test]
fn chunks_hold_their_rows_in_order_and_nothing_more() {
    assert!(chunked(Vec::<u32>::new()).is_empty());
    for rows in [
        1,
        ROWS_PER_INSERT,
        ROWS_PER_INSERT + 1,
        10 * ROWS_PER_INSERT + 7,
    ] {
        let chunks = chunked((0..rows).collect::<Vec<usize>>());
        assert_eq!(chunks.len(), rows.div_ceil(ROWS_PER_INSERT), "{rows}");
        assert!(
            chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= ROWS_PER_INSERT)
        );
        let capacity: usize = chunks.iter().map(Vec::capacity).sum();
        assert_eq!(capacity, rows, "{rows} rows held in {capacity} slots");
        let flat: Vec<usize> = chunks.into_iter().flatten().collect();
        assert_eq!(flat, (0..rows).collect::<Vec<_>>());
    }
}

/// Chunks bounded in bytes as well as rows: in order, each within both
/// limits (or a single row larger than the byte limit), each as full as the
/// limits allow (the next row would break one), and allocated at its size.
#[test]
fn chunks_within_bytes_are_as_full_as_the_limits_allow() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    for case in 0..500 {
        let max_rows = rng.random_range(1..20);
        let max_bytes = rng.random_range(1..400);
        let rows: Vec<usize> = (0..rng.random_range(0..200))
            .map(|_| rng.random_range(0..150))
            .collect();
        let chunks = chunked_within(rows.clone(), max_rows, max_bytes, |r| *r);
        let why = format!("case {case}: {max_rows} rows, {max_bytes} bytes, {rows:?}");
        for (i, chunk) in chunks.iter().enumerate() {
            let bytes: usize = chunk.iter().sum();
            assert!(!chunk.is_empty() && chunk.len() <= max_rows, "{why}");
            assert!(bytes <= max_bytes || chunk.len() == 1, "{why}");
            assert_eq!(chunk.capacity(), chunk.len(), "{why}");
            if let Some(next) = chunks.get(i + 1) {
                assert!(
                    chunk.len() == max_rows || bytes + next[0] > max_bytes,
                    "chunk {i} could have taken the next row: {why}"
                );
            }
        }
        assert_eq!(chunks.concat(), rows, "{why}");
    }
}
