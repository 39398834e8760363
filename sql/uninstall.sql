-- `cdc-relay uninstall --drop-queues`: drops the Data Sync tables and every queued row.
-- The reference CE schema is left alone.
DROP TABLE IF EXISTS data_sync_cust_pending_queue, data_sync_trn_pending_queue, data_sync_cust_pending_set,
    data_sync_cust_progress_queue, data_sync_trn_progress_queue,
    data_sync_cust_failed, data_sync_trn_failed, data_sync_config, data_sync_leader, data_sync_resync CASCADE;
DROP SEQUENCE IF EXISTS data_sync_queue_id_seq;
DELETE FROM data_sync_schema_version WHERE name NOT LIKE 'migrations/%\_ce\_%';
