-- The leading relay's limit on requests in flight, as it stands (written at most about once a
-- second while it changes), for `cdc-relay status` and psql: concurrency_limit now, its bound
-- concurrency_max (--max-concurrency, or --concurrency when fixed) and whether it adapts.
ALTER TABLE data_sync_leader ADD COLUMN IF NOT EXISTS concurrency_limit integer;
ALTER TABLE data_sync_leader ADD COLUMN IF NOT EXISTS concurrency_max integer;
ALTER TABLE data_sync_leader ADD COLUMN IF NOT EXISTS concurrency_adaptive boolean;
