//! The behaviour every backend must have. Each function runs against SQLite
//! and PostgreSQL (`test_support::backend_tests!` in main.rs).

use std::collections::HashSet;
use std::sync::Arc;

use domain::{
    Cents, Currency, DeadLetter, DomainError, Event, IdempotencyKey, NewOrder, OrderId, OrderLine,
    OrderStatus, Product, ProductId, ProductName, Quantity, Sku, UserId, Warehouse, WarehouseId,
    WarehouseName, WriteId,
};
use storage::{
    Backend, CatalogRepository, Conflict, Database, DeadLetterStore, EventStore, LogAppend,
    LogCommit, NewLogBatch, OrderRepository, StorageError, StoreConfig, Written, migrate,
};
use test_support::{LEGACY_EVENTS as LEGACY, TestDb};

pub use super::feed::{
    retention_removes_a_prefix_in_bounded_steps, storing_events_wakes_subscribers,
};

pub fn new_order(user: &str, key: Option<&str>, prices: &[i64]) -> NewOrder {
    let lines = prices
        .iter()
        .enumerate()
        .map(|(n, price)| {
            OrderLine::new(
                "lines",
                ProductId::parse(format!("p-{n}")).unwrap(),
                Quantity::parse_field("q", u32::try_from(n).unwrap() + 1).unwrap(),
                Cents::new(*price),
            )
            .unwrap()
        })
        .collect();
    NewOrder::new(
        UserId::parse(user).unwrap(),
        lines,
        Currency::parse("EUR").unwrap(),
        key.map(|k| IdempotencyKey::parse(k).unwrap()),
    )
    .unwrap()
}

fn product(id: &str, sku: &str, warehouses: &[(&str, bool)]) -> Product {
    Product::new(
        ProductId::parse(id).unwrap(),
        Sku::parse(sku).unwrap(),
        ProductName::parse(format!("Product {id}")).unwrap(),
        warehouses
            .iter()
            .map(|(w, primary)| Warehouse {
                id: WarehouseId::parse(*w).unwrap(),
                name: WarehouseName::parse(format!("Warehouse {w}")).unwrap(),
                is_primary: *primary,
            })
            .collect(),
    )
    .unwrap()
}

pub async fn created_order_reads_back_equal(db: &TestDb) {
    let created = db
        .create_order(new_order("u-1", None, &[250, 1_000, 0]))
        .await
        .unwrap();
    assert!(created.created);
    let order = created.order;
    assert_eq!(order.status(), OrderStatus::Pending);
    assert_eq!(order.version(), 1);
    assert_eq!(order.total(), Cents::new(250 + 2 * 1_000));
    assert_eq!(db.find_order(order.id()).await.unwrap(), order);
}

pub async fn missing_order_is_not_found(db: &TestDb) {
    let id = OrderId::generate();
    let err = db.find_order(id).await.unwrap_err();
    assert_eq!(
        err,
        StorageError::NotFound {
            entity: "order",
            id: id.to_string()
        }
    );
    assert_eq!(err.to_string(), format!("order {id} not found"));
}

pub async fn idempotency_key_returns_the_original_order(db: &TestDb) {
    let first = db
        .create_order(new_order("u-1", Some("k-1"), &[100]))
        .await
        .unwrap();
    let again = db
        .create_order(new_order("u-1", Some("k-1"), &[100]))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(
        again.order, first.order,
        "the retry answers with the original order"
    );
    // The same key with a different request is refused, naming the key.
    let reused = db
        .create_order(new_order("u-1", Some("k-1"), &[999]))
        .await
        .unwrap_err();
    assert!(
        matches!(&reused, StorageError::Domain(DomainError::IdempotencyKeyReused(key)) if key.as_str() == "k-1"),
        "{reused:?}"
    );
    // Keys are per user; no key means always new.
    let other_user = db
        .create_order(new_order("u-2", Some("k-1"), &[100]))
        .await
        .unwrap();
    assert!(other_user.created);
    let keyless = db
        .create_order(new_order("u-1", None, &[100]))
        .await
        .unwrap();
    assert!(keyless.created);
    let page = db
        .list_orders(&UserId::parse("u-1").unwrap(), 0, None)
        .await
        .unwrap();
    assert_eq!(
        page.orders.len(),
        2,
        "u-1 has the keyed order once plus the keyless one"
    );
}

pub async fn status_update_checks_version_and_transition(db: &TestDb) {
    let order = db
        .create_order(new_order("u-1", None, &[100]))
        .await
        .unwrap()
        .order;
    let paid = db
        .update_status(order.id(), OrderStatus::Paid, 1)
        .await
        .unwrap();
    assert_eq!((paid.status(), paid.version()), (OrderStatus::Paid, 2));
    assert_eq!(db.find_order(order.id()).await.unwrap(), paid);

    let stale = db
        .update_status(order.id(), OrderStatus::Shipped, 1)
        .await
        .unwrap_err();
    assert_eq!(
        stale,
        StorageError::Conflict(Conflict::StaleVersion {
            id: order.id().to_string(),
            expected: 1,
            actual: 2
        })
    );
    let illegal = db
        .update_status(order.id(), OrderStatus::Pending, 2)
        .await
        .unwrap_err();
    assert_eq!(
        illegal,
        StorageError::Domain(DomainError::IllegalTransition {
            from: OrderStatus::Paid,
            to: OrderStatus::Pending
        })
    );
    let missing = db
        .update_status(OrderId::generate(), OrderStatus::Paid, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StorageError::NotFound { .. }),
        "{missing:?}"
    );
    // Failed updates changed nothing.
    assert_eq!(db.find_order(order.id()).await.unwrap(), paid);
}

pub async fn list_orders_pages_newest_first(db: &TestDb) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(
            db.create_order(new_order("u-list", None, &[n]))
                .await
                .unwrap()
                .order
                .id(),
        );
    }
    db.create_order(new_order("someone-else", None, &[1]))
        .await
        .unwrap();
    ids.reverse(); // newest first

    let user = UserId::parse("u-list").unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = db.list_orders(&user, 3, after).await.unwrap();
        pages += 1;
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.iter().map(|o| o.id()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
    // A page exactly filling the rest has no next page.
    let all = db.list_orders(&user, 7, None).await.unwrap();
    assert_eq!((all.orders.len(), all.next), (7, None));
}

pub async fn product_upsert_replaces_warehouses_atomically(db: &TestDb) {
    let v1 = product("p-1", "SKU-1", &[("w1", true), ("w2", false)]);
    db.upsert_product(v1.clone()).await.unwrap();
    assert_eq!(db.get_product(v1.id()).await.unwrap(), v1);

    let v2 = product("p-1", "SKU-1b", &[("w3", false), ("w2", true)]);
    db.upsert_product(v2.clone()).await.unwrap();
    let stored = db.get_product(v2.id()).await.unwrap();
    assert_eq!(stored, v2, "warehouses replaced wholesale, order kept");
    assert_eq!(stored.primary_warehouse().unwrap().id.as_str(), "w2");

    let missing = db
        .get_product(&ProductId::parse("nope").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        StorageError::NotFound {
            entity: "product",
            ..
        }
    ));
}

pub async fn product_without_primary_loads_but_reports_the_gap(db: &TestDb) {
    for (id, sku, warehouses) in [
        ("bare", "SKU-B", &[][..]),
        ("unmarked", "SKU-U", &[("w1", false)][..]),
    ] {
        let p = product(id, sku, warehouses);
        db.upsert_product(p.clone()).await.unwrap();
        let stored = db.get_product(p.id()).await.unwrap();
        assert_eq!(stored, p);
        assert_eq!(
            stored.primary_warehouse().unwrap_err(),
            DomainError::NoPrimaryWarehouse(p.id().clone())
        );
    }
}

pub async fn database_enforces_one_primary_and_unique_sku(db: &TestDb) {
    db.upsert_product(product("p-a", "SKU-A", &[("w1", true)]))
        .await
        .unwrap();
    // The domain rejects two primaries before they reach the database; the
    // database refuses them too, for writers that bypass the domain.
    let err = db
        .execute_raw("INSERT INTO warehouses (product_id, warehouse_id, position, name, is_primary) VALUES ('p-a', 'w2', 1, 'W2', TRUE)")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Conflict(Conflict::Duplicate(_))),
        "second primary must violate the partial unique index: {err:?}"
    );
    let err = db.execute_raw("UPDATE orders SET total_cents = -1").await;
    assert!(err.is_ok(), "no orders yet, nothing to violate");
    db.create_order(new_order("u", None, &[5])).await.unwrap();
    let err = db
        .execute_raw("UPDATE orders SET total_cents = -1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "CHECK violation is Invalid: {err:?}"
    );

    let err = db
        .upsert_product(product("p-b", "SKU-A", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Conflict(Conflict::Duplicate(_))),
        "{err:?}"
    );
    assert!(matches!(
        db.get_product(&ProductId::parse("p-b").unwrap())
            .await
            .unwrap_err(),
        StorageError::NotFound { .. }
    ));
}

pub async fn events_round_trip_byte_for_byte_in_order(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let (first, second) = events.split_at(200);
    db.append_events(WriteId::generate(), first).await.unwrap();
    db.append_events(WriteId::generate(), second).await.unwrap();
    let mut out = String::new();
    let mut after = None;
    loop {
        let page = db.read_events(after, 128).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        for stored in &page {
            out.push_str(&stored.json);
            out.push('\n');
        }
    }
    assert_eq!(out, LEGACY, "export equals the fixture byte for byte");
}

pub async fn large_event_batches_are_one_transaction(db: &TestDb) {
    let event = Event::from_json(r#"{"user_id":"u","action":"login"}"#).unwrap();
    let batch = vec![event.clone(); 2_500]; // three INSERT chunks
    db.append_events(WriteId::generate(), &batch).await.unwrap();
    assert_eq!(db.read_events(None, 10_000).await.unwrap().len(), 2_500);
    // A database rule that refuses one marked event, placed in the last
    // chunk of the next batch: its earlier chunks must not stay stored.
    let refuse_poison = match db.backend() {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events \
             WHEN NEW.event_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END;"
        }
        Backend::Postgres => {
            "ALTER TABLE events ADD CONSTRAINT refuse_poison \
             CHECK (event_id IS DISTINCT FROM 'poison')"
        }
    };
    db.execute_raw(refuse_poison).await.unwrap();
    let mut poisoned = vec![event; 2_500];
    poisoned
        .push(Event::from_json(r#"{"event_id":"poison","user_id":"u","action":"login"}"#).unwrap());
    let refused = db.append_events(WriteId::generate(), &poisoned).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        db.read_events(None, 10_000).await.unwrap().len(),
        2_500,
        "no chunk of the refused batch was kept"
    );
}

/// The same write id stores once, however often it is sent, and a
/// dead-letter write under an append's id learns that the append went
/// through.
pub async fn batch_writes_are_idempotent_per_write_id(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(10)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let write = WriteId::generate();
    assert_eq!(
        db.append_events(write, &events).await.unwrap(),
        Written::Stored
    );
    assert_eq!(
        db.append_events(write, &events).await.unwrap(),
        Written::AlreadyStored
    );
    let letters: Vec<DeadLetter> = events
        .iter()
        .map(|event| DeadLetter {
            event: event.clone(),
            reason: "fallback".into(),
        })
        .collect();
    assert_eq!(
        db.dead_letter(write, &letters).await.unwrap(),
        Written::StoredElsewhere
    );
    assert_eq!(db.read_events(None, 100).await.unwrap().len(), 10);
    assert!(db.read_dead_letters(None, 100).await.unwrap().is_empty());
}

/// A commit held past the operation budget: the caller hears
/// `OutcomeUnknown` (never `Unavailable`, which promises nothing was
/// written), the write still commits once the hold ends, and repeating it
/// under the same write id stores nothing twice.
pub async fn a_write_held_past_its_budget_is_outcome_unknown_and_stored_once(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(3)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let mut config = db.config();
    config.operation_timeout = std::time::Duration::from_millis(300);
    let impatient = Database::open(config);
    // A second session holds the events table's write lock.
    let holder = Database::open(StoreConfig {
        max_connections: 1,
        ..db.config()
    });
    let hold = match db.backend() {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN; LOCK TABLE events IN EXCLUSIVE MODE",
    };
    holder.execute_raw(hold).await.unwrap();

    let write = WriteId::generate();
    let held = impatient.append_events(write, &events).await;
    assert!(
        matches!(held, Err(StorageError::OutcomeUnknown(_))),
        "{held:?}"
    );
    // The write is still waiting for the lock: release it.
    holder.execute_raw("COMMIT").await.unwrap();

    // The repeat and the first attempt race for the lock; whichever claims
    // the write id stores the rows, the other stores nothing. (PostgreSQL:
    // the first attempt already holds the id's key, so the repeat waits for
    // it and always finds it applied.)
    let repeated = db.append_events(write, &events).await.unwrap();
    if db.backend() == Backend::Postgres {
        assert_eq!(repeated, Written::AlreadyStored);
    } else {
        assert!(
            matches!(repeated, Written::Stored | Written::AlreadyStored),
            "{repeated:?}"
        );
    }
    // Watch until the first attempt has finished too (it holds a pooled
    // connection of `impatient` until then): never more than one copy.
    for _ in 0..40 {
        let stored = db.read_events(None, 100).await.unwrap().len();
        assert!(stored <= 3, "stored twice: {stored}");
        if impatient.ping().await.is_ok() && stored == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.read_events(None, 100).await.unwrap().len(),
        3,
        "stored exactly once"
    );
}

pub async fn dead_letters_are_stored_with_their_reason(db: &TestDb) {
    let event = Event::from_json(LEGACY.lines().nth(4).unwrap()).unwrap();
    let letters = vec![
        DeadLetter {
            event: event.clone(),
            reason: "step enrich: missing key".into(),
        },
        DeadLetter {
            event,
            reason: "queue full".into(),
        },
    ];
    db.dead_letter(WriteId::generate(), &letters).await.unwrap();
    let stored = db.read_dead_letters(None, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].json, LEGACY.lines().nth(4).unwrap());
    assert_eq!(stored[1].reason, "queue full");
    assert!(stored[0].position < stored[1].position);
    assert!(
        db.read_dead_letters(Some(stored[1].position), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// What a commit leaves is visible to a pool that shares nothing with the
/// writer's. (Surviving a killed process is the server suite's
/// `acknowledged_orders_survive_sigkill`.)
pub async fn committed_writes_are_read_by_a_new_pool(db: &TestDb) {
    let order = db
        .create_order(new_order("u-durable", None, &[42]))
        .await
        .unwrap()
        .order;
    let event = Event::from_json(LEGACY.lines().next().unwrap()).unwrap();
    db.append_events(WriteId::generate(), std::slice::from_ref(&event))
        .await
        .unwrap();
    // A new pool: nothing cached in a connection, only what was committed.
    let reopened = Database::connect(db.config()).await.unwrap();
    assert_eq!(reopened.find_order(order.id()).await.unwrap(), order);
    assert_eq!(
        reopened.read_events(None, 10).await.unwrap()[0].json,
        event.to_json().unwrap()
    );
}

pub async fn migrations_rerun_as_a_no_op(db: &TestDb) {
    assert_eq!(migrate::run(&db.config()).await.unwrap(), 0);
    db.ping().await.unwrap();
}

/// Callers give up at every point of a write (a client deadline); the pool
/// must never hand out a connection with a transaction still open, and each
/// write is all-or-nothing.
pub async fn cancelled_writes_never_leave_an_open_transaction(db: &TestDb) {
    let mut config = db.config();
    config.max_connections = 1; // every call reuses the one connection
    let single = Database::open(config);
    let order = single
        .create_order(new_order("u-cancel", None, &[1]))
        .await
        .unwrap()
        .order;

    // Cut calls after 0, 1, 2, … polls: a cancelled future is dropped at
    // one of its await points, so this reaches every point of a write, from
    // before BEGIN to around COMMIT, without depending on timer resolution.
    let mut cut_short = 0;
    for attempt in 0..60u32 {
        let cut = attempt % 15;
        let key = format!("k-{attempt}");
        let create = single.create_order(new_order("u-cancel", Some(&key), &[1, 2]));
        cut_short += u32::from(cancel_after_polls(create, cut).await.is_none());
        let update = single.update_status(order.id(), OrderStatus::Cancelled, 99);
        let _ = cancel_after_polls(update, cut).await;
    }
    assert!(
        cut_short > 0 && cut_short < 60,
        "both outcomes must occur: {cut_short} of 60 cut short"
    );
    // The one connection still works, outside any transaction: a fresh write
    // through it commits and is visible from an independent pool.
    let last = single
        .create_order(new_order("u-cancel", Some("after"), &[3]))
        .await
        .unwrap()
        .order;
    let independent = Database::open(db.config());
    assert_eq!(independent.find_order(last.id()).await.unwrap(), last);
    // A second writer is not blocked by a dangling transaction's locks.
    let paid = independent
        .update_status(order.id(), OrderStatus::Paid, 1)
        .await
        .unwrap();
    assert_eq!(paid.version(), 2);
    // Every write was all-or-nothing: each two-line order is exactly one
    // whose idempotency key was stored with it, so retrying every key finds
    // exactly those orders (and creates the ones that never committed).
    let user = UserId::parse("u-cancel").unwrap();
    let before = independent
        .list_orders(&user, 500, None)
        .await
        .unwrap()
        .orders;
    let two_line: HashSet<OrderId> = before
        .iter()
        .filter(|o| o.lines().len() == 2)
        .map(|o| o.id())
        .collect();
    let mut found_by_key = HashSet::new();
    for attempt in 0..60u32 {
        let retry = independent
            .create_order(new_order(
                "u-cancel",
                Some(&format!("k-{attempt}")),
                &[1, 2],
            ))
            .await
            .unwrap();
        if !retry.created {
            found_by_key.insert(retry.order.id());
        }
    }
    assert_eq!(two_line, found_by_key);
    if let Some(schema) = db.postgres_schema() {
        crate::postgres_only::assert_no_idle_transactions(schema).await;
    }
}

/// Drives `fut` for at most `polls` pending polls, then drops it: a
/// cancellation at an exact await point.
async fn cancel_after_polls<F: std::future::Future>(fut: F, polls: u32) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut pending = 0;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending if pending >= polls => std::task::Poll::Ready(None),
        std::task::Poll::Pending => {
            pending += 1;
            std::task::Poll::Pending
        }
    })
    .await
}

pub async fn concurrent_tasks_create_read_and_update_consistently(db: &TestDb) {
    let db = Arc::new(Database::open(db.config()));
    let mut tasks = Vec::new();
    for n in 0..32 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{n}");
            let user = format!("user-{}", n % 4);
            let first = db
                .create_order(new_order(&user, Some(&key), &[n]))
                .await
                .unwrap();
            let retry = db
                .create_order(new_order(&user, Some(&key), &[n]))
                .await
                .unwrap();
            assert_eq!(retry.order.id(), first.order.id());
            assert!(first.created && !retry.created);
            let read = db.find_order(first.order.id()).await.unwrap();
            assert_eq!(read, first.order);
            let paid = db
                .update_status(read.id(), OrderStatus::Paid, read.version())
                .await
                .unwrap();
            assert_eq!(paid.version(), 2);
            paid.id()
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 32);
    let mut stored = 0;
    for u in 0..4 {
        let page = db
            .list_orders(&UserId::parse(format!("user-{u}")).unwrap(), 500, None)
            .await
            .unwrap();
        assert!(
            page.orders
                .iter()
                .all(|o| o.status() == OrderStatus::Paid && o.version() == 2)
        );
        stored += page.orders.len();
    }
    assert_eq!(stored, 32, "idempotent retries created nothing twice");

    // Racing updates on one order: exactly one wins per version.
    let id = db
        .create_order(new_order("racer", None, &[1]))
        .await
        .unwrap()
        .order
        .id();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let db = Arc::clone(&db);
            tokio::spawn(async move { db.update_status(id, OrderStatus::Paid, 1).await })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(o) => {
                wins += 1;
                assert_eq!(o.version(), 2);
            }
            Err(StorageError::Conflict(Conflict::StaleVersion { .. })) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// The event log: a group append answers per batch, a producer's retry at
/// or below its last durable sequence is a duplicate, a commit stores the
/// outputs with the cursor and deletes what it passed, and repeating a
/// commit stores nothing twice.
pub async fn event_log_is_exactly_once_per_producer_and_per_commit(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(6)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let batch =
        |producer: Option<(&'static str, u64)>, range: std::ops::Range<usize>| NewLogBatch {
            producer,
            events: &events[range],
        };
    let outcomes = db
        .append_log(&[
            batch(Some(("p-1", 1)), 0..2),
            batch(Some(("p-1", 2)), 2..3),
            batch(Some(("p-1", 2)), 2..3), // the same batch twice in one group
            batch(None, 3..4),
        ])
        .await
        .unwrap();
    let appended = |outcome: &LogAppend| match outcome {
        LogAppend::Appended { position } => Some(*position),
        LogAppend::Duplicate | LogAppend::Gap { .. } => None,
    };
    let first: Vec<Option<i64>> = outcomes.iter().map(appended).collect();
    assert!(
        matches!(first[..], [Some(_), Some(_), None, Some(_)]),
        "{outcomes:?}"
    );
    // A retry of an old sequence in a later group; a new one goes through.
    let outcomes = db
        .append_log(&[batch(Some(("p-1", 1)), 0..2), batch(Some(("p-1", 3)), 4..6)])
        .await
        .unwrap();
    assert!(
        matches!(
            outcomes[..],
            [LogAppend::Duplicate, LogAppend::Appended { .. }]
        ),
        "{outcomes:?}"
    );
    assert_eq!(db.log_backlog("c").await.unwrap(), 6);

    let entries = db.read_log(0, 10).await.unwrap();
    assert_eq!(entries.len(), 4);
    let reported: Vec<i64> = first
        .iter()
        .copied()
        .chain(outcomes.iter().map(appended))
        .flatten()
        .collect();
    let positions: Vec<i64> = entries.iter().map(|e| e.position).collect();
    assert_eq!(
        reported, positions,
        "each append reports the position the batch is read back at"
    );
    assert!(entries.windows(2).all(|w| w[0].position < w[1].position));
    let read: Vec<Event> = entries.iter().flat_map(|e| e.events.clone()).collect();
    assert_eq!(read, events, "read back in order, unchanged");

    // Commit the first two batches' outputs.
    let through = entries[1].position;
    let outputs = &read[..3];
    assert_eq!(
        db.commit_log("c", 0, through, outputs, &[], &[])
            .await
            .unwrap(),
        LogCommit::Committed
    );
    assert_eq!(
        db.commit_log("c", 0, through, outputs, &[], &[])
            .await
            .unwrap(),
        LogCommit::AlreadyCommitted,
        "a repeated commit stores nothing"
    );
    assert_eq!(db.log_cursor("c").await.unwrap(), through);
    assert_eq!(db.log_backlog("c").await.unwrap(), 3);
    assert_eq!(db.read_events(None, 100).await.unwrap().len(), 3);
    let rest = db.read_log(0, 10).await.unwrap();
    assert_eq!(rest.len(), 2, "the committed rows were deleted");
    assert!(rest.iter().all(|e| e.position > through));

    // A commit that starts anywhere but the cursor (another consumer
    // committed part of its range) stores nothing.
    let last = rest[1].position;
    assert_eq!(
        db.commit_log("c", 0, last, &read[3..], &[], &[])
            .await
            .unwrap(),
        LogCommit::Moved { cursor: through },
        "a commit over a range the cursor is inside of is fenced off"
    );
    assert_eq!(db.read_events(None, 100).await.unwrap().len(), 3);
    assert_eq!(db.log_cursor("c").await.unwrap(), through);
    assert_eq!(
        db.commit_log("c", through, last, &read[3..], &[], &[])
            .await
            .unwrap(),
        LogCommit::Committed,
        "from the cursor, it commits"
    );
    assert_eq!(db.read_events(None, 100).await.unwrap().len(), read.len());
}

/// No gaps: batch k of a producer failed (never stored), k+1 is refused
/// with the sequence expected, and the retry of k, then k+1, store both
/// exactly once, in order. Before this rule, k+1 was stored and the retry
/// of k answered `duplicate` without ever having been stored.
pub async fn event_log_refuses_a_sequence_gap(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(3)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let batch = |sequence: u64, at: usize| NewLogBatch {
        producer: Some(("gappy", sequence)),
        events: &events[at..=at],
    };
    // The producer's first batch may carry any sequence.
    let first = db.append_log(&[batch(4, 0)]).await.unwrap();
    assert!(
        matches!(first[..], [LogAppend::Appended { .. }]),
        "{first:?}"
    );
    // Batch 5 failed on its way (a timeout, a full backlog); 6 is sent.
    let gap = db.append_log(&[batch(6, 2)]).await.unwrap();
    assert_eq!(gap, [LogAppend::Gap { expected: 5 }]);
    // The retry of 5, then 6 (here in one group): both stored.
    let retried = db.append_log(&[batch(5, 1), batch(6, 2)]).await.unwrap();
    assert!(
        matches!(
            retried[..],
            [LogAppend::Appended { .. }, LogAppend::Appended { .. }]
        ),
        "{retried:?}"
    );
    let again = db.append_log(&[batch(6, 2)]).await.unwrap();
    assert_eq!(again, [LogAppend::Duplicate]);
    let stored: Vec<Event> = db
        .read_log(0, 10)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|e| e.events)
        .collect();
    assert_eq!(stored, events, "each batch once, in sequence order");
}

/// Producers idle past the age are forgotten, on both logs' records; an
/// active one is kept; a forgotten producer's next batch is its first
/// again.
pub async fn idle_producers_are_forgotten_and_start_afresh(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(1)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let batch = |producer, sequence| NewLogBatch {
        producer: Some((producer, sequence)),
        events: &events,
    };
    db.append_log(&[batch("idle", 1), batch("busy", 1)])
        .await
        .unwrap();
    db.note_appended(&[("idle".to_owned(), 3)]).await.unwrap();
    let kept = db
        .forget_idle_producers(std::time::Duration::from_secs(3_600))
        .await
        .unwrap();
    assert_eq!(kept, 0, "nobody is an hour idle");
    // Idle for a second, busy a moment ago: an age of half a second tells
    // them apart however slow the machine (with 20 ms and 10 ms, a busy
    // machine took longer than 10 ms from busy's batch to the forgetting).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    db.append_log(&[batch("busy", 2)]).await.unwrap();
    let forgotten = db
        .forget_idle_producers(std::time::Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(forgotten, 2, "idle's record on each log");
    let records = db
        .producer_records(&["idle".to_owned(), "busy".to_owned()])
        .await
        .unwrap();
    assert!(!records.contains_key("idle"), "{records:?}");
    assert!(records.contains_key("busy"), "{records:?}");
    // Would be a gap (expected 2) had the record been kept.
    let again = db.append_log(&[batch("idle", 7)]).await.unwrap();
    assert!(
        matches!(again[..], [LogAppend::Appended { .. }]),
        "{again:?}"
    );
    let gap = db.append_log(&[batch("busy", 4)]).await.unwrap();
    assert_eq!(gap, [LogAppend::Gap { expected: 3 }]);
}

/// A commit repeated while the first attempt still runs (the consumer's
/// repeat after an unconfirmed commit) stores its outputs once: the
/// attempts are serialised, so the later one sees the earlier one's cursor.
/// On PostgreSQL the cursor check was a plain read, and concurrent attempts
/// both inserted the events.
pub async fn concurrent_repeats_of_a_log_commit_store_once(db: &TestDb) {
    let template = Event::from_json(LEGACY.lines().next().unwrap()).unwrap();
    let events: Vec<Event> = (0..2_000)
        .map(|n| {
            let mut event = template.clone();
            event.event_id = Some(domain::EventId::parse(format!("repeat-{n}")).unwrap());
            event
        })
        .collect();
    let through = first_log_position(db, &events[..1]).await;
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let db = storage::Database::clone(db);
            let events = events.clone();
            tokio::spawn(async move { db.commit_log("c", 0, through, &events, &[], &[]).await })
        })
        .collect();
    let mut committed = 0;
    for attempt in attempts {
        if attempt.await.unwrap().unwrap() == LogCommit::Committed {
            committed += 1;
        }
    }
    assert_eq!(committed, 1, "one attempt commits, the others find it done");
    assert_eq!(
        db.read_events(None, 10_000).await.unwrap().len(),
        events.len(),
        "the outputs stored once"
    );

    // Once the cursor row exists, repeats wait on the row itself.
    db.append_log(&[NewLogBatch {
        producer: None,
        events: &events[..1],
    }])
    .await
    .unwrap();
    let next = db.read_log(through, 1).await.unwrap()[0].position;
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let db = storage::Database::clone(db);
            let events = events.clone();
            tokio::spawn(async move { db.commit_log("c", through, next, &events, &[], &[]).await })
        })
        .collect();
    let mut committed = 0;
    for attempt in attempts {
        if attempt.await.unwrap().unwrap() == LogCommit::Committed {
            committed += 1;
        }
    }
    assert_eq!(committed, 1, "later ranges too: one attempt commits");
    assert_eq!(
        db.read_events(None, 10_000).await.unwrap().len(),
        2 * events.len(),
        "each range's outputs stored once"
    );
}

/// A row that cannot be decoded is read as damaged (its position, its event
/// count, the error) instead of failing the read, and the commit over it
/// moves it, bytes and all, to `damaged_log_rows`: the log moves on.
pub async fn a_damaged_log_row_is_read_as_such_and_moved_aside(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(3)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let appended = db
        .append_log(&[
            NewLogBatch {
                producer: None,
                events: &events[..1],
            },
            NewLogBatch {
                producer: None,
                events: &events[1..],
            },
        ])
        .await
        .unwrap();
    let [_, LogAppend::Appended { position: bad }] = appended[..] else {
        panic!("{appended:?}");
    };
    // A damaged page: the row's binary body is garbage.
    let garbage = match db.backend() {
        storage::Backend::Postgres => "decode('deadbeef', 'hex')",
        storage::Backend::Sqlite => "x'deadbeef'",
    };
    db.execute_raw(&format!(
        "UPDATE event_log SET data = {garbage} WHERE position = {bad}"
    ))
    .await
    .unwrap();
    let entries = db.read_log(0, 10).await.unwrap();
    assert_eq!(entries.len(), 2, "the read does not fail");
    assert_eq!(entries[0].events, events[..1]);
    assert!(entries[0].damage.is_none());
    let damage = entries[1]
        .damage
        .clone()
        .expect("the second row is damaged");
    assert_eq!(damage.events, 2);
    assert!(
        damage.error.contains(&format!("position {bad}")),
        "{}",
        damage.error
    );
    assert!(entries[1].events.is_empty());

    db.commit_log(
        "c",
        0,
        bad,
        &events[..1],
        &[],
        &[(bad, damage.error.clone())],
    )
    .await
    .unwrap();
    assert!(
        db.read_log(0, 10).await.unwrap().is_empty(),
        "the log moved on"
    );
    let kept = db.damaged_log_rows().await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0].position, kept[0].events), (bad, 2));
    assert_eq!(kept[0].error, damage.error);
    assert_eq!(kept[0].data.as_deref(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
}

/// Log rows appended before the binary form hold JSON lines; after the
/// migration they are read as they were, in position order with the rows
/// written since, and a row holding both forms (or neither) is refused.
pub async fn log_rows_from_before_the_binary_form_still_read(db: &TestDb) {
    let events: Vec<Event> = LEGACY
        .lines()
        .take(5)
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let old_body = Event::json_lines(&events[..3], false).unwrap();
    let literal = old_body.replace('\'', "''");
    db.execute_raw(&format!(
        "INSERT INTO event_log (producer_id, sequence, event_count, body) VALUES ('old', 1, 3, '{literal}')"
    ))
    .await
    .unwrap();
    db.append_log(&[NewLogBatch {
        producer: Some(("new", 1)),
        events: &events[3..],
    }])
    .await
    .unwrap();
    let entries = db.read_log(0, 10).await.unwrap();
    assert_eq!(entries.len(), 2);
    let read: Vec<Event> = entries.iter().flat_map(|e| e.events.clone()).collect();
    assert_eq!(read, events);
    assert_eq!(db.log_backlog("c").await.unwrap(), 5);

    // `'\x01'` reads as a blob on PostgreSQL and as text (not NULL) on SQLite.
    for (body, data) in [("'x'", r"'\x01'"), ("''", "NULL")] {
        let refused = db
            .execute_raw(&format!(
                "INSERT INTO event_log (event_count, body, data) VALUES (1, {body}, {data})"
            ))
            .await;
        assert!(refused.is_err(), "body {body}, data {data}: {refused:?}");
    }
}

/// A lease nobody else holds is taken at once and does not read as lost
/// (SQLite's, which nobody else can hold, too). Between processes:
/// `postgres_only`.
pub async fn the_event_log_lease_is_held_until_lost(db: &TestDb) {
    let storage::Claim::Held(mut lease) =
        db.claim_log_lease(std::time::Duration::ZERO).await.unwrap()
    else {
        panic!("nobody else holds the lease");
    };
    assert!(!lease.is_lost());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), lease.lost())
            .await
            .is_err(),
        "not lost"
    );
}

/// Appends `events` as the log's first batch; its position.
async fn first_log_position(db: &TestDb, events: &[Event]) -> i64 {
    db.append_log(&[NewLogBatch {
        producer: None,
        events,
    }])
    .await
    .unwrap();
    db.read_log(0, 1).await.unwrap()[0].position
}

/// A commit of more events than one insert takes (PostgreSQL: 10,000 an
/// array statement; SQLite: 1,000 a VALUES list) stores them all, in
/// order, once.
pub async fn a_large_log_commit_stores_every_event_in_order(db: &TestDb) {
    let template = Event::from_json(LEGACY.lines().next().unwrap()).unwrap();
    let events: Vec<Event> = (0..25_001)
        .map(|n| {
            let mut event = template.clone();
            event.event_id =
                (n % 3 != 0).then(|| domain::EventId::parse(format!("large-{n}")).unwrap());
            event
        })
        .collect();
    let through = first_log_position(db, &events[..1]).await;
    assert_eq!(
        db.commit_log("c", 0, through, &events, &[], &[])
            .await
            .unwrap(),
        LogCommit::Committed
    );
    let stored = db.read_events(None, 30_000).await.unwrap();
    assert_eq!(stored.len(), events.len());
    assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
    let read: Vec<Event> = stored
        .iter()
        .map(|s| Event::from_json(&s.json).unwrap())
        .collect();
    assert_eq!(read, events, "in order, unchanged");
}
