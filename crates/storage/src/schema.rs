//! The diesel schema, shared by both backends. The migrations under
//! `migrations/postgres` and `migrations/sqlite` create column-compatible
//! tables, so these definitions (as `diesel print-schema` would write them)
//! describe both and every query is written once.

diesel::table! {
    orders (order_id) {
        order_id -> Text,
        user_id -> Text,
        status -> Text,
        total_cents -> BigInt,
        currency -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    order_lines (order_id, line_no) {
        order_id -> Text,
        line_no -> Integer,
        product_id -> Text,
        quantity -> BigInt,
        unit_price_cents -> BigInt,
    }
}

diesel::table! {
    order_idempotency_keys (user_id, idempotency_key) {
        user_id -> Text,
        idempotency_key -> Text,
        order_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    products (product_id) {
        product_id -> Text,
        sku -> Text,
        name -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    warehouses (product_id, warehouse_id) {
        product_id -> Text,
        warehouse_id -> Text,
        position -> Integer,
        name -> Text,
        is_primary -> Bool,
    }
}

diesel::table! {
    events (id) {
        id -> BigInt,
        event_id -> Nullable<Text>,
        body -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    events_expired (id) {
        id -> SmallInt,
        through -> BigInt,
    }
}

diesel::table! {
    dead_letters (id) {
        id -> BigInt,
        body -> Text,
        reason -> Text,
        created_at -> Timestamp,
        replay_label -> Nullable<Text>,
    }
}

diesel::table! {
    applied_writes (write_id) {
        write_id -> Text,
        target -> Text,
        applied_at -> Timestamp,
    }
}

diesel::table! {
    event_log (position) {
        position -> BigInt,
        producer_id -> Nullable<Text>,
        sequence -> Nullable<BigInt>,
        event_count -> Integer,
        body -> Text,
        data -> Nullable<Binary>,
    }
}

diesel::table! {
    log_producers (producer_id) {
        producer_id -> Text,
        last_sequence -> BigInt,
        last_batch_at -> BigInt,
    }
}

diesel::table! {
    log_cursors (consumer) {
        consumer -> Text,
        position -> BigInt,
        events_through -> BigInt,
    }
}

diesel::table! {
    log_applied (stream, sequence) {
        stream -> Text,
        sequence -> BigInt,
        applied_at -> BigInt,
    }
}

diesel::table! {
    log_producers_appended (producer_id) {
        producer_id -> Text,
        appended_sequence -> BigInt,
        last_batch_at -> BigInt,
    }
}

diesel::table! {
    log_applied_batches (producer_id, sequence) {
        producer_id -> Text,
        sequence -> BigInt,
        applied_at -> BigInt,
    }
}

diesel::table! {
    damaged_log_rows (position) {
        position -> BigInt,
        producer_id -> Nullable<Text>,
        sequence -> Nullable<BigInt>,
        event_count -> Integer,
        body -> Text,
        data -> Nullable<Binary>,
        error -> Text,
        moved_at -> BigInt,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::joinable!(order_idempotency_keys -> orders (order_id));
diesel::joinable!(warehouses -> products (product_id));

diesel::allow_tables_to_appear_in_same_query!(
    orders,
    order_lines,
    order_idempotency_keys,
    products,
    warehouses,
    events,
    dead_letters,
    applied_writes,
    event_log,
    log_producers,
    log_cursors,
    log_applied,
    damaged_log_rows,
    log_producers_appended,
    log_applied_batches,
);
