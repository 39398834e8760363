DROP TRIGGER IF EXISTS data_sync_config_applied ON data_sync_config;
DROP FUNCTION IF EXISTS data_sync_config_applied();
DROP FUNCTION IF EXISTS data_sync_apply_enabled();
DROP TRIGGER IF EXISTS data_sync_config_validate ON data_sync_config;
DROP FUNCTION IF EXISTS data_sync_config_validate();
DROP FUNCTION IF EXISTS data_sync_capture_mode();
