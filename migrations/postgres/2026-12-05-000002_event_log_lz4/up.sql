-- A log row's events (`data`: ~53 kB for 1,000 of the load generator's
-- events) are compressed on their way into TOAST. lz4 stores those in
-- ~9.3 kB at a fraction of the CPU of PostgreSQL's default, pglz, and
-- durable ingest ran 1.02x with it (docs/benchmarks.md, session 22). A
-- server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE event_log ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'PostgreSQL built without lz4: event_log.data keeps pglz';
END
$$;
