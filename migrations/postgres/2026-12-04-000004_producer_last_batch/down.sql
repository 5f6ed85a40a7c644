ALTER TABLE log_producers DROP COLUMN last_batch_at;
ALTER TABLE log_producers_appended DROP COLUMN last_batch_at;
