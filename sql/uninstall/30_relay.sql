DROP PUBLICATION IF EXISTS data_sync_pending_pub;
DROP PUBLICATION IF EXISTS data_sync_config_pub;
DROP VIEW IF EXISTS data_sync_status;
DROP FUNCTION IF EXISTS data_sync_requeue(text, bigint[]);
