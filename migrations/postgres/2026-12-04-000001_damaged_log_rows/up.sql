-- Event log rows that could not be decoded (a damaged disk page, a row
-- written by hand): the consumer moves each here, as it was, with the
-- decode error, in the transaction that commits the range around it, so
-- the log moves on and nothing is lost from view.
CREATE TABLE damaged_log_rows (
    position BIGINT PRIMARY KEY,
    producer_id TEXT,
    sequence BIGINT,
    event_count INTEGER NOT NULL,
    body TEXT NOT NULL,
    data BYTEA,
    error TEXT NOT NULL,
    moved_at BIGINT NOT NULL
);
