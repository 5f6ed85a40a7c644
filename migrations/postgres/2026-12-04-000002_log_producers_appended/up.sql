-- A shared event log (NATS JetStream): the highest sequence of each producer
-- published to the stream, which may not be consumed yet. Appends check a
-- batch against it and `log_producers.last_sequence` (committed) so a
-- sequence that skips ahead is refused as a gap, and a retry after the
-- stream's duplicate window is known for a duplicate.
CREATE TABLE log_producers_appended (
    producer_id TEXT NOT NULL PRIMARY KEY CHECK (length(producer_id) BETWEEN 1 AND 128),
    appended_sequence BIGINT NOT NULL CHECK (appended_sequence >= 1)
);

-- A shared event log: each (producer, sequence) whose outputs are committed,
-- recorded in that commit. Replicas consume a producer's batches in any
-- order, so a copy of a batch (published again after the duplicate window)
-- is recognised by its exact pair, not by a high-water mark.
CREATE TABLE log_applied_batches (
    producer_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (producer_id, sequence)
);
