//! Repository point lookups per second: `clients` tasks calling
//! `find_order` on random seeded orders for a fixed time, on a 2-worker
//! runtime. `scripts/bench-storage.sh` runs it beside `pgbench -S` with the
//! same client count on the same PostgreSQL and reports the ratio.
//!
//! Env: `BENCH_DATABASE_URL` (required; `postgres://…` or a SQLite path),
//! `BENCH_CLIENTS` (8), `BENCH_SECONDS` (10), `BENCH_ORDERS` (10000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark binary fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain::{Cents, Currency, NewOrder, OrderLine, ProductId, Quantity, UserId};
use storage::{Database, OrderRepository, StoreConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`)
    // this is a smoke test: a few orders on a temp SQLite file for a moment.
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let scratch = tempfile::tempdir().unwrap();
    let (url, clients, seconds, seeded) = if smoke {
        (
            scratch.path().join("smoke.db").display().to_string(),
            2,
            0,
            20,
        )
    } else {
        let url = std::env::var("BENCH_DATABASE_URL").expect("set BENCH_DATABASE_URL");
        (
            url,
            env_or("BENCH_CLIENTS", 8),
            env_or("BENCH_SECONDS", 10),
            env_or("BENCH_ORDERS", 10_000),
        )
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = StoreConfig::new(url);
        config.max_connections = u32::try_from(clients).unwrap();
        let db = Arc::new(Database::connect(config).await.unwrap());
        let mut ids = Vec::new();
        for n in 0..seeded {
            let line = OrderLine::new(
                "lines[0]",
                ProductId::parse(format!("p-{}", n % 100)).unwrap(),
                Quantity::parse_field("q", 1).unwrap(),
                Cents::new(100),
            )
            .unwrap();
            let new = NewOrder::new(
                UserId::parse(format!("bench-{}", n % 1_000)).unwrap(),
                vec![line],
                Currency::parse("EUR").unwrap(),
                None,
            )
            .unwrap();
            ids.push(db.create_order(new).await.unwrap().order.id());
        }
        let ids = Arc::new(ids);
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let (db, ids, done, stop) = (db.clone(), ids.clone(), done.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = client as usize * 7_919;
                    while !stop.load(Ordering::Relaxed) {
                        n = (n + 104_729) % ids.len();
                        db.find_order(ids[n]).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds).max(Duration::from_millis(200))).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let lookups = done.load(Ordering::Relaxed);
        assert!(lookups > 0, "no lookup completed");
        println!(
            "{{\"backend\":\"{:?}\",\"clients\":{clients},\"seconds\":{elapsed:.2},\"lookups\":{lookups},\"per_second\":{:.0}}}",
            db.backend(),
            lookups as f64 / elapsed
        );
    });
}
