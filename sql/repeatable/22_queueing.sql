-- Capture, queueing: the functions the capture triggers (26_triggers.sql) run, which record CE
-- customer and transaction changes in the Data Sync pending queues, and the relay's expansion of
-- customer sets.
--
-- Design (measured costs are in internal/triggerbench):
--   * Nothing happens while data_sync_capture_mode() is 'off' beyond one config lookup per
--     trigger firing (and the customer-delete purge, see below).
--   * Customer JSON is built once per customer per transaction, at commit: single-row changes
--     queue a deferred event (constraint triggers, DEFERRABLE INITIALLY DEFERRED); bulk
--     statements (customer inserts, segment membership) use statement-level triggers with
--     transition tables that hand the whole set of customer IDs to one deferred event through a
--     row in data_sync_capture_hook. At commit, a customer that already has a pending row
--     written by this transaction is skipped, so CREATE followed by child inserts is one CREATE
--     row carrying the full JSON.
--   * In 'move' mode the pending row carries key and action only (json_object NULL); the relay
--     builds the JSON with data_sync_customer_json / data_sync_transaction_json when it moves
--     the row to progress. Statement-level triggers queue at once rather than at commit, and
--     an UPDATE of many customers is one data_sync_cust_pending_set row
--     (data_sync_queue_customer_set).
--   * Customer deletes are immediate: every pending, progress and failed row of the customer is
--     removed and a DELETE row (null JSON) is queued.
--
-- Only functions and the transient hook table, replaced or created in place: re-applying this
-- script keeps the triggers that call them and changes no CE table (see sql/embed.go).

-- One row per bulk statement, carrying the customer IDs it touched to a single deferred event.
-- Unlogged: a row lives only until its transaction commits.
CREATE UNLOGGED TABLE IF NOT EXISTS public.data_sync_capture_hook (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action        text NOT NULL,
    customer_ids  bigint[] NOT NULL
);

-- The capture functions run with enable_seqscan = off: their lookups of pending rows by
-- unique_id must use its index, but their plans are cached while the queue is nearly empty
-- (the relay keeps it so) and a sequential scan then stays in the plan when the queue grows
-- (relay down, backlog): measured, single-row update TPS fell from 4,200 to 1,400 in 12 s.
-- Every row they write sets captured = true in the INSERT itself; the column defaults to false,
-- so no other session can mark a row of its own as captured (the relay trusts their JSON's shape).
--
-- Every capture function runs with the owner's rights (SECURITY DEFINER) and
-- search_path = pg_catalog, public, pg_temp: pg_temp last, and every table and function
-- schema-qualified, so a temporary table or function of the session that fired the trigger can
-- never stand in for one of ours (a temporary table's column default would otherwise run as the
-- owner). The builders and data_sync_queue_customer_set, which run inside them, are qualified too.
--
-- Convergence (capture mode): a JSON build of a customer takes a row lock on that customer
-- (SELECT ... FOR NO KEY UPDATE) just before the build, held until the transaction ends. A
-- transaction that has built a customer's JSON (at commit, or early with SET CONSTRAINTS ALL
-- IMMEDIATE, or during a slow commit) therefore commits before any other transaction's build
-- of the same customer, and that later build, a statement of its own started after the lock
-- was granted, sees the first one's changes; its row gets the higher ID. So the last row queued
-- for a customer carries every change committed before it. A row lock rather than an advisory
-- lock: only a role that may update customers can hold it (any database user can take an
-- advisory lock and would stall every commit touching that customer), and a transaction that
-- updated the customer already holds it. The lock and the row it protects are taken in the
-- same (sub)transaction, so a savepoint rolled back releases both and a savepoint released keeps
-- both. Sets are locked in ID order. Residual risk, documented in docs/security.md: two
-- transactions whose deferred events lock two customers in opposite orders (each event fires
-- on its own, in the order the changes were made) can deadlock at commit, and PostgreSQL then
-- aborts one of them.
--
-- data_sync_rebuild_customer builds again the JSON of the customer row this transaction queued
-- in an earlier statement (built_at older than the current statement): the transaction fired
-- its capture early (SET CONSTRAINTS ALL IMMEDIATE, or a trigger of the application's) and then
-- changed the customer again, so the row must carry the state it commits, not the earlier one.
-- The customer's row lock, taken by the first build, is still held by this transaction. A row
-- without JSON (move mode, a DELETE) is left alone. Called only from the capture functions
-- below (SECURITY DEFINER, search_path pinned), with their rights.
CREATE OR REPLACE FUNCTION public.data_sync_rebuild_customer(cid bigint) RETURNS void
LANGUAGE sql AS $fn$
UPDATE public.data_sync_cust_pending_queue q
   SET json_object = coalesce(public.data_sync_customer_json(cid), q.json_object), built_at = statement_timestamp()
 WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid
   AND q.json_object IS NOT NULL AND q.built_at < statement_timestamp()
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_rebuild_customer(bigint) FROM PUBLIC;

-- data_sync_queue_customer queues one customer row (at commit), unless this transaction has
-- already queued that customer (which includes a DELETE of it) or, in capture mode, the
-- customer no longer exists. In move mode no existence check is needed: only this transaction
-- could have deleted a customer it touched, and that queued a DELETE row. It is the one place
-- of this logic: every capture function that queues a single customer calls it. A plain
-- function, called only from the capture functions (SECURITY DEFINER, with search_path and
-- enable_seqscan pinned), with their rights and settings; without SET clauses or a change of
-- user of its own, a call costs about what the statements inlined would.
CREATE OR REPLACE FUNCTION public.data_sync_queue_customer(cid bigint, act text, mode text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    j json;
    built timestamptz;
BEGIN
    IF cid IS NULL THEN
        RETURN;
    END IF;
    SELECT q.built_at INTO built FROM public.data_sync_cust_pending_queue q
    WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid;
    IF FOUND THEN
        IF built < statement_timestamp() AND mode = 'capture' THEN
            PERFORM public.data_sync_rebuild_customer(cid);
        END IF;
        RETURN;
    END IF;
    IF mode = 'capture' THEN
        -- Serialised with other transactions' builds of this customer (see above).
        PERFORM FROM public.customer c WHERE c.customer_id = cid FOR NO KEY UPDATE;
        j := public.data_sync_customer_json(cid);
        IF j IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
    VALUES ('Customer', cid::text, act, j, true, CASE WHEN j IS NOT NULL THEN statement_timestamp() END);
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_queue_customer(bigint, text, text) FROM PUBLIC;

-- Row-level, deferred: a customer or one of its child rows changed. Queues UPDATE (CREATE for
-- a customer insert) for the customer on both sides of the change.
CREATE OR REPLACE FUNCTION public.data_sync_customer_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.customer_id IS DISTINCT FROM NEW.customer_id) THEN
        PERFORM public.data_sync_queue_customer(OLD.customer_id, 'UPDATE', mode);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    PERFORM public.data_sync_queue_customer(NEW.customer_id, 'UPDATE', mode);
    RETURN NULL;
END
$fn$;

-- Row-level, deferred: a retail transaction was posted. At commit its line items exist, so the
-- Transaction CREATE row carries them, followed by an UPDATE of its customer (activity summaries).
CREATE OR REPLACE FUNCTION public.data_sync_transaction_posted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    j json;
    cid bigint;
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    -- One lookup: is the transaction still there (not deleted again in this transaction), and
    -- whose is it.
    SELECT t.customer_id INTO cid FROM public.retail_transaction t WHERE t.retail_transaction_id = NEW.retail_transaction_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF mode = 'capture' THEN
        j := public.data_sync_transaction_json(NEW.retail_transaction_id);
    END IF;
    INSERT INTO public.data_sync_trn_pending_queue (obj_name, unique_id, action, json_object, captured)
    VALUES ('Transaction', NEW.retail_transaction_id, 'CREATE', j, true);
    -- The customer's UPDATE (activity summaries).
    PERFORM public.data_sync_queue_customer(cid, 'UPDATE', mode);
    RETURN NULL;
END
$fn$;

-- data_sync_queue_customer_set queues the customers a statement touched (statement-level
-- triggers: bulk inserts, segment membership, segment renames). An UPDATE of more than 64
-- customers in 'move' mode (or with DataSyncBulkSnapshotMode = move) is one
-- data_sync_cust_pending_set row, which the relay expands when it moves pending rows. Otherwise,
-- in 'capture' mode it hands the customers to one deferred event (data_sync_capture_hook), which
-- builds each JSON once, at commit; in 'move' mode nothing waits for commit, since no JSON is
-- built here: key-only pending rows are queued at once, for the customers that exist
-- (a cascade from a customer delete touches its segment rows) and that this transaction has
-- not queued already. CREATE rows are never put in a set, so a customer's CREATE
-- keeps its place before its later UPDATEs. Called from SECURITY DEFINER trigger functions
-- with enable_seqscan off (see data_sync_queue_customer).
CREATE OR REPLACE FUNCTION public.data_sync_queue_customer_set(mode text, act text, ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    cid bigint;
BEGIN
    IF ids IS NULL OR mode = 'off' THEN
        RETURN;
    END IF;
    -- The EXISTS is a condition of its own, without parameters: an expression holding a
    -- subquery is a query with a cached plan, and with a test of the parameters beside it
    -- the planner folded the subquery away for the actual values and planned it again on
    -- every call (measured: 12 us a call, about a tenth of a one-customer segment change in
    -- move mode). TestCaptureStatementsKeepTheirPlans guards against this.
    IF act = 'UPDATE' AND cardinality(ids) > 64 THEN
        IF mode = 'move' THEN
            INSERT INTO public.data_sync_cust_pending_set (action, customer_ids) VALUES (act, ids);
            RETURN;
        ELSIF EXISTS (SELECT 1 FROM public.data_sync_config c
                      WHERE c.name = 'DataSyncBulkSnapshotMode' AND c.value = 'move') THEN
            INSERT INTO public.data_sync_cust_pending_set (action, customer_ids) VALUES (act, ids);
            RETURN;
        END IF;
    END IF;
    IF mode = 'capture' THEN
        INSERT INTO public.data_sync_capture_hook (action, customer_ids) VALUES (act, ids);
    ELSE
        -- One customer at a time: each statement keeps one cached plan (a set-based INSERT ...
        -- SELECT over the array was planned anew on every call: measured, half the TPS of a
        -- one-row segment change). The body is data_sync_queue_customer's move path, inlined,
        -- plus the existence check it does not need.
        FOREACH cid IN ARRAY ids LOOP
            IF EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = cid)
               AND NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                               WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid) THEN
                INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, captured)
                VALUES ('Customer', cid::text, act, true);
            END IF;
        END LOOP;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_queue_customer_set(text, text, bigint[]) FROM PUBLIC;

-- Statement-level, immediate: queues the customers a bulk statement touched
-- (data_sync_queue_customer_set). TG_ARGV[0] is the action, TG_ARGV[1] the transition table to
-- read ('new' or 'old').
CREATE OR REPLACE FUNCTION public.data_sync_customers_touched() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    ids bigint[];
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_ARGV[1] = 'new' THEN
        SELECT array_agg(DISTINCT n.customer_id) INTO ids FROM data_sync_new_rows n;
    ELSE
        SELECT array_agg(DISTINCT o.customer_id) INTO ids FROM data_sync_old_rows o;
    END IF;
    PERFORM public.data_sync_queue_customer_set(mode, TG_ARGV[0], ids);
    RETURN NULL;
END
$fn$;

-- data_sync_expand_customer_sets turns up to max_sets data_sync_cust_pending_set rows, oldest
-- first, into key-only pending UPDATE rows, one per customer that still exists and has no
-- key-only UPDATE or CREATE row waiting in pending already (that row's JSON, built when it is
-- moved, will show this change too). It returns the number of rows queued. The relay calls it
-- just before it moves pending rows to progress; it runs with the owner's rights so the relay
-- role needs no access to the CE tables.
CREATE OR REPLACE FUNCTION public.data_sync_expand_customer_sets(max_sets integer DEFAULT 100) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_set) THEN
        RETURN 0;
    END IF;
    WITH s AS (
        DELETE FROM public.data_sync_cust_pending_set p
        WHERE p.id IN (SELECT x.id FROM public.data_sync_cust_pending_set x ORDER BY x.id LIMIT max_sets FOR UPDATE SKIP LOCKED)
        RETURNING p.customer_ids, p.created_at
    ), k AS (
        SELECT i.id, min(s.created_at) AS created_at
        FROM s CROSS JOIN LATERAL unnest(s.customer_ids) AS i (id)
        GROUP BY i.id
    )
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, created_at, captured)
    SELECT 'Customer', k.id::text, 'UPDATE', k.created_at, true
    FROM k
    WHERE EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                      WHERE q.unique_id = k.id::text AND q.json_object IS NULL AND q.action <> 'DELETE')
    ORDER BY k.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_expand_customer_sets(integer) FROM PUBLIC;

-- Row-level, deferred, on data_sync_capture_hook: builds and queues the JSON of the customers
-- of one bulk statement, skipping those this transaction already queued. Only capture mode
-- writes hooks; if the mode changed before commit, data_sync_queue_customer_set queues them
-- the way the mode now asks.
CREATE OR REPLACE FUNCTION public.data_sync_capture_hook_fire() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off SET jit = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    cid bigint;
BEGIN
    DELETE FROM public.data_sync_capture_hook h WHERE h.id = NEW.id;
    IF mode = 'capture' AND cardinality(NEW.customer_ids) <= 64 THEN
        -- Small sets (addCustomerToSegment and the like): the one-customer builder, which is
        -- faster than the set-based one for a few rows, one customer at a time so each
        -- statement keeps its cached plan (an INSERT ... SELECT over the array was planned
        -- anew on every call). The IDs come sorted (array_agg DISTINCT).
        FOREACH cid IN ARRAY NEW.customer_ids LOOP
            PERFORM public.data_sync_queue_customer(cid, NEW.action, mode);
        END LOOP;
    ELSIF mode = 'capture' THEN
        -- EXECUTE plans with the real array, so large sets get hash joins.
        -- Serialised with other transactions' builds of these customers, locked in ID order.
        PERFORM FROM public.customer c WHERE c.customer_id = ANY (NEW.customer_ids) ORDER BY c.customer_id FOR NO KEY UPDATE;
        -- Rows this transaction built in an earlier statement (an early capture) are rebuilt.
        FOR cid IN SELECT q.unique_id::bigint FROM public.data_sync_cust_pending_queue q
                   WHERE q.unique_id = ANY (NEW.customer_ids::text[]) AND q.xmin = pg_current_xact_id()::xid
                     AND q.built_at < statement_timestamp() LOOP
            PERFORM public.data_sync_rebuild_customer(cid);
        END LOOP;
        EXECUTE $q$
            INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
            SELECT 'Customer', x.customer_id::text, $2, x.json_object, true, statement_timestamp()
            FROM public.data_sync_customers_json($1) x
            WHERE NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                              WHERE q.unique_id = x.customer_id::text AND q.xmin = pg_current_xact_id()::xid)
            ORDER BY x.customer_id$q$
        USING NEW.customer_ids, NEW.action;
    ELSE
        -- Data Sync was switched to move mode (or off) before this transaction committed.
        PERFORM public.data_sync_queue_customer_set(mode, NEW.action, NEW.customer_ids);
    END IF;
    RETURN NULL;
END
$fn$;

-- Statement-level, immediate: customers were deleted. Their pending, progress and failed rows
-- go first (whatever the capture mode: a deleted customer's data must not be sent later), then
-- one DELETE row each with null JSON.
CREATE OR REPLACE FUNCTION public.data_sync_customers_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    keys text[];
BEGIN
    SELECT array_agg(o.customer_id::text ORDER BY o.customer_id) INTO keys FROM data_sync_old_rows o;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM public.data_sync_cust_pending_queue q WHERE q.unique_id = ANY (keys);
    DELETE FROM public.data_sync_cust_progress_queue q WHERE q.unique_id = ANY (keys);
    DELETE FROM public.data_sync_cust_failed q WHERE q.unique_id = ANY (keys);
    IF public.data_sync_capture_mode() <> 'off' THEN
        INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured)
        SELECT 'Customer', k, 'DELETE', NULL, true FROM unnest(keys) k;
    END IF;
    RETURN NULL;
END
$fn$;

-- Statement-level, immediate: segments were renamed. A renamed segment changes every member's
-- JSON.
CREATE OR REPLACE FUNCTION public.data_sync_segment_renamed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    ids bigint[];
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT cs.customer_id) INTO ids
    FROM data_sync_old_rows o JOIN data_sync_new_rows n ON n.segment_id = o.segment_id
    JOIN public.customer_segment cs ON cs.segment_id = n.segment_id
    WHERE o.segment_name IS DISTINCT FROM n.segment_name;
    PERFORM public.data_sync_queue_customer_set(mode, 'UPDATE', ids);
    RETURN NULL;
END
$fn$;

-- Replaced by data_sync_capture_mode() itself (now PL/pgSQL, see 10_config.sql).
DROP FUNCTION IF EXISTS public.data_sync_capture_mode_fast();
