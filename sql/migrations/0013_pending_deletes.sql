-- Customer DELETE rows waiting in pending, for the relay's look while its window is too full to
-- move them (a deleted customer's rows the relay already holds are re-checked before they are
-- sent). Only DELETE rows are indexed: a CE insert of any other row does not touch it.
CREATE INDEX IF NOT EXISTS data_sync_cust_pending_deletes ON data_sync_cust_pending_queue (id)
    INCLUDE (unique_id) WHERE action = 'DELETE';
