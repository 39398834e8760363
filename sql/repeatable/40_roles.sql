-- Least privilege for the relay: the group role cdc_relay may touch the Data Sync queue,
-- dead-letter and configuration tables (configuration read-only) and nothing of the CE data.
-- Snapshot-at-move reads CE tables only through the SECURITY DEFINER functions below.
-- A login for the relay: CREATE ROLE relay LOGIN REPLICATION PASSWORD '...' IN ROLE cdc_relay;

-- data_sync_snapshot_customer / _transaction build a snapshot for the relay's move statement
-- (DataSyncSnapshotMode = move) with the owner's rights, so the relay role needs no SELECT on
-- the CE tables. They build nothing (NULL) unless a key-only row of that key, written by the
-- capture functions, is in the pending queue as the calling statement sees it: the relay's move
-- deletes the pending row and builds its JSON in one statement, and a row deleted by the
-- current command is still visible to it (these functions are STABLE, so they run with the
-- caller's snapshot). So no caller chooses whose data it gets: only the changes queued for the
-- relay. cdc_relay may not insert or update pending rows, and captured cannot be forged
-- (migration 0008). Only cdc_relay (and the owner) may call them. The bodies say $1, not the
-- argument's name: the queue has a column named id.
CREATE OR REPLACE FUNCTION public.data_sync_snapshot_transaction(id text) RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS
$fn$
SELECT public.data_sync_transaction_json($1)
WHERE EXISTS (SELECT 1 FROM public.data_sync_trn_pending_queue q
              WHERE q.unique_id = $1 AND q.json_object IS NULL AND q.captured AND q.action <> 'DELETE')
$fn$;

-- data_sync_snapshot_customers is data_sync_snapshot_customer for the customers of a whole
-- move, under the same rule (a key-only captured row of the key in the pending queue as the
-- calling statement sees it): one row per customer it builds, with the set-based
-- data_sync_customers_json, which costs a fraction of a call per customer once a move holds
-- more than a few (a resync's pages are moved so). ids is a variable in the query, so the
-- plan is cached for the session like any PL/pgSQL statement's; the generic plan is forced:
-- left to choose, PostgreSQL plans the big query afresh for each call (a custom plan looks
-- cheaper for a known array), about 4 ms a move against 0.5 ms for one customer with the
-- cached plan, which looks a customer up by index whatever the size of the array.
CREATE OR REPLACE FUNCTION public.data_sync_snapshot_customers(ids bigint[])
RETURNS TABLE (customer_id bigint, json_object json)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
SET plan_cache_mode = force_generic_plan AS
$fn$
DECLARE
    queued bigint[];
BEGIN
    queued := ARRAY(SELECT u.k FROM unnest(ids) AS u (k)
                    WHERE EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                                  WHERE q.unique_id = u.k::text AND q.json_object IS NULL AND q.captured
                                    AND q.action <> 'DELETE'));
    RETURN QUERY SELECT j.customer_id, j.json_object FROM public.data_sync_customers_json(queued) j;
END
$fn$;

-- data_sync_snapshot_customer is the same for one customer. This version's move no longer calls
-- it (it calls data_sync_snapshot_customers); it stays for a relay of the previous version that
-- still runs between `cdc-relay install` and its restart (docs/upgrading.md), and its rule is
-- the set function's, so the rule is written once.
CREATE OR REPLACE FUNCTION public.data_sync_snapshot_customer(id bigint) RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS
$fn$
SELECT s.json_object FROM public.data_sync_snapshot_customers(ARRAY[$1]) s
$fn$;

REVOKE ALL ON FUNCTION public.data_sync_snapshot_customer(bigint), public.data_sync_snapshot_customers(bigint[]),
    public.data_sync_snapshot_transaction(text) FROM PUBLIC;

DO $do$
DECLARE
    may_create boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
        SELECT rolcreaterole OR rolsuper INTO may_create FROM pg_roles WHERE rolname = current_user;
        IF NOT may_create THEN
            RAISE WARNING 'role cdc_relay does not exist and % may not create it', current_user
                USING HINT = 'ask a superuser to run CREATE ROLE cdc_relay NOLOGIN; then apply the GRANTs listed in the README';
            RETURN;
        END IF;
        CREATE ROLE cdc_relay NOLOGIN;
    END IF;
    -- A cdc_relay created beforehand (by a superuser, as the README allows) is adopted only as
    -- the plain group role it must be: every member gets its rights.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay'
               AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role cdc_relay exists with SUPERUSER, CREATEROLE, CREATEDB or BYPASSRLS, which the relay''s group role must not have: run ALTER ROLE cdc_relay NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS; as a superuser, then install again';
    END IF;
    -- Exactly the statements the daemon, `status` and `dead-letters`/`requeue` run (relay/*.go,
    -- internal/status, internal/cli/cmd_deadletters.go). Pending: read and delete (the move);
    -- UPDATE on created_at alone, because the move's SELECT ... FOR UPDATE needs an UPDATE
    -- privilege. No INSERT or UPDATE of the rows' content: a forged key-only row would make
    -- the snapshot functions build a customer of the relay's choosing. Dead letters: read and
    -- add; they go back to pending only through data_sync_requeue. Revoked first, so an
    -- upgrade drops what an older install granted.
    REVOKE ALL ON data_sync_config, data_sync_cust_pending_queue, data_sync_trn_pending_queue,
        data_sync_cust_progress_queue, data_sync_trn_progress_queue,
        data_sync_cust_failed, data_sync_trn_failed, data_sync_status, data_sync_cust_pending_set,
        data_sync_queue_id_seq FROM cdc_relay;
    GRANT SELECT ON data_sync_config TO cdc_relay;
    GRANT SELECT, DELETE ON data_sync_cust_pending_queue, data_sync_trn_pending_queue TO cdc_relay;
    GRANT UPDATE (created_at) ON data_sync_cust_pending_queue, data_sync_trn_pending_queue TO cdc_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON data_sync_cust_progress_queue, data_sync_trn_progress_queue TO cdc_relay;
    GRANT SELECT, INSERT ON data_sync_cust_failed, data_sync_trn_failed TO cdc_relay;
    GRANT SELECT ON data_sync_status, data_sync_cust_pending_set TO cdc_relay;
    GRANT SELECT, UPDATE ON data_sync_leader TO cdc_relay;
    GRANT EXECUTE ON FUNCTION data_sync_expand_customer_sets(integer), data_sync_requeue(text, bigint[]) TO cdc_relay;
    GRANT EXECUTE ON FUNCTION data_sync_snapshot_customer(bigint), data_sync_snapshot_customers(bigint[]),
        data_sync_snapshot_transaction(text) TO cdc_relay;
END
$do$;
