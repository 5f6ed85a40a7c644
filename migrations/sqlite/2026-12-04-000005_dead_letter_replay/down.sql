ALTER TABLE dead_letters DROP COLUMN replay_label;
