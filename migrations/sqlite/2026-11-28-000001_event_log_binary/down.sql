-- Rows in the binary form cannot go back to JSON lines in SQL, and
-- dropping them would lose acknowledged events: the migration fails (the
-- guard's CHECK) while any remain. Let the pipeline drain the log
-- (`log_backlog` 0) before migrating down.
CREATE TEMPORARY TABLE event_log_binary_rows (n BIGINT CHECK (n = 0));
INSERT INTO event_log_binary_rows SELECT count(*) FROM event_log WHERE data IS NOT NULL;
DROP TABLE event_log_binary_rows;
ALTER TABLE event_log DROP COLUMN data;
