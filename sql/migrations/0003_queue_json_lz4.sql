-- Queue JSON compression: a customer snapshot is about 2.5 kB, above the TOAST threshold, so
-- every queued row is compressed on insert. pglz cost about 12 us a row on the capture path
-- (10,000 customers: 577 ms with pglz against 399 ms with lz4, 459 ms with no compression);
-- lz4 is nearly free and still halves the stored and WAL-logged size. Only new values are
-- affected. Servers built without lz4 keep the default (pglz).
DO $do$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['data_sync_cust_pending_queue', 'data_sync_trn_pending_queue',
        'data_sync_cust_progress_queue', 'data_sync_trn_progress_queue',
        'data_sync_cust_failed', 'data_sync_trn_failed']
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN json_object SET COMPRESSION lz4', t);
    END LOOP;
END
$do$;
