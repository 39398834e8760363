-- built_at: when (statement_timestamp()) the capture triggers built a pending row's JSON. A
-- transaction that fired its capture early (SET CONSTRAINTS ALL IMMEDIATE) and then changed the
-- same customer again must not leave the earlier snapshot as its last word: a later firing in a
-- later statement of the same transaction rebuilds the row's JSON when built_at is older than
-- its own statement. Nullable without a default: adding it rewrites nothing.
ALTER TABLE data_sync_cust_pending_queue ADD COLUMN IF NOT EXISTS built_at timestamptz;
