DROP TABLE damaged_log_rows;
