-- captured marks queue rows written by cdc-relay's own capture triggers (their functions run
-- with SET data_sync.captured = on). The relay checks every other row strictly against the
-- payload schema before sending it, and trusts its own triggers' JSON, which the tests decode
-- strictly: the strict check is the relay's largest per-message cost.
ALTER TABLE data_sync_cust_pending_queue
    ADD COLUMN captured boolean NOT NULL DEFAULT (coalesce(current_setting('data_sync.captured', true), '') = 'on');
ALTER TABLE data_sync_trn_pending_queue
    ADD COLUMN captured boolean NOT NULL DEFAULT (coalesce(current_setting('data_sync.captured', true), '') = 'on');
ALTER TABLE data_sync_cust_progress_queue ADD COLUMN captured boolean NOT NULL DEFAULT false;
ALTER TABLE data_sync_trn_progress_queue ADD COLUMN captured boolean NOT NULL DEFAULT false;
