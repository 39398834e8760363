package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fenceSQL checks the term's epoch (and renews the lease when $2 is not null) on its own.
const fenceSQL = `SELECT data_sync_leader_fence($1, $2)`

// takeoverSQL takes the leader row when nobody holds it, when its holder's presence backend is
// gone, or when its lease has run out; it always returns the holder the statement found (and,
// when it took the row, the new epoch). pg_stat_activity shows every backend's pid to every
// role. A recorded pid equal to our own backend's is a reused pid: its holder is gone. Without
// the fence function (an older install) the row is not taken, and the last column says so.
const takeoverSQL = `
WITH cur AS (
    SELECT holder, holder_pid, since FROM data_sync_leader WHERE id = 1
), took AS (
    UPDATE data_sync_leader SET epoch = epoch + 1, holder = $1, holder_pid = pg_backend_pid(),
        since = now(), lease_until = now() + $2::interval
    WHERE id = 1 AND to_regprocedure('data_sync_leader_fence(bigint, interval)') IS NOT NULL
      AND (holder_pid IS NULL OR lease_until IS NULL OR lease_until < now()
        OR holder_pid = pg_backend_pid()
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = holder_pid))
    RETURNING epoch
)
SELECT (SELECT epoch FROM took), cur.holder, cur.holder_pid, cur.since, pg_backend_pid(),
    to_regprocedure('data_sync_leader_fence(bigint, interval)') IS NOT NULL FROM cur`

// releaseSQL gives the row up at the end of a term, unless another relay holds it by now.
const releaseSQL = `UPDATE data_sync_leader SET holder = NULL, holder_pid = NULL, lease_until = NULL
WHERE id = 1 AND epoch = $1`

// presenceSQL keeps the presence session open while it idles, which it does by design: a
// server-wide idle_session_timeout must not end it (the setting exists from PostgreSQL 14 on).
const presenceSQL = `SELECT set_config('idle_session_timeout', '0', false)
WHERE current_setting('idle_session_timeout', true) IS NOT NULL`

// relayRowSQL records what the leading relay sees, for status: the endpoint state (failing
// since, and why; NULLs when healthy) and its concurrency limit, and nothing else of the row.
const relayRowSQL = `UPDATE data_sync_leader SET endpoint_failing_since = $1, endpoint_error = $2,
    concurrency_limit = $3, concurrency_max = $4, concurrency_adaptive = $5 WHERE id = 1`

// KeepPresence sets up a leader presence session (presenceSQL).
func (s *Store) KeepPresence(ctx context.Context) error {
	if _, err := s.db.Exec(ctx, presenceSQL); err != nil {
		return fmt.Errorf("setting up the leader presence session: %w", err)
	}
	return nil
}

// takeover is what one attempt to take the leadership found.
type takeover struct {
	epoch     *int64 // the new epoch when this session took the row; nil when it did not
	holder    *string
	holderPID *int32
	since     *time.Time
	ownPID    int32 // the backend pid of the session that tried
}

// TakeLeadership tries once to take the leader row for name with a lease (takeoverSQL), and
// tells who held it. An install without the leader row, its table or the fence function is an
// ErrSettings: the relay cannot lead until cdc-relay install has run.
func (s *Store) TakeLeadership(ctx context.Context, name string, lease time.Duration) (takeover, error) {
	var t takeover
	var fenced bool
	err := s.db.QueryRow(ctx, takeoverSQL, name, lease).Scan(&t.epoch, &t.holder, &t.holderPID, &t.since, &t.ownPID, &fenced)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return t, fmt.Errorf("%w: data_sync_leader has no row: run cdc-relay install", ErrSettings)
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined table
		return t, fmt.Errorf("%w: data_sync_leader is missing (an install older than this relay): run cdc-relay install: %w", ErrSettings, err)
	case err != nil:
		return t, fmt.Errorf("trying to take the leadership: %w", err)
	case !fenced: // (the row was not taken)
		return t, fmt.Errorf("%w: the function data_sync_leader_fence is missing (an install older than this relay): run cdc-relay install", ErrSettings)
	}
	return t, nil
}

// RenewLease checks the term's epoch and renews its lease, on its own (fenceSQL).
func (s *Store) RenewLease(ctx context.Context, epoch int64, lease time.Duration) error {
	if _, err := s.db.Exec(ctx, fenceSQL, epoch, lease); err != nil {
		return fmt.Errorf("renewing its lease: %w", err)
	}
	return nil
}

// ReleaseLeadership gives the leader row up at the end of the term epoch (releaseSQL).
func (s *Store) ReleaseLeadership(ctx context.Context, epoch int64) error {
	if _, err := s.db.Exec(ctx, releaseSQL, epoch); err != nil {
		return fmt.Errorf("giving the leadership up: %w", err)
	}
	return nil
}

// SetRelayState records the endpoint state and the concurrency limit in the leader row
// (relayRowSQL), for status.
func (s *Store) SetRelayState(ctx context.Context, st relayState) error {
	var since *time.Time
	var desc *string
	if st.endpoint.failing {
		since, desc = &st.endpoint.since, &st.endpoint.desc
	}
	var limit, most *int
	var adaptive *bool
	if st.limit > 0 {
		limit, most, adaptive = &st.limit, &st.max, &st.adaptive
	}
	if _, err := s.db.Exec(ctx, relayRowSQL, since, desc, limit, most, adaptive); err != nil {
		return fmt.Errorf("updating the relay's state in data_sync_leader: %w", err)
	}
	return nil
}
