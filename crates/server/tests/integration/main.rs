//! End-to-end tests: the real `orderflow` binary on an ephemeral port,
//! against SQLite and PostgreSQL, driven by tonic clients over loopback, for
//! what only a process shows: start-up, signals, SIGKILL, health through an
//! outage, telemetry, `/metrics`, the operator commands. (RPC behaviour is
//! tested in process by `grpc-api`.) Each behaviour runs once per backend
//! (`sqlite::…`, `postgres::…`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly; clippy's allow-*-in-tests does not reach tests/ (rust-clippy#13981)"
)]

mod auth;
mod backup;
mod catalog;
mod dead_letters;
mod event_log;
mod faults;
mod full_disk;
mod kill;
mod nats;
mod otlp;
mod outage;
mod pipeline;
mod proxy;
mod replicas;
mod startup;
mod subscribe;
mod suite;
mod support;
mod tls;
mod watchdog;

test_support::backend_tests!(
    a_panicking_handler_answers_internal_and_the_channel_keeps_serving,
    health_is_serving_and_reflection_lists_the_services,
    sigterm_during_a_stream_keeps_every_acknowledged_event,
    import_then_export_reproduces_the_fixture_byte_for_byte,
    export_only_reads,
    metrics_pass_promtool,
    acknowledged_orders_survive_sigkill,
    engine_writes_through_the_real_stores,
    acknowledged_batches_survive_sigkill_exactly_once,
    acknowledged_batches_survive_sigkill_in_a_group_commit,
    acknowledged_batches_survive_sigkill_while_outputs_commit,
    acknowledged_batches_survive_sigkill_with_two_commits_on_their_way,
    accepted_events_survive_sigkill_under_every_policy,
    the_blackhole_sink_counts_and_discards,
    acknowledged_orders_survive_sigkill_under_concurrent_writers,
    cancelling_clients_never_loosen_the_backlog_bound,
    a_damaged_log_row_is_kept_aside_and_ingest_goes_on,
    the_log_consumers_timings_are_exported,
    subscribers_resume_across_a_kill_and_match_the_export,
    subscribers_on_two_replicas_see_one_sequence,
    retention_ages_events_out_while_ingest_goes_on,
    events_follow_prints_stored_then_new_events,
    dead_letters_are_listed_replayed_once_and_purged,
    migrate_status_lists_pending_migrations_and_gates,
);

/// Not through `backend_tests!`: each backend puts its files on the
/// test's tmpfs its own way.
mod full_disk_tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_a_full_disk_refuses_writes_keeps_reads_and_recovers() {
        crate::full_disk::sqlite_full_disk().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_full_disk_refuses_writes_keeps_reads_and_recovers() {
        crate::full_disk::postgres_full_disk().await;
    }
}
