-- captured is set only by cdc-relay's own capture functions, which name it in each INSERT. Its
-- default used to read the custom setting data_sync.captured, which any session may set, so a
-- role allowed to insert into pending could pass a row of its own off as captured.
ALTER TABLE data_sync_cust_pending_queue ALTER COLUMN captured SET DEFAULT false;
ALTER TABLE data_sync_trn_pending_queue ALTER COLUMN captured SET DEFAULT false;
-- data_sync_snapshot_transaction looks up the key-only pending row of a transaction before it
-- builds its JSON (only the relay's move, for rows queued for it, gets a snapshot). Partial: only
-- key-only rows (snapshot at move) are indexed, so capture mode pays nothing for it.
CREATE INDEX data_sync_trn_pending_queue_key_only ON data_sync_trn_pending_queue (unique_id)
    WHERE json_object IS NULL;
