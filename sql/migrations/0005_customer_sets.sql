-- data_sync_cust_pending_set: in 'move' snapshot mode, a statement that changes many customers
-- at once (a segment job adding 10,000 customers to a segment, a segment rename) records one
-- row here, the customers' IDs as one array, instead of one pending row per customer. Writing
-- 10,000 queue rows costs the CE transaction more than the segment insert itself (measured:
-- 0.63 of its TPS); one array row costs almost nothing. The relay expands each set into
-- key-only pending rows (data_sync_expand_customer_sets) in the transaction that moves pending
-- rows to progress, where their JSON is built. Only UPDATE actions are recorded as sets: their
-- order does not matter when the JSON is a snapshot taken at move time.
CREATE TABLE IF NOT EXISTS data_sync_cust_pending_set (
    id            bigint PRIMARY KEY DEFAULT nextval('data_sync_queue_id_seq'),
    action        text NOT NULL CHECK (action = 'UPDATE'),
    customer_ids  bigint[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
