//! The stored events as a feed: positions in commit order (PostgreSQL, where
//! it takes a mechanism), wake-ups, and retention's bounded steps.

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain::{Event, EventId, WriteId};
use storage::{EventStore, NewLogBatch};
use test_support::{LEGACY_EVENTS as LEGACY, TestDb, postgres_url};

fn events(tag: &str, n: usize) -> Vec<Event> {
    let template = Event::from_json(LEGACY.lines().next().unwrap()).unwrap();
    (0..n)
        .map(|i| {
            let mut event = template.clone();
            event.event_id = Some(EventId::parse(format!("{tag}-{i}")).unwrap());
            event
        })
        .collect()
}

async fn positions(db: &TestDb) -> Vec<i64> {
    db.read_events(None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.position)
        .collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Sessions of `schema`'s pool waiting for a lock.
async fn waiting_on_locks(admin: &mut AsyncPgConnection, schema: &str) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
    )
    .bind::<Text, _>(schema)
    .get_result::<Count>(admin)
    .await
    .unwrap()
    .n
}

/// The outbox gap, made to happen: one transaction takes its positions and
/// is held open before it commits, while another stores events after it.
/// A subscriber reading `position > last` all the while must end up with
/// every event. Without the ordering lock (`storage`'s feed module) the
/// second transaction takes higher positions and commits first; the
/// subscriber moves past the held one's positions and never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_follow_commit_order_when_transactions_overlap() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.postgres_schema().unwrap().to_owned();
    let first = events("first", 1);
    // A consumer cursor row to hold, and a log range to commit over it.
    db.append_log(&[NewLogBatch {
        producer: None,
        events: &first,
    }])
    .await
    .unwrap();
    let start = db.read_log(0, 1).await.unwrap()[0].position;
    db.commit_log("held", 0, start, &[], &[], &[])
        .await
        .unwrap();
    db.append_log(&[NewLogBatch {
        producer: None,
        events: &first,
    }])
    .await
    .unwrap();
    let through = db.read_log(start, 1).await.unwrap()[0].position;

    // Hold the cursor row: the commit below stores its events (taking its
    // positions), then waits on the row before it can commit.
    let mut admin = AsyncPgConnection::establish(&postgres_url().unwrap())
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {schema}.log_cursors WHERE consumer = 'held' FOR UPDATE"
        ))
        .await
        .unwrap();
    let held = {
        let db = storage::Database::clone(&db);
        tokio::spawn(async move {
            db.commit_log("held", start, through, &events("held", 50), &[], &[])
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_on_locks(&mut admin, &schema).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the commit never waited on the row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let later = {
        let db = storage::Database::clone(&db);
        tokio::spawn(async move {
            db.append_events(WriteId::generate(), &events("later", 50))
                .await
        })
    };

    // A subscriber follows the store while the first transaction is held.
    let mut seen = Vec::new();
    let mut last = 0;
    let follow = |last: i64| {
        let db = storage::Database::clone(&db);
        async move { db.read_events(Some(last), 1_000).await.unwrap() }
    };
    let held_until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < held_until {
        for event in follow(last).await {
            seen.push(event.position);
            last = event.position;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.batch_execute("COMMIT").await.unwrap();
    held.await.unwrap().unwrap();
    later.await.unwrap().unwrap();
    for event in follow(last).await {
        seen.push(event.position);
    }

    let stored = positions(&db).await;
    assert_eq!(stored.len(), 100);
    assert_eq!(
        seen, stored,
        "the subscriber saw every stored position, in order"
    );
}

/// A consumer cursor row for `consumer` at a committed position, and `n`
/// more log batches after it: (the cursor, each batch's position).
async fn log_after_a_cursor(db: &TestDb, consumer: &str, n: usize) -> (i64, Vec<i64>) {
    let one = events("log", 1);
    let batch = NewLogBatch {
        producer: None,
        events: &one,
    };
    db.append_log(&[batch]).await.unwrap();
    let start = db.read_log(0, 1).await.unwrap()[0].position;
    db.commit_log(consumer, 0, start, &[], &[], &[])
        .await
        .unwrap();
    db.append_log(&vec![batch; n]).await.unwrap();
    let after: Vec<i64> = db
        .read_log(start, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    (start, after)
}

/// A session outside the pool, on `schema`, holding `consumer`'s cursor row.
async fn hold_cursor_row(schema: &str, consumer: &str) -> AsyncPgConnection {
    let mut admin = AsyncPgConnection::establish(&postgres_url().unwrap())
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "SET search_path = {schema}; BEGIN; \
             SELECT 1 FROM log_cursors WHERE consumer = '{consumer}' FOR UPDATE"
        ))
        .await
        .unwrap();
    admin
}

/// Waits until `n` sessions of `schema`'s pool wait for a lock, watching
/// from a session of its own (within the holder's transaction
/// `pg_stat_activity` would show the same snapshot at every look).
async fn until_waiting(schema: &str, n: i64, what: &str) {
    let mut watcher = AsyncPgConnection::establish(&postgres_url().unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_on_locks(&mut watcher, schema).await < n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sessions holding the events lock shared (the key as PostgreSQL splits
/// it: high and low 32 bits).
async fn sharing_the_events_lock(admin: &mut AsyncPgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND mode = 'ShareLock' AND classid = 25974 AND objid = 1953525619 AND objsubid = 1",
    )
    .get_result::<Count>(admin)
    .await
    .unwrap()
    .n
}

/// Two consecutive ranges' commits on their way at once (what the consumer
/// does on PostgreSQL): both write their events while the earlier one is
/// still open, and they land in range order, the later one's positions all
/// above the earlier one's. Without the wait on the earlier range, the
/// later commit would find the cursor short of its range and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_log_commits_write_side_by_side_and_land_in_order() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.postgres_schema().unwrap().to_owned();
    let (start, after) = log_after_a_cursor(&db, "two", 2).await;
    let (first, second) = (after[0], after[1]);
    let mut admin = hold_cursor_row(&schema, "two").await;
    let commit = |after: i64, through: i64, tag: &'static str| {
        let db = storage::Database::clone(&db);
        tokio::spawn(async move {
            db.commit_log("two", after, through, &events(tag, 300), &[], &[])
                .await
        })
    };
    let earlier = commit(start, first, "earlier");
    until_waiting(&schema, 1, "the earlier commit never waited").await;
    let later = commit(first, second, "later");
    until_waiting(&schema, 2, "the later commit never waited").await;
    assert_eq!(
        sharing_the_events_lock(&mut admin).await,
        2,
        "both commits hold the events lock shared, their events written"
    );
    assert!(
        positions(&db).await.is_empty(),
        "nothing visible before either lands"
    );
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        earlier.await.unwrap().unwrap(),
        storage::LogCommit::Committed
    );
    assert_eq!(later.await.unwrap().unwrap(), storage::LogCommit::Committed);
    assert_eq!(db.log_cursor("two").await.unwrap(), second);
    let stored = db.read_events(None, 10_000).await.unwrap();
    let tags: Vec<&str> = stored
        .iter()
        .map(|e| {
            let event = Event::from_json(&e.json).unwrap();
            let id = event.event_id.unwrap();
            if id.as_str().starts_with("earlier-") {
                "earlier"
            } else {
                "later"
            }
        })
        .collect();
    let expected: Vec<&str> = ["earlier"; 300].into_iter().chain(["later"; 300]).collect();
    assert_eq!(
        tags, expected,
        "the earlier range's events first, by position"
    );
}

#[derive(QueryableByName)]
struct Compression {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    method: Option<String>,
}

/// A log row's events are compressed with lz4 on their way into TOAST,
/// not with PostgreSQL's default, pglz (a migration sets the column's
/// compression; this server has lz4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rows_are_compressed_with_lz4() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.postgres_schema().unwrap().to_owned();
    let batch = events("lz4", 1_000);
    db.append_log(&[NewLogBatch {
        producer: None,
        events: &batch,
    }])
    .await
    .unwrap();
    let mut admin = AsyncPgConnection::establish(&postgres_url().unwrap())
        .await
        .unwrap();
    let stored: Compression = diesel::sql_query(format!(
        "SELECT pg_column_compression(data) AS method FROM {schema}.event_log"
    ))
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(stored.method.as_deref(), Some("lz4"));
}

/// A log commit whose events take more bytes than one statement carries:
/// on PostgreSQL they go as several array inserts, pipelined on one
/// connection into the block of ids the commit reserved. Every event is
/// stored once, at consecutive positions, in the range's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_larger_than_one_statement_stores_its_events_in_order() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (start, after) = log_after_a_cursor(&db, "big", 1).await;
    // ~1 KB each, ~1 MB in all: five statements of at most 256 KiB.
    let pad = "x".repeat(1_000);
    let big: Vec<Event> = (0..1_000)
        .map(|i| {
            Event::from_json(&format!(
                r#"{{"event_id":"big-{i}","user_id":"u","action":"a","attributes":{{"pad":"{pad}"}}}}"#
            ))
            .unwrap()
        })
        .collect();
    assert_eq!(
        db.commit_log("big", start, after[0], &big, &[], &[])
            .await
            .unwrap(),
        storage::LogCommit::Committed
    );
    let stored = db.read_events(None, 10_000).await.unwrap();
    let ids: Vec<String> = stored
        .iter()
        .map(|e| {
            Event::from_json(&e.json)
                .unwrap()
                .event_id
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (0..1_000).map(|i| format!("big-{i}")).collect();
    assert_eq!(ids, expected, "every event once, in the range's order");
    assert!(
        stored
            .windows(2)
            .all(|w| w[1].position == w[0].position + 1),
        "consecutive positions"
    );
}

/// The later of two ranges' commits lands only after the earlier one, even
/// when it reaches the cursor first: here the earlier one is held before it
/// writes (another writer holds the events lock), and the later one has no
/// events to write. Without its wait on the earlier range it would find the
/// cursor short of its range and store nothing (`Moved`), and the consumer
/// would have to repeat it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_commit_waits_for_the_earlier_range_to_land() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.postgres_schema().unwrap().to_owned();
    let (start, after) = log_after_a_cursor(&db, "wait", 2).await;
    let (first, second) = (after[0], after[1]);
    let mut admin = AsyncPgConnection::establish(&postgres_url().unwrap())
        .await
        .unwrap();
    // The events lock, as another writer into `events` takes it.
    admin
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(111559434071923)")
        .await
        .unwrap();
    let commit = |after: i64, through: i64, n: usize| {
        let db = storage::Database::clone(&db);
        tokio::spawn(async move {
            db.commit_log("wait", after, through, &events("wait", n), &[], &[])
                .await
        })
    };
    let earlier = commit(start, first, 10);
    until_waiting(
        &schema,
        1,
        "the earlier commit never waited for the events lock",
    )
    .await;
    let later = commit(first, second, 0);
    until_waiting(
        &schema,
        2,
        "the later commit never waited for the earlier one",
    )
    .await;
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        earlier.await.unwrap().unwrap(),
        storage::LogCommit::Committed
    );
    assert_eq!(
        later.await.unwrap().unwrap(),
        storage::LogCommit::Committed,
        "the later commit waited for the earlier range, then landed"
    );
    assert_eq!(db.log_cursor("wait").await.unwrap(), second);
    assert_eq!(positions(&db).await.len(), 10);
}

/// A commit whose reserved positions a later commit of the same consumer
/// overtook (one of a process that lost its lease mid-commit, or one that
/// reserved after it) stores nothing, though the cursor is where it
/// expects: landing would put its events below positions a subscriber may
/// have read past. Its repeat reserves new positions and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_overtaken_by_later_positions_stores_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.postgres_schema().unwrap().to_owned();
    let (start, after) = log_after_a_cursor(&db, "over", 1).await;
    let through = after[0];
    let mut admin = hold_cursor_row(&schema, "over").await;
    let commit = || {
        let db = storage::Database::clone(&db);
        tokio::spawn(async move {
            db.commit_log("over", start, through, &events("slow", 20), &[], &[])
                .await
        })
    };
    let slow = commit();
    until_waiting(&schema, 1, "the commit never waited on the row").await;
    // What an overtaking commit leaves behind: positions reserved after the
    // slow commit's, recorded as the consumer's highest.
    admin
        .batch_execute(
            "UPDATE log_cursors SET events_through = reserve_event_ids(5) + 4 \
             WHERE consumer = 'over'; COMMIT",
        )
        .await
        .unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), storage::LogCommit::Overtaken);
    assert!(positions(&db).await.is_empty(), "nothing stored");
    assert_eq!(db.log_cursor("over").await.unwrap(), start);
    assert_eq!(
        commit().await.unwrap().unwrap(),
        storage::LogCommit::Committed
    );
    assert_eq!(
        positions(&db).await.len(),
        20,
        "the repeat stored them once"
    );
}

/// The signal ticks once events are committed, so a caught-up subscriber
/// wakes without polling.
pub async fn storing_events_wakes_subscribers(db: &TestDb) {
    let mut stored = db.stored_signal().subscribe();
    stored.borrow_and_update();
    db.append_events(WriteId::generate(), &events("wake", 3))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), stored.changed())
        .await
        .expect("woken within a second")
        .unwrap();
}

/// Retention removes the oldest positions in bounded steps, only those
/// older than the age, records how far it went, and positions are never
/// handed out again, even once the table is empty.
pub async fn retention_removes_a_prefix_in_bounded_steps(db: &TestDb) {
    db.append_events(WriteId::generate(), &events("old", 10))
        .await
        .unwrap();
    let old = positions(db).await;
    assert_eq!(db.expired_through().await.unwrap(), 0);

    let kept = db
        .expire_events(Duration::from_secs(3_600), 100)
        .await
        .unwrap();
    assert_eq!(
        (kept.events, kept.through),
        (0, 0),
        "nothing is an hour old"
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let step = db.expire_events(Duration::ZERO, 4).await.unwrap();
    assert_eq!((step.events, step.through), (4, old[3]), "one bounded step");
    assert_eq!(db.expired_through().await.unwrap(), old[3]);
    assert_eq!(positions(db).await, old[4..]);

    let rest = db.expire_events(Duration::ZERO, 100).await.unwrap();
    assert_eq!((rest.events, rest.through), (6, old[9]));
    assert!(positions(db).await.is_empty());

    db.append_events(WriteId::generate(), &events("new", 2))
        .await
        .unwrap();
    let new = positions(db).await;
    assert!(
        new[0] > old[9],
        "positions are never reused: {new:?} after {old:?}"
    );
    let none = db
        .expire_events(Duration::from_secs(3_600), 100)
        .await
        .unwrap();
    assert_eq!(
        (none.events, none.through),
        (0, old[9]),
        "fresh events stay"
    );
}
