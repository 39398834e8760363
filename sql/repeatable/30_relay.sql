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
    -- Sets of customers (snapshot-at-move bulk statements) ring the doorbell too.
    IF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                   WHERE pubname = 'data_sync_pending_pub' AND tablename = 'data_sync_cust_pending_set') THEN
        ALTER PUBLICATION data_sync_pending_pub ADD TABLE data_sync_cust_pending_set;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'data_sync_config_pub') THEN
        CREATE PUBLICATION data_sync_config_pub FOR TABLE data_sync_config
            WITH (publish = 'insert, update, delete');
    END IF;
END
$$;

-- data_sync_status: the queue facts `cdc-relay status` and /metrics report, for psql users.
-- One row per queue family and stage: rows, the oldest row's age, rows with failed attempts
-- and the most recent error. Customer pending counts each customer of a
-- data_sync_cust_pending_set row as one row (that is what the relay will expand it into).
CREATE OR REPLACE VIEW data_sync_status AS
SELECT 'cust'::text AS queue, 'pending'::text AS stage, sum(n)::bigint AS rows, min(oldest) AS oldest_created_at,
       extract(epoch FROM now() - min(oldest))::float8 AS oldest_age_seconds, 0::bigint AS failing_rows,
       NULL::text AS last_error
  FROM (SELECT count(*) AS n, min(created_at) AS oldest FROM data_sync_cust_pending_queue
        UNION ALL
        SELECT coalesce(sum(cardinality(customer_ids)), 0), min(created_at) FROM data_sync_cust_pending_set) p
UNION ALL
SELECT 'trn', 'pending', count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8, 0, NULL
  FROM data_sync_trn_pending_queue
UNION ALL
SELECT 'cust', 'progress', count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8,
       count(*) FILTER (WHERE attempts > 0),
       (SELECT last_error FROM data_sync_cust_progress_queue WHERE last_error IS NOT NULL ORDER BY last_attempt_at DESC LIMIT 1)
  FROM data_sync_cust_progress_queue
UNION ALL
SELECT 'trn', 'progress', count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8,
       count(*) FILTER (WHERE attempts > 0),
       (SELECT last_error FROM data_sync_trn_progress_queue WHERE last_error IS NOT NULL ORDER BY last_attempt_at DESC LIMIT 1)
  FROM data_sync_trn_progress_queue
UNION ALL
SELECT 'cust', 'failed', count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8,
       count(*) FILTER (WHERE reason = 'failed'),
       (SELECT last_error FROM data_sync_cust_failed WHERE reason = 'failed' ORDER BY failed_at DESC LIMIT 1)
  FROM data_sync_cust_failed
UNION ALL
SELECT 'trn', 'failed', count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8,
       count(*) FILTER (WHERE reason = 'failed'),
       (SELECT last_error FROM data_sync_trn_failed WHERE reason = 'failed' ORDER BY failed_at DESC LIMIT 1)
  FROM data_sync_trn_failed;

-- data_sync_requeue puts dead letters back in the pending queue of one queue family ('cust' or
-- 'trn'), with their original IDs: the rows with the given IDs, plus every row held behind a
-- dead letter of the same key (order per key is kept only if they go back together). Returns
-- the number of rows requeued. It runs with the owner's rights, so the relay role (and
-- `cdc-relay requeue` run as it) needs no INSERT on pending; requeued rows are not marked
-- captured, so the relay checks them strictly and builds no snapshot for them.
CREATE OR REPLACE FUNCTION public.data_sync_requeue(queue text, ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    n bigint;
BEGIN
    IF queue = 'cust' THEN
        WITH r AS (
            DELETE FROM public.data_sync_cust_failed f
            WHERE f.id = ANY (ids)
               OR (f.reason = 'held' AND f.unique_id IN (SELECT x.unique_id FROM public.data_sync_cust_failed x WHERE x.id = ANY (ids)))
            RETURNING f.id, f.obj_name, f.unique_id, f.action, f.json_object, f.created_at)
        INSERT INTO public.data_sync_cust_pending_queue (id, obj_name, unique_id, action, json_object, created_at, captured)
        SELECT r.id, r.obj_name, r.unique_id, r.action, r.json_object, r.created_at, false FROM r ORDER BY r.id;
    ELSIF queue = 'trn' THEN
        WITH r AS (
            DELETE FROM public.data_sync_trn_failed f
            WHERE f.id = ANY (ids)
               OR (f.reason = 'held' AND f.unique_id IN (SELECT x.unique_id FROM public.data_sync_trn_failed x WHERE x.id = ANY (ids)))
            RETURNING f.id, f.obj_name, f.unique_id, f.action, f.json_object, f.created_at)
        INSERT INTO public.data_sync_trn_pending_queue (id, obj_name, unique_id, action, json_object, created_at, captured)
        SELECT r.id, r.obj_name, r.unique_id, r.action, r.json_object, r.created_at, false FROM r ORDER BY r.id;
    ELSE
        RAISE EXCEPTION 'data_sync_requeue: unknown queue "%"', queue
            USING ERRCODE = '22023', HINT = 'use cust (customers) or trn (transactions)';
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_requeue(text, bigint[]) FROM PUBLIC;
