-- Log rows carry their events in the binary form `domain` defines
-- (`Event::encode_batch`) instead of JSON lines: a third of the bytes (the
-- legacy fixture: 16,054 against 48,027), and no JSON written or parsed
-- between the ack and the pipeline. A row holds exactly one of the two:
-- `data`, or (rows appended before this migration, still read) JSON lines
-- in `body`, with `body` left empty otherwise.
ALTER TABLE event_log
    ADD COLUMN data BYTEA,
    ADD CONSTRAINT event_log_one_body CHECK ((data IS NULL) = (body <> ''));
