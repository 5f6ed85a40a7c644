//! The gRPC crate's integration tests, in process: every RPC behaviour a
//! client relies on (field paths in validation messages, the status
//! mapping, auth, deadlines, message size, load shedding), on both backends,
//! without starting the binary. What only a process can show (signals,
//! start-up, health over an outage, telemetry) stays in `server`'s tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly; clippy's allow-*-in-tests does not reach tests/ (rust-clippy#13981)"
)]

mod batches;
mod details;
mod hostile;
mod layers;
mod status;
mod subscribe;
mod suite;
mod support;

test_support::backend_tests!(
    orders_happy_path_and_every_error_code,
    idempotent_create_and_optimistic_concurrency,
    catalog_primary_warehouse_gap_is_failed_precondition_and_the_connection_survives,
    events_are_counted_exactly_per_stream,
    auth_guards_mutations_only,
    oversized_messages_are_resource_exhausted,
    expired_deadlines_answer_deadline_exceeded,
    requests_past_the_concurrency_limit_are_shed,
    a_panicking_handler_answers_internal_and_the_connection_keeps_serving,
    undecodable_requests_are_invalid_argument,
    undecodable_messages_mid_stream_are_invalid_argument,
    nul_is_refused_in_every_text_field,
    error_messages_quote_a_bounded_prefix,
    attribute_floods_are_refused_naming_the_event,
    a_duplicate_sku_answers_one_message_on_both_backends,
    idle_streams_are_ended,
    page_tokens_are_opaque_and_bound_to_their_listing,
    an_idempotency_key_reused_for_another_order_is_refused,
    clients_read_reasons_fields_and_metadata,
    layer_errors_carry_reasons_and_retry_delays,
    subscriptions_read_the_store_then_follow_it_live,
    subscriptions_filter_by_action,
    bad_subscriptions_are_invalid_argument_naming_the_field,
    an_expired_position_is_refused_with_the_oldest_kept,
    a_subscriber_behind_retention_is_told_never_skipped,
    subscriptions_need_the_token,
);
