-- When each producer's record last moved (ms since the epoch), so a record
-- idle for longer than it must be kept (7 days after the producer's last
-- batch, the contract's minimum) can be forgotten: the tables stay bounded
-- by the producers active in the last week. Records from before this
-- migration count from now.
ALTER TABLE log_producers ADD COLUMN last_batch_at BIGINT NOT NULL DEFAULT 0;
UPDATE log_producers SET last_batch_at = (extract(epoch from now()) * 1000)::bigint;
ALTER TABLE log_producers_appended ADD COLUMN last_batch_at BIGINT NOT NULL DEFAULT 0;
UPDATE log_producers_appended SET last_batch_at = (extract(epoch from now()) * 1000)::bigint;
