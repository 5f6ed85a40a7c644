-- Rows in the binary form cannot go back to JSON lines in SQL: process the
-- log (let the backlog reach 0) before migrating down.
DELETE FROM event_log WHERE data IS NOT NULL;
ALTER TABLE event_log DROP COLUMN data;
