-- data_sync_await_commit: the relay's doorbell learns of a commit from the walsender, which can
-- decode it before the committing backend has made it visible to new snapshots: the commit
-- record is flushed before the transaction leaves the proc array, commits become visible out of
-- WAL order, and a commit waiting for a synchronous standby stays invisible for as long as it
-- waits. Before it moves pending rows after a ring, the relay waits here for exactly the
-- transactions that rang: until none of xids is in progress in a fresh snapshot, or timeout_ms
-- has passed. It returns those still in progress (empty when all are visible), which the relay
-- waits for again. In practice the wait is a few microseconds; no fixed sleep is left on the
-- delivery path. It reads no table and needs no privilege.
CREATE OR REPLACE FUNCTION data_sync_await_commit(xids xid[], timeout_ms integer) RETURNS xid[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS
$fn$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_ms * interval '1 millisecond';
    running xid[];
BEGIN
    LOOP
        -- Each statement of a VOLATILE function takes a new snapshot. A transaction is still
        -- in progress for it when it is in the snapshot's xip, or at or past its xmax (not yet
        -- completed when the snapshot was taken: a commit waiting for a synchronous standby is
        -- such a one), compared modulo 2^32 as xids are.
        SELECT coalesce(array_agg(x), '{}') INTO running
          FROM pg_catalog.unnest(xids) x,
               LATERAL (SELECT pg_catalog.pg_current_snapshot() AS snap) s
         WHERE x = ANY (ARRAY(SELECT pg_catalog.xid(r) FROM pg_catalog.pg_snapshot_xip(s.snap) r))
            OR ((x::text::bigint - pg_catalog.xid(pg_catalog.pg_snapshot_xmax(s.snap))::text::bigint
                 + 4294967296) % 4294967296) < 2147483648;
        IF cardinality(running) = 0 OR clock_timestamp() >= deadline THEN
            RETURN running;
        END IF;
        PERFORM pg_catalog.pg_sleep(0.0001);
    END LOOP;
END
$fn$;
