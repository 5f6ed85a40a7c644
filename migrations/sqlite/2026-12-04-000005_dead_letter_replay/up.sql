-- `orderflow dead-letters replay` labels the letters of each batch before
-- it sends them (the label is the batch's producer id), and deletes them
-- once the batch is acknowledged: a replay killed in between finds its
-- labelled letters and sends them again under the same label, which the
-- event log answers as a duplicate if it already took them.
ALTER TABLE dead_letters ADD COLUMN replay_label TEXT;
