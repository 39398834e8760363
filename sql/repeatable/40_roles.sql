-- Least privilege for the relay: the group role cdc_relay may touch the Data Sync queue,
-- dead-letter and configuration tables (configuration read-only) and nothing of the CE data.
-- Snapshot-at-move reads CE tables only through the two SECURITY DEFINER functions below.
-- A login for the relay: CREATE ROLE relay LOGIN REPLICATION PASSWORD '...' IN ROLE cdc_relay;

-- data_sync_snapshot_customer / _transaction build a snapshot for the relay's move statement
-- (DataSyncSnapshotMode = move) with the owner's rights, so the relay role needs no SELECT on
-- the CE tables. Only cdc_relay (and the owner) may call them.
CREATE OR REPLACE FUNCTION data_sync_snapshot_customer(id bigint) RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS
$fn$ SELECT public.data_sync_customer_json(id) $fn$;

CREATE OR REPLACE FUNCTION data_sync_snapshot_transaction(id text) RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS
$fn$ SELECT public.data_sync_transaction_json(id) $fn$;

REVOKE ALL ON FUNCTION data_sync_snapshot_customer(bigint), data_sync_snapshot_transaction(text) FROM PUBLIC;

DO $do$
DECLARE
    may_create boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
        SELECT rolcreaterole OR rolsuper INTO may_create FROM pg_roles WHERE rolname = current_user;
        IF NOT may_create THEN
            RAISE WARNING 'role cdc_relay does not exist and % may not create it', current_user
                USING HINT = 'ask a superuser to run CREATE ROLE cdc_relay NOLOGIN; then apply the GRANTs listed in the README';
            RETURN;
        END IF;
        CREATE ROLE cdc_relay NOLOGIN;
    END IF;
    GRANT SELECT ON data_sync_config TO cdc_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON data_sync_cust_pending_queue, data_sync_trn_pending_queue,
        data_sync_cust_progress_queue, data_sync_trn_progress_queue,
        data_sync_cust_failed, data_sync_trn_failed TO cdc_relay;
    GRANT SELECT ON data_sync_status, data_sync_cust_pending_set TO cdc_relay;
    GRANT SELECT, UPDATE ON data_sync_leader TO cdc_relay;
    GRANT EXECUTE ON FUNCTION data_sync_expand_customer_sets(integer) TO cdc_relay;
    GRANT EXECUTE ON FUNCTION data_sync_snapshot_customer(bigint), data_sync_snapshot_transaction(text) TO cdc_relay;
END
$do$;
