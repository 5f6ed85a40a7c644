DROP TABLE log_applied;
