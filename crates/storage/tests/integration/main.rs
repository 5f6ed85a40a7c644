//! The storage crate's integration tests, against real databases: every
//! behaviour in `suite` runs once on SQLite (`sqlite::…`, a temp file in WAL
//! mode) and once on PostgreSQL (`postgres::…`, a schema of its own per test,
//! dropped afterwards).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly; clippy's allow-*-in-tests does not reach tests/ (rust-clippy#13981)"
)]

mod cache;
mod pipeline;
mod postgres_only;
mod suite;
mod support;

/// Generates `sqlite::$name` and `postgres::$name` for each suite function.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::support::TestDb::sqlite().await;
                    crate::suite::$name(&db).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn engine_writes_through_the_real_stores() {
                let db = crate::support::TestDb::sqlite().await;
                crate::pipeline::engine_writes_through_the_real_stores(&db).await;
            }
        }
        mod postgres {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn engine_writes_through_the_real_stores() {
                let Some(db) = crate::support::TestDb::postgres().await else { return };
                crate::pipeline::engine_writes_through_the_real_stores(&db).await;
            }
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::support::TestDb::postgres().await else { return };
                    crate::suite::$name(&db).await;
                }
            )*
        }
    };
}

backend_tests!(
    created_order_reads_back_equal,
    missing_order_is_not_found,
    idempotency_key_returns_the_original_order,
    status_update_checks_version_and_transition,
    list_orders_pages_newest_first,
    product_upsert_replaces_warehouses_atomically,
    product_without_primary_loads_but_reports_the_gap,
    database_enforces_one_primary_and_unique_sku,
    events_round_trip_byte_for_byte_in_order,
    large_event_batches_are_one_transaction,
    dead_letters_are_stored_with_their_reason,
    acknowledged_write_survives_a_new_pool,
    migrations_rerun_as_a_no_op,
    cancelled_writes_never_leave_an_open_transaction,
    concurrent_tasks_create_read_and_update_consistently,
);
