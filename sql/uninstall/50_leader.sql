-- Undoes repeatable/50_leader.sql.
DROP FUNCTION IF EXISTS data_sync_leader_fence(bigint, interval);
