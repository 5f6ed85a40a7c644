DROP INDEX applied_writes_age;
