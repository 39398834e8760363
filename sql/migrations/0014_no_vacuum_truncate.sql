-- The queue tables empty and fill all day. A VACUUM that finds empty pages at the end of a table
-- truncates them, which takes an ACCESS EXCLUSIVE lock: every CE insert and every move waits
-- for it. Queue tables keep their pages instead (vacuum_truncate off; takes only a SHARE UPDATE
-- EXCLUSIVE lock to set, which no insert waits for).
ALTER TABLE data_sync_cust_pending_queue SET (vacuum_truncate = false);
ALTER TABLE data_sync_trn_pending_queue SET (vacuum_truncate = false);
ALTER TABLE data_sync_cust_progress_queue SET (vacuum_truncate = false);
ALTER TABLE data_sync_trn_progress_queue SET (vacuum_truncate = false);
