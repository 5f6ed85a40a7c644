-- Column-compatible with PostgreSQL's: there a consumer's commit checks
-- that no commit stored events above the ids it reserved. SQLite's one
-- writer takes ids in commit order, so nothing here reads it.
ALTER TABLE log_cursors ADD COLUMN events_through BIGINT NOT NULL DEFAULT 0;
