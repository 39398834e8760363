DROP PUBLICATION IF EXISTS data_sync_pending_pub;
DROP PUBLICATION IF EXISTS data_sync_config_pub;
