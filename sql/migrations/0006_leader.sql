-- data_sync_leader: one row that says which relay delivers. Leadership rests on this row, which
-- only the owner and cdc_relay may update (an advisory lock could be taken by any database user
-- and keep every relay on standby). epoch grows by one at each takeover; the relay's moves check
-- it in the same transaction, so a relay that lost leadership can no longer move rows.
-- holder_pid is the backend of the leader's presence session; lease_until bounds how long a
-- leader that cannot reach the database may still count as leader. The endpoint_* columns are
-- the leader's view of the receiver as a whole (set while every request fails the same way).
CREATE TABLE IF NOT EXISTS data_sync_leader (
    id                      integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch                   bigint NOT NULL DEFAULT 0,
    holder                  text,
    holder_pid              integer,
    lease_until             timestamptz,
    since                   timestamptz,
    endpoint_failing_since  timestamptz,
    endpoint_error          text
);
INSERT INTO data_sync_leader (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
