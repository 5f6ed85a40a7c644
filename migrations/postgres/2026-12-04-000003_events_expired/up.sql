-- How far retention has removed stored events: every position at or below
-- `through` is gone, so a subscription from below it answers
-- POSITION_EXPIRED (the oldest position still stored is `through` + 1).
-- One row at most.
CREATE TABLE events_expired (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    through BIGINT NOT NULL
);
