-- Event and dead-letter batches already written, by the writer's write id
-- (domain::WriteId) and the table that took them. Recorded in the same
-- transaction as the batch's rows: a repeated write finds its id here and
-- stores nothing twice, and a batch falls back to the dead-letter store
-- under its event write's id, so it lands in one table or the other, never
-- both.
CREATE TABLE applied_writes (
    write_id   TEXT NOT NULL PRIMARY KEY CHECK (length(write_id) = 36),
    target     TEXT NOT NULL CHECK (target IN ('events', 'dead_letters')),
    applied_at TIMESTAMP NOT NULL
);
