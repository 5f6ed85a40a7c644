-- A shared event log (NATS JetStream) is consumed by every replica: each
-- message's stream sequence is recorded here in the same transaction as its
-- outputs, so a message redelivered after a crash (or to a second replica
-- while the first was still committing) stores nothing twice.
CREATE TABLE log_applied (
    stream TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (stream, sequence)
);
