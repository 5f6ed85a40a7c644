//! Backend-specific behaviour: concurrent start-up migrations, an
//! unreachable server, and a direct look for dangling transactions.

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain::OrderId;
use storage::{Claim, Database, OrderRepository, StorageError, StoreConfig};

use test_support::{postgres_url, schema_url};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// No session of this test (named after its schema) is idle inside a
/// transaction: a cancelled write left nothing open.
pub async fn assert_no_idle_transactions(schema: &str) {
    let url = postgres_url().unwrap();
    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
    // Give connections the pool is just discarding a moment to close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind::<Text, _>(schema)
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(count.n, 0, "sessions idle in a transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_once() {
    let Some(base) = postgres_url() else { return };
    let schema = format!("orderflow_test_mig_{}", rand::random::<u64>());
    let mut admin = AsyncPgConnection::establish(&base).await.unwrap();
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let config = StoreConfig::new(schema_url(&base, &schema));
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Database::connect(config.clone())))
        .collect();
    let mut ready = Vec::new();
    for start in starts {
        ready.push(start.await.unwrap().expect("every instance comes up"));
    }
    for db in &ready {
        db.ping().await.unwrap();
    }
    let applied: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM {schema}.__diesel_schema_migrations"
    ))
    .get_result(&mut admin)
    .await
    .unwrap();
    let migrations = std::fs::read_dir("../../migrations/postgres")
        .unwrap()
        .count();
    assert_eq!(
        usize::try_from(applied.n).unwrap(),
        migrations,
        "each migration is recorded once"
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Migrations run from a current-thread runtime too (no `block_in_place`).
#[test]
fn postgres_migrations_run_on_a_current_thread_runtime() {
    let Some(base) = postgres_url() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let schema = format!("orderflow_test_ct_{}", rand::random::<u64>());
        let mut admin = AsyncPgConnection::establish(&base).await.unwrap();
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let result = Database::connect(StoreConfig::new(schema_url(&base, &schema))).await;
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        result.unwrap().ping().await.unwrap();
    });
}

#[tokio::test]
async fn postgres_unreachable_fails_fast_as_unavailable() {
    // Port 9 (discard) has no PostgreSQL: connection refused.
    let mut config = StoreConfig::new("postgres://postgres@127.0.0.1:9/test");
    config.acquire_timeout = Duration::from_millis(300);
    config.operation_timeout = Duration::from_millis(800);
    let budget = config.operation_timeout;

    let started = Instant::now();
    let err = Database::connect(config.clone()).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < budget * 2,
        "start-up failed in {:?}",
        started.elapsed()
    );

    let db = Database::open(config);
    let started = Instant::now();
    let err = db.find_order(OrderId::generate()).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() <= budget + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(db.ping().await, Err(StorageError::Unavailable(_))));
}

/// SQLite too: instances starting together on one file migrate once (the
/// run holds SQLite's exclusive lock; the others wait, then find nothing
/// pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_starting_together_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path().join("shared.db").display().to_string());
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Database::connect(config.clone())))
        .collect();
    for start in starts {
        start.await.unwrap().expect("every instance comes up");
    }
}

/// A refused connection is answered at once: not after the wait for a
/// pooled connection (30 s here), since no connection is coming. The call
/// is given 10 s; before, it waited out the 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_unavailable_at_once() {
    let mut config = StoreConfig::new("postgres://postgres@127.0.0.1:9/orderflow");
    config.acquire_timeout = Duration::from_secs(30);
    config.operation_timeout = Duration::from_secs(60);
    let db = Database::open(config);
    for _ in 0..3 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), db.find_order(OrderId::generate()))
                .await
                .expect("answered before the acquire timeout");
        assert!(
            matches!(&answer, Err(StorageError::Unavailable(reason)) if reason.contains("refused")),
            "{answer:?}"
        );
    }
}

/// A database that cannot take writes fails its health round trip, so the
/// server reports NOT_SERVING instead of answering writes with errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_fails_ping_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db").display().to_string();
    Database::connect(StoreConfig::new(path.clone()))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    let read_only = Database::open(StoreConfig::new(format!("file:{path}?mode=ro")));
    let answer = read_only.ping().await;
    assert!(
        matches!(&answer, Err(StorageError::Misconfigured(r)) if r.contains("read-only")),
        "{answer:?}"
    );
    let refused = Database::connect(StoreConfig::new(format!("file:{path}?mode=ro"))).await;
    assert!(
        matches!(refused, Err(StorageError::Misconfigured(_))),
        "{refused:?}"
    );

    let Some(base) = postgres_url() else { return };
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20default_transaction_read_only%3Don");
    let read_only = Database::open(StoreConfig::new(url));
    let answer = read_only.ping().await;
    assert!(
        matches!(&answer, Err(StorageError::Misconfigured(r)) if r.contains("read-only")),
        "{answer:?}"
    );
}

/// Concurrent point reads share two pipelined connections instead of taking
/// one each, and a shared connection PostgreSQL has closed is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_share_two_connections_and_replace_a_broken_one() {
    let Some(test) = test_support::TestDb::postgres().await else {
        return;
    };
    let schema = test.postgres_schema().unwrap().to_owned();
    let created = test
        .create_order(crate::suite::new_order("u-shared", None, &[7]))
        .await
        .unwrap()
        .order;
    let id = created.id();
    // A pool of eight of its own, so only these reads open connections.
    let db = Database::connect(test.config()).await.unwrap();
    let reads: Vec<_> = (0..200)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.find_order(id).await })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().unwrap(), created);
    }
    assert_eq!(
        db.pool_connections().0,
        2,
        "(open, idle) = {:?}",
        db.pool_connections()
    );

    let base = postgres_url().unwrap();
    let mut admin = AsyncPgConnection::establish(&base).await.unwrap();
    let closed: Count = diesel::sql_query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind::<Text, _>(&schema)
    .get_result(&mut admin)
    .await
    .unwrap();
    assert!(closed.n >= 2, "closed {}", closed.n);
    // A read on a closed connection fails (as on a pooled one); the shared
    // connection is then dropped, so reads recover instead of failing on it
    // for good.
    let mut recovered = false;
    for _ in 0..10 {
        match db.find_order(id).await {
            Ok(order) => {
                assert_eq!(order, created);
                recovered = true;
                break;
            }
            Err(error) => assert!(matches!(error, StorageError::Unavailable(_)), "{error}"),
        }
    }
    assert!(recovered, "reads still fail after 10 tries");
    for _ in 0..4 {
        assert_eq!(db.find_order(id).await.unwrap(), created);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_statements_and_each_gets_its_own_order() {
    let Some(test) = test_support::TestDb::postgres().await else {
        return;
    };
    // Orders of one to four lines, so a batch's rows must be split between
    // its orders correctly.
    let mut created = Vec::new();
    for n in 0..40_i64 {
        let prices: Vec<i64> = (0..=n % 4).map(|line| 100 * n + line).collect();
        let order = test
            .create_order(crate::suite::new_order(
                &format!("u-batch-{n}"),
                None,
                &prices,
            ))
            .await
            .unwrap()
            .order;
        created.push(order);
    }
    let db = Database::connect(test.config()).await.unwrap();
    // Each order asked for four times, interleaved with ids that have no order.
    let mut lookups = Vec::new();
    for _ in 0..4 {
        for order in &created {
            let (db, id) = (db.clone(), order.id());
            lookups.push((
                Some(order.clone()),
                tokio::spawn(async move { db.find_order(id).await }),
            ));
        }
        for _ in 0..10 {
            let (db, id) = (db.clone(), OrderId::generate());
            lookups.push((None, tokio::spawn(async move { db.find_order(id).await })));
        }
    }
    let asked = lookups.len() as u64;
    for (expected, lookup) in lookups {
        match (expected, lookup.await.unwrap()) {
            (Some(order), found) => assert_eq!(found.unwrap(), order),
            (
                None,
                Err(StorageError::NotFound {
                    entity: "order", ..
                }),
            ) => {}
            (None, other) => panic!("an unknown id answered {other:?}"),
        }
    }
    let (batches, ids) = db.order_read_batches();
    assert!(ids >= 80, "every distinct id asked at least once: {ids}");
    assert!(ids <= asked, "{ids} ids for {asked} lookups");
    assert!(
        batches < ids,
        "{batches} statements for {ids} ids: concurrent lookups were not batched"
    );
}

/// One process at a time holds the database event log's consumer lease: a
/// second claim waits, then fails naming the holder; another schema is
/// another lease; the holder's end frees it for a waiting claim; and a
/// holder whose session is ended while someone else takes the lock learns
/// that it lost the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_event_log_lease_is_held_by_one_process_at_a_time() {
    let Some(base) = postgres_url() else { return };
    let schema = format!("orderflow_test_lease_{}", rand::random::<u64>());
    let other = format!("{schema}_other");
    let mut admin = AsyncPgConnection::establish(&base).await.unwrap();
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE SCHEMA {other}"))
        .await
        .unwrap();
    let open = |schema: &str| Database::connect(StoreConfig::new(schema_url(&base, schema)));
    let (first, second) = (open(&schema).await.unwrap(), open(&schema).await.unwrap());

    let Claim::Held(held) = first.claim_log_lease(Duration::from_secs(5)).await.unwrap() else {
        panic!("the first claim takes the lease");
    };
    let started = Instant::now();
    let Claim::Elsewhere(holder) = second
        .claim_log_lease(Duration::from_millis(600))
        .await
        .unwrap()
    else {
        panic!("the lease is held");
    };
    assert!(started.elapsed() >= Duration::from_millis(600), "it waited");
    assert!(
        holder.contains(&schema) && holder.contains("backend pid"),
        "names the holder (its application_name): {holder}"
    );
    let elsewhere = open(&other).await.unwrap();
    let other_lease = tokio::time::timeout(
        Duration::from_secs(2),
        elsewhere.claim_log_lease(Duration::ZERO),
    )
    .await
    .expect("another schema's lease is free")
    .unwrap();
    assert!(matches!(other_lease, Claim::Held(_)), "{other_lease:?}");

    // The holder lets go: a waiting claim takes it.
    let waiting = {
        let second = second.clone();
        tokio::spawn(async move { second.claim_log_lease(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still held");
    drop(held);
    let Claim::Held(mut taken) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("taken once the holder let go")
        .unwrap()
        .unwrap()
    else {
        panic!("taken once the holder let go");
    };
    assert!(!taken.is_lost());

    // Its session ended (a network cut, an operator) while another
    // session takes the lock: the holder learns it lost the lease.
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 \
               AND l.classid = {}::int4::oid AND l.objid = hashtext('{schema}')::oid; \
             SELECT pg_advisory_lock({}, hashtext('{schema}'))",
            storage::LEASE_CLASS,
            storage::LEASE_CLASS
        ))
        .await
        .unwrap();
    let holder = tokio::time::timeout(Duration::from_secs(10), taken.lost())
        .await
        .expect("the loss is noticed within a few heartbeats");
    assert!(taken.is_lost());
    assert!(holder.contains("backend pid"), "{holder}");

    drop(admin);
    let mut admin = AsyncPgConnection::establish(&base).await.unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP SCHEMA {other} CASCADE"
        ))
        .await
        .unwrap();
}
