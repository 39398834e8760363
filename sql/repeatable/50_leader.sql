-- data_sync_leader_fence: the leadership check that every statement of the leading relay which
-- changes queue state runs inside its own transaction (the move from pending to progress, dead
-- letters). It locks the data_sync_leader row (a share lock, or the update lock when it renews
-- the lease), which a takeover's UPDATE must wait for, and raises SQLSTATE CR001 unless
-- term_epoch is still the current epoch: a statement of a relay that lost leadership either
-- commits before the takeover (the successor then finds its rows in progress) or changes
-- nothing. With renew not null it also extends the lease to now() + renew, so the lease rides
-- on statements the relay runs anyway.
-- SECURITY INVOKER: it can do nothing its caller may not (cdc_relay may SELECT and UPDATE the row).
CREATE OR REPLACE FUNCTION data_sync_leader_fence(term_epoch bigint, renew interval) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public, pg_temp AS
$fn$
BEGIN
    -- A renewal takes the row's update lock at once (never a share lock first, which two
    -- renewing transactions could not both upgrade without a deadlock).
    IF renew IS NULL THEN
        PERFORM 1 FROM public.data_sync_leader WHERE id = 1 AND epoch = term_epoch FOR SHARE;
    ELSE
        UPDATE public.data_sync_leader SET lease_until = now() + renew WHERE id = 1 AND epoch = term_epoch;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'leadership epoch % is no longer current: another relay took over', term_epoch
            USING ERRCODE = 'CR001';
    END IF;
    RETURN true;
END
$fn$;

REVOKE ALL ON FUNCTION data_sync_leader_fence(bigint, interval) FROM PUBLIC;

DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cdc_relay') THEN
        GRANT EXECUTE ON FUNCTION data_sync_leader_fence(bigint, interval) TO cdc_relay;
    END IF;
END
$do$;
