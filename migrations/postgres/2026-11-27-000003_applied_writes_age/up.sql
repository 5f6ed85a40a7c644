-- Old write ids are forgotten (Database::forget_applied_writes): a write id
-- is only ever repeated within its writer's retries, seconds apart.
CREATE INDEX applied_writes_age ON applied_writes (applied_at);
