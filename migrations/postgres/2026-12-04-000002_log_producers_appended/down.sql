DROP TABLE log_producers_appended;
DROP TABLE log_applied_batches;
