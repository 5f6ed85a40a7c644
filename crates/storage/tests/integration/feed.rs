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
