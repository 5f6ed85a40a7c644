DROP TABLE events_expired;
