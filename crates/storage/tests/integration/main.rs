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
mod feed;
mod postgres_only;
mod suite;

test_support::backend_tests!(
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
    batch_writes_are_idempotent_per_write_id,
    a_write_held_past_its_budget_is_outcome_unknown_and_stored_once,
    dead_letters_are_stored_with_their_reason,
    committed_writes_are_read_by_a_new_pool,
    migrations_rerun_as_a_no_op,
    cancelled_writes_never_leave_an_open_transaction,
    concurrent_tasks_create_read_and_update_consistently,
    event_log_is_exactly_once_per_producer_and_per_commit,
    event_log_refuses_a_sequence_gap,
    a_damaged_log_row_is_read_as_such_and_moved_aside,
    concurrent_repeats_of_a_log_commit_store_once,
    log_rows_from_before_the_binary_form_still_read,
    storing_events_wakes_subscribers,
    idle_producers_are_forgotten_and_start_afresh,
    retention_removes_a_prefix_in_bounded_steps,
    the_event_log_lease_is_held_until_lost,
    a_large_log_commit_stores_every_event_in_order,
);
