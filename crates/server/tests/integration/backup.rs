//! `orderflow backup` and `orderflow restore` against the real binary: a
//! backup taken while writers go on holds every order acknowledged before
//! it began and passes SQLite's integrity check; a restore is refused while
//! a server holds the database, and once it is stopped puts the backup in
//! place for the next start. On PostgreSQL both point to its own tools.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderflow_proto::proto::GetOrderRequest;
use test_support::TestDb;

use crate::support::{Server, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_restores_every_order_acknowledged_before_it() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut orders = server.orders().await;
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = crate::suite::create(&format!("backup-{w}-{n}"), "");
                let order = orders.create_order(request).await.unwrap().into_inner();
                acknowledged.lock().unwrap().push(order.order_id);
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(before.len() > 10, "the writers got going");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db").display().to_string();
    let url = db.url().to_owned();
    let args = ["backup", "--to", copy.as_str()].map(str::to_owned);
    let (status, _, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::run_url(&url, &args, None)
    })
    .await
    .unwrap();
    let during = acknowledged.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("integrity check ok"), "{stderr}");
    assert!(during > before.len(), "writes went on during the backup");

    // A second backup never overwrites the first.
    let (status, _, stderr) = run(&db, &["backup", "--to", &copy], None);
    assert!(!status.success());
    assert!(stderr.contains("never overwrites"), "{stderr}");

    // The server holds the database: a restore is refused, and so is a
    // second server.
    let (status, _, stderr) = run(&db, &["restore", "--from", &copy], None);
    assert!(!status.success());
    assert!(stderr.contains("another process holds"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(server.terminate().success());

    let (status, _, stderr) = run(&db, &["restore", "--from", &copy], None);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("the database it replaced is at"),
        "{stderr}"
    );

    let server = Server::start(&db, &[]);
    let mut orders = server.orders().await;
    for order_id in &before {
        orders
            .get_order(GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{order_id} not in the restored backup: {status:?}"));
    }
    assert!(server.terminate().success());
}

#[test]
fn a_second_server_on_one_sqlite_database_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("one.db").display().to_string();
    let first = Server::start_url(&url, &[]);
    let second = std::process::Command::new(crate::support::BINARY)
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("ORDERFLOW_LISTEN", "127.0.0.1:0")
        .env("ORDERFLOW_METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another process holds"), "{stderr}");
    assert!(first.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_backup_and_restore_point_to_its_own_tools() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    for args in [
        ["backup", "--to", "/tmp/x.db"],
        ["restore", "--from", "/tmp/x.db"],
    ] {
        let (status, _, stderr) = run(&db, &args, None);
        assert!(!status.success(), "{args:?}");
        assert!(
            stderr.contains("pg_dump") && stderr.contains("pg_basebackup"),
            "{stderr}"
        );
    }
}
