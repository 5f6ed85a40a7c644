-- Reserves `n` consecutive ids of `events` and returns the first: a log
-- commit writes its rows with them (`OVERRIDING SYSTEM VALUE`) while the
-- commit before it may still be writing its own, so each commit's ids must
-- be one block, not values interleaved with the other's. The session lock
-- makes the take-and-move of the sequence one step among reservers; other
-- writers into `events` take ids only under the exclusive events lock,
-- which a reserving commit holds shared (storage::feed).
CREATE FUNCTION reserve_event_ids(n BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    ids TEXT := pg_get_serial_sequence('events', 'id');
    first BIGINT;
BEGIN
    IF n < 1 THEN
        RAISE EXCEPTION 'reserve_event_ids: n must be at least 1, not %', n;
    END IF;
    -- "evtids" in ASCII.
    PERFORM pg_advisory_lock(111559433610355);
    BEGIN
        first := nextval(ids);
        PERFORM setval(ids, first + n - 1);
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(111559433610355);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(111559433610355);
    RETURN first;
END
$$;

-- The highest event id a consumer's commits stored, kept with its cursor: a
-- commit whose reserved ids lie below it was overtaken and must not land.
ALTER TABLE log_cursors ADD COLUMN events_through BIGINT NOT NULL DEFAULT 0;
