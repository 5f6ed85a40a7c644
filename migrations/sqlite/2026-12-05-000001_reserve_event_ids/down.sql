ALTER TABLE log_cursors DROP COLUMN events_through;
