-- Undoes repeatable/40_roles.sql. The role itself is cluster-wide (other databases may use
-- it), so it is left in place without privileges here.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
        REVOKE ALL ON data_sync_config, data_sync_cust_pending_queue, data_sync_trn_pending_queue,
            data_sync_cust_progress_queue, data_sync_trn_progress_queue,
            data_sync_cust_failed, data_sync_trn_failed, data_sync_status, data_sync_leader,
            data_sync_cust_pending_set FROM cdc_relay;
    END IF;
END
$do$;
DROP FUNCTION IF EXISTS data_sync_snapshot_customer(bigint);
DROP FUNCTION IF EXISTS data_sync_snapshot_customers(bigint[]);
DROP FUNCTION IF EXISTS data_sync_snapshot_transaction(text);
