DROP TABLE applied_writes;
