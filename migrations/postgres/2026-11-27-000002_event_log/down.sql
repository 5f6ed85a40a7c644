DROP TABLE log_cursors; DROP TABLE log_producers; DROP TABLE event_log;
