-- The durable event log behind acknowledged ingest: one row per batch
-- (its events as canonical JSON lines), appended before the ack. Rows are
-- deleted once processed (the consumer's cursor passed them).
CREATE TABLE event_log (
    position    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    producer_id TEXT,
    sequence    BIGINT,
    event_count INTEGER NOT NULL CHECK (event_count BETWEEN 1 AND 10000),
    body        TEXT NOT NULL
);

-- The last durable sequence per producer, written in the append's
-- transaction: a retried batch at or below it is a duplicate.
CREATE TABLE log_producers (
    producer_id   TEXT NOT NULL PRIMARY KEY CHECK (length(producer_id) BETWEEN 1 AND 128),
    last_sequence BIGINT NOT NULL CHECK (last_sequence >= 1)
);

-- How far each consumer's outputs are committed, written in the same
-- transaction as those outputs: a restart resumes right after it.
CREATE TABLE log_cursors (
    consumer TEXT NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
);
