-- What the relay needs beyond the tables: the publications its replication doorbell listens to.
-- The publication is created before any slot (pgoutput resolves publications with the slot's
-- snapshot). Only inserts into pending are published: the relay's own deletes are not.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'data_sync_pending_pub') THEN
        CREATE PUBLICATION data_sync_pending_pub
            FOR TABLE data_sync_cust_pending_queue, data_sync_trn_pending_queue
            WITH (publish = 'insert');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'data_sync_config_pub') THEN
        CREATE PUBLICATION data_sync_config_pub FOR TABLE data_sync_config
            WITH (publish = 'insert, update, delete');
    END IF;
END
$$;
