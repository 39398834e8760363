-- Undoes repeatable/50_resync.sql. The requests themselves (data_sync_resync) stay, like queued
-- rows: a later install resumes them; `uninstall --drop-queues` drops the table.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication_tables
               WHERE pubname = 'data_sync_pending_pub' AND tablename = 'data_sync_resync') THEN
        ALTER PUBLICATION data_sync_pending_pub DROP TABLE data_sync_resync;
    END IF;
    IF to_regclass('data_sync_resync') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_resync_validate ON data_sync_resync;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
            REVOKE ALL ON data_sync_resync FROM cdc_relay;
        END IF;
    END IF;
END
$do$;
DROP VIEW IF EXISTS data_sync_resync_status;
DROP FUNCTION IF EXISTS data_sync_resync_step(integer);
DROP FUNCTION IF EXISTS data_sync_resync_validate();
DROP FUNCTION IF EXISTS data_sync_resync_customer_keys(data_sync_resync, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS data_sync_resync_transaction_keys(data_sync_resync, text, text, bigint);
