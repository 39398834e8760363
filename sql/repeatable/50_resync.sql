-- Resync: send existing customers or transactions again, on request (data_sync_resync,
-- migrations/0010_resync.sql). A request is one INSERT by the owner; the relay expands it a
-- page at a time with data_sync_resync_step, only when the pending queues are drained, so live
-- changes keep priority. Each page is key-only pending rows (json_object NULL, captured), which
-- the relay's move turns into snapshots of the state at that moment, like snapshot-at-move mode:
-- same ordering per key, retries and dead letters as live changes. The step reads the CE
-- tables and writes only Data Sync tables: it never takes a lock a CE statement would wait on.

-- data_sync_resync_customer_keys / _transaction_keys: the keys a request selects, existing rows
-- only, in key order, with key > after (NULL: from the start) and key <= upto (NULL: to the end),
-- at most lim (NULL: all). One query per selection, so each keeps a plan that fits it. The
-- validate trigger counts them (estimated_total); the step reads them a page at a time.
--
-- changed_since selects the customers whose own row or a child row says it changed at or after
-- that instant, where the schema can tell: customer.created_at and updated_at,
-- customer_segment.added_at, card.created_at, customer_note.create_date, and the create_date
-- or update_date of their retail transactions (dates: a transaction of that day counts).
-- Addresses, phones, emails and the other child tables carry no timestamp.
CREATE OR REPLACE FUNCTION data_sync_resync_customer_keys(r public.data_sync_resync, after bigint, upto bigint, lim bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    lo bigint := coalesce(after, -9223372036854775808);
    hi bigint := coalesce(upto, 9223372036854775807);
BEGIN
    IF r.select_all THEN
        RETURN QUERY SELECT c.customer_id FROM public.customer c
            WHERE c.customer_id > lo AND c.customer_id <= hi ORDER BY c.customer_id LIMIT lim;
    ELSIF r.customer_ids IS NOT NULL THEN
        RETURN QUERY SELECT c.customer_id FROM public.customer c
            WHERE c.customer_id = ANY (r.customer_ids) AND c.customer_id > lo AND c.customer_id <= hi
            ORDER BY c.customer_id LIMIT lim;
    ELSIF r.segment_id IS NOT NULL THEN
        -- customer_segment rows go with their customer (ON DELETE CASCADE).
        RETURN QUERY SELECT s.customer_id FROM public.customer_segment s
            WHERE s.segment_id = r.segment_id AND s.customer_id > lo AND s.customer_id <= hi
            ORDER BY s.customer_id LIMIT lim;
    ELSIF r.changed_since IS NOT NULL THEN
        RETURN QUERY SELECT c.customer_id FROM public.customer c
            WHERE c.customer_id > lo AND c.customer_id <= hi
              AND (c.created_at >= r.changed_since OR c.updated_at >= r.changed_since
                   OR EXISTS (SELECT 1 FROM public.customer_segment s
                              WHERE s.customer_id = c.customer_id AND s.added_at >= r.changed_since)
                   OR EXISTS (SELECT 1 FROM public.card k
                              WHERE k.customer_id = c.customer_id AND k.created_at >= r.changed_since)
                   OR EXISTS (SELECT 1 FROM public.customer_note n
                              WHERE n.customer_id = c.customer_id AND n.create_date >= r.changed_since)
                   OR EXISTS (SELECT 1 FROM public.retail_transaction t
                              WHERE t.customer_id = c.customer_id
                                AND (t.create_date >= r.changed_since::date OR t.update_date >= r.changed_since::date)))
            ORDER BY c.customer_id LIMIT lim;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION data_sync_resync_transaction_keys(r public.data_sync_resync, after text, upto text, lim bigint)
RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $fn$
BEGIN
    IF r.select_all THEN
        RETURN QUERY SELECT t.retail_transaction_id FROM public.retail_transaction t
            WHERE t.retail_transaction_id > coalesce(after, '')
              AND (upto IS NULL OR t.retail_transaction_id <= upto)
            ORDER BY t.retail_transaction_id LIMIT lim;
    ELSIF r.transaction_ids IS NOT NULL THEN
        RETURN QUERY SELECT t.retail_transaction_id FROM public.retail_transaction t
            WHERE t.retail_transaction_id = ANY (r.transaction_ids)
              AND t.retail_transaction_id > coalesce(after, '')
              AND (upto IS NULL OR t.retail_transaction_id <= upto)
            ORDER BY t.retail_transaction_id LIMIT lim;
    ELSIF r.since_date IS NOT NULL THEN
        RETURN QUERY SELECT t.retail_transaction_id FROM public.retail_transaction t
            WHERE t.retail_transaction_id > coalesce(after, '')
              AND (upto IS NULL OR t.retail_transaction_id <= upto)
              AND t.business_date >= r.since_date
            ORDER BY t.retail_transaction_id LIMIT lim;
    END IF;
END
$fn$;

-- data_sync_resync_validate checks a new request before anything is queued, with the same
-- errors for psql and `cdc-relay resync`: one selection that fits the object, a segment that
-- exists, Data Sync enabled. It fills the action's default (customers: UPDATE, transactions:
-- CREATE), starts the request from scratch and counts what it selects (estimated_total: rows
-- created or deleted later change the real number).
CREATE OR REPLACE FUNCTION data_sync_resync_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    selections integer;
BEGIN
    NEW.object := lower(NEW.object);
    IF NEW.object IS NULL OR NEW.object NOT IN ('customer', 'transaction') THEN
        RAISE EXCEPTION 'invalid resync object "%"', NEW.object
            USING ERRCODE = '22023', HINT = 'object is customer or transaction';
    END IF;
    NEW.action := upper(coalesce(NEW.action, CASE NEW.object WHEN 'customer' THEN 'UPDATE' ELSE 'CREATE' END));
    IF NEW.object = 'customer' AND NEW.action NOT IN ('UPDATE', 'CREATE') THEN
        RAISE EXCEPTION 'invalid resync action "%" for customers', NEW.action
            USING ERRCODE = '22023', HINT = 'UPDATE (CUSTOMERMOD, the default) or CREATE (CUSTOMERCRE)';
    END IF;
    IF NEW.object = 'transaction' AND NEW.action <> 'CREATE' THEN
        RAISE EXCEPTION 'invalid resync action "%" for transactions: transactions are sent as CREATE (POSTRNCRE)', NEW.action
            USING ERRCODE = '22023';
    END IF;
    NEW.select_all := coalesce(NEW.select_all, false);
    selections := num_nonnulls(nullif(NEW.select_all, false), NEW.customer_ids, NEW.transaction_ids,
                               NEW.segment_id, NEW.changed_since, NEW.since_date);
    IF selections = 0 THEN
        RAISE EXCEPTION 'a resync needs a selection'
            USING ERRCODE = '22023', HINT = CASE NEW.object
                WHEN 'customer' THEN 'set one of select_all, customer_ids, segment_id, changed_since'
                ELSE 'set one of select_all, transaction_ids, since_date' END;
    ELSIF selections > 1 THEN
        RAISE EXCEPTION 'a resync takes one selection, % were given', selections
            USING ERRCODE = '22023', HINT = 'start one resync per selection';
    END IF;
    IF NEW.object = 'customer' AND (NEW.transaction_ids IS NOT NULL OR NEW.since_date IS NOT NULL) THEN
        RAISE EXCEPTION 'transaction_ids and since_date select transactions, not customers'
            USING ERRCODE = '22023', HINT = 'customers: select_all, customer_ids, segment_id or changed_since';
    END IF;
    IF NEW.object = 'transaction' AND (NEW.customer_ids IS NOT NULL OR NEW.segment_id IS NOT NULL OR NEW.changed_since IS NOT NULL) THEN
        RAISE EXCEPTION 'customer_ids, segment_id and changed_since select customers, not transactions'
            USING ERRCODE = '22023', HINT = 'transactions: select_all, transaction_ids or since_date';
    END IF;
    IF cardinality(NEW.customer_ids) = 0 OR cardinality(NEW.transaction_ids) = 0 THEN
        RAISE EXCEPTION 'the list of IDs to resync is empty' USING ERRCODE = '22023';
    END IF;
    IF array_position(NEW.customer_ids, NULL) IS NOT NULL OR array_position(NEW.transaction_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'the list of IDs to resync holds a NULL' USING ERRCODE = '22023';
    END IF;
    IF NEW.segment_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM public.segment s WHERE s.segment_id = NEW.segment_id) THEN
        RAISE EXCEPTION 'segment % does not exist', NEW.segment_id
            USING ERRCODE = '22023', HINT = 'SELECT segment_id, segment_name FROM segment lists the segments';
    END IF;
    IF public.data_sync_capture_mode() = 'off' THEN
        RAISE EXCEPTION 'Data Sync is disabled (DataSyncEnabled is false): a resync would send nothing'
            USING ERRCODE = '55000', HINT = 'enable it first: cdc-relay config set DataSyncEnabled yes';
    END IF;
    NEW.state := 'pending';
    NEW.cursor_customer := NULL;
    NEW.cursor_transaction := NULL;
    NEW.selected := 0;
    NEW.queued := 0;
    NEW.created_at := now();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.last_error := NULL;
    IF NEW.object = 'customer' THEN
        SELECT count(*) INTO NEW.estimated_total FROM public.data_sync_resync_customer_keys(NEW, NULL, NULL, NULL);
    ELSE
        SELECT count(*) INTO NEW.estimated_total FROM public.data_sync_resync_transaction_keys(NEW, NULL, NULL, NULL);
    END IF;
    RETURN NEW;
END
$fn$;

DROP TRIGGER IF EXISTS data_sync_resync_validate ON data_sync_resync;
CREATE TRIGGER data_sync_resync_validate BEFORE INSERT ON data_sync_resync
    FOR EACH ROW EXECUTE FUNCTION data_sync_resync_validate();

-- data_sync_resync_step queues the next page of the oldest active request: up to max_rows keys
-- (at most 10,000) after its cursor, as key-only pending rows, skipping keys that already have a
-- key-only row of the same effect waiting (its snapshot, built at move, carries the same state),
-- and advances the cursor and counts in the same transaction: a crash at any instant leaves the
-- request where its last committed page left it (a page queued twice is harmless: at least
-- once). A selection scanned by range (changed_since, since_date) reads at most 10 x max_rows
-- keys per call, so no call runs long however sparse the matches. It returns the request it
-- worked on (no row: none is active) with what it queued now (and the queue ids, so the relay
-- can send those rows after live ones), its counts, rate and state.
--
-- SECURITY DEFINER: the relay's role runs it without any access to the CE tables, and it takes
-- no argument that names customers: only the owner's requests say what is read.
DROP FUNCTION IF EXISTS data_sync_resync_step(integer); -- its result columns may change
CREATE FUNCTION data_sync_resync_step(max_rows integer)
RETURNS TABLE (request_id bigint, queued_now integer, selected_total bigint, queued_total bigint,
               estimated bigint, rows_per_second integer, request_state text, queued_ids bigint[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    r public.data_sync_resync;
    ckeys bigint[];
    tkeys text[];
    cupto bigint;
    tupto text;
    scan integer;
    got integer;
    n integer := 0;
    done boolean;
    qids bigint[];
BEGIN
    max_rows := least(greatest(coalesce(max_rows, 0), 0), 10000);
    SELECT * INTO r FROM public.data_sync_resync x
    WHERE x.state IN ('pending', 'running') ORDER BY x.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF max_rows > 0 THEN
        scan := 10 * max_rows;
        BEGIN
            IF r.object = 'customer' THEN
                IF r.changed_since IS NOT NULL THEN
                    SELECT c.customer_id INTO cupto FROM public.customer c
                    WHERE c.customer_id > coalesce(r.cursor_customer, -9223372036854775808)
                    ORDER BY c.customer_id OFFSET scan - 1 LIMIT 1;
                END IF;
                ckeys := ARRAY(SELECT k FROM public.data_sync_resync_customer_keys(r, r.cursor_customer, cupto, max_rows) k);
                got := cardinality(ckeys);
                WITH ins AS (
                    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured)
                    SELECT 'Customer', u.k::text, r.action, NULL, true
                    FROM unnest(ckeys) WITH ORDINALITY AS u (k, o)
                    WHERE NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                                      WHERE q.unique_id = u.k::text AND q.json_object IS NULL
                                        AND (q.action = r.action OR (r.action = 'UPDATE' AND q.action = 'CREATE')))
                    ORDER BY u.o
                    RETURNING id)
                SELECT array_agg(ins.id), count(*) INTO qids, n FROM ins;
                done := got < max_rows AND cupto IS NULL;
                r.cursor_customer := CASE WHEN got = max_rows THEN ckeys[got]
                                          WHEN cupto IS NOT NULL THEN cupto
                                          ELSE coalesce(ckeys[got], r.cursor_customer) END;
            ELSE
                IF r.since_date IS NOT NULL THEN
                    SELECT t.retail_transaction_id INTO tupto FROM public.retail_transaction t
                    WHERE t.retail_transaction_id > coalesce(r.cursor_transaction, '')
                    ORDER BY t.retail_transaction_id OFFSET scan - 1 LIMIT 1;
                END IF;
                tkeys := ARRAY(SELECT k FROM public.data_sync_resync_transaction_keys(r, r.cursor_transaction, tupto, max_rows) k);
                got := cardinality(tkeys);
                WITH ins AS (
                    INSERT INTO public.data_sync_trn_pending_queue (obj_name, unique_id, action, json_object, captured)
                    SELECT 'Transaction', u.k, 'CREATE', NULL, true
                    FROM unnest(tkeys) WITH ORDINALITY AS u (k, o)
                    WHERE NOT EXISTS (SELECT 1 FROM public.data_sync_trn_pending_queue q
                                      WHERE q.unique_id = u.k AND q.json_object IS NULL AND q.action = 'CREATE')
                    ORDER BY u.o
                    RETURNING id)
                SELECT array_agg(ins.id), count(*) INTO qids, n FROM ins;
                done := got < max_rows AND tupto IS NULL;
                r.cursor_transaction := CASE WHEN got = max_rows THEN tkeys[got]
                                             WHEN tupto IS NOT NULL THEN tupto
                                             ELSE coalesce(tkeys[got], r.cursor_transaction) END;
            END IF;
        EXCEPTION
            WHEN query_canceled OR admin_shutdown OR lock_not_available OR deadlock_detected
                 OR serialization_failure OR insufficient_resources THEN
                RAISE;
            WHEN OTHERS THEN
                -- A request that cannot be read (its segment's table changed shape, say) must
                -- not stop live deliveries: it fails, with the reason, and the relay goes on.
                UPDATE public.data_sync_resync x SET state = 'failed', finished_at = now(), last_error = SQLERRM
                WHERE x.id = r.id;
                RETURN QUERY SELECT r.id, 0, r.selected, r.queued, r.estimated_total, r.rate, 'failed'::text, NULL::bigint[];
                RETURN;
        END;
        r.selected := r.selected + got;
        r.queued := r.queued + n;
        UPDATE public.data_sync_resync x
        SET state = CASE WHEN done THEN 'done' ELSE 'running' END,
            started_at = coalesce(x.started_at, now()),
            finished_at = CASE WHEN done THEN now() END,
            cursor_customer = r.cursor_customer, cursor_transaction = r.cursor_transaction,
            selected = r.selected, queued = r.queued
        WHERE x.id = r.id
        RETURNING x.state INTO r.state;
    END IF;
    RETURN QUERY SELECT r.id, n, r.selected, r.queued, r.estimated_total, r.rate, r.state, qids;
END
$fn$;
REVOKE ALL ON FUNCTION data_sync_resync_step(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION data_sync_resync_customer_keys(public.data_sync_resync, bigint, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION data_sync_resync_transaction_keys(public.data_sync_resync, text, text, bigint) FROM PUBLIC;

-- data_sync_resync_status: each request's progress for psql and `cdc-relay resync --status`:
-- its selection in words, keys handled out of the estimate, rows queued, the rate so far and an
-- estimate of the time left at that rate.
CREATE OR REPLACE VIEW data_sync_resync_status AS
SELECT r.id, r.object, r.action,
       CASE WHEN r.select_all THEN 'all'
            WHEN r.customer_ids IS NOT NULL THEN 'customers ' || array_to_string(r.customer_ids, ',')
            WHEN r.transaction_ids IS NOT NULL THEN 'transactions ' || array_to_string(r.transaction_ids, ',')
            WHEN r.segment_id IS NOT NULL THEN 'segment ' || r.segment_id
            WHEN r.changed_since IS NOT NULL THEN 'changed since ' || to_char(r.changed_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            ELSE 'business date since ' || r.since_date END AS selection,
       r.state, r.selected, r.queued, r.estimated_total,
       CASE WHEN r.estimated_total > 0 THEN round(least(100.0, 100.0 * r.selected / r.estimated_total), 1) END AS percent,
       r.rate AS rate_limit,
       s.rows_per_second,
       CASE WHEN r.state IN ('pending', 'running') AND s.rows_per_second > 0
            THEN greatest(0, r.estimated_total - r.selected) / s.rows_per_second END AS seconds_left,
       r.created_at, r.started_at, r.finished_at, r.last_error
FROM data_sync_resync r
CROSS JOIN LATERAL (
    SELECT CASE WHEN r.started_at IS NOT NULL
                     AND coalesce(r.finished_at, now()) > r.started_at
                THEN round((r.selected / extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at))::numeric, 1)
           END AS rows_per_second) s;

-- A new request rings the relay's doorbell (inserts only, like the pending queues).
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'data_sync_pending_pub')
       AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                       WHERE pubname = 'data_sync_pending_pub' AND tablename = 'data_sync_resync') THEN
        ALTER PUBLICATION data_sync_pending_pub ADD TABLE data_sync_resync;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
        GRANT SELECT ON data_sync_resync, data_sync_resync_status TO cdc_relay;
        GRANT EXECUTE ON FUNCTION data_sync_resync_step(integer) TO cdc_relay;
    END IF;
END
$do$;
