ALTER TABLE log_cursors DROP COLUMN events_through;
DROP FUNCTION reserve_event_ids(BIGINT);
