package relay

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// AwaitAndMove waits for the ringing transactions in the move's round trip: committed ones are
// visible to the move; one still in progress after RecheckSpan is returned (its row is left
// for a later move), and the rows of others move meanwhile.
func TestAwaitAndMoveWaitsForTheRingingTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	queue := func(tx pgx.Tx, key string) uint32 {
		t.Helper()
		var xid int64
		require.NoError(t, tx.QueryRow(ctx, `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ($1, 'DELETE')
			RETURNING pg_current_xact_id()::text::bigint % 4294967296`, key).Scan(&xid))
		return uint32(xid)
	}
	committed, err := e.db.Begin(ctx)
	require.NoError(t, err)
	done := queue(committed, "1")
	require.NoError(t, committed.Commit(ctx))
	open, err := e.db.Begin(ctx)
	require.NoError(t, err)
	defer open.Rollback(ctx)
	inProgress := queue(open, "2")

	s := NewStore(e.db)
	start := time.Now()
	rows, running, err := s.AwaitAndMove(ctx, []uint32{done, inProgress}, queues[0], 10, true, ta)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), RecheckSpan, "the move did not wait for the transaction in progress")
	require.Equal(t, []uint32{inProgress}, running)
	require.Len(t, rows, 1)
	require.Equal(t, "1", rows[0].key)

	require.NoError(t, open.Commit(ctx))
	rows, running, err = s.AwaitAndMove(ctx, running, queues[0], 10, true, ta)
	require.NoError(t, err)
	require.Empty(t, running)
	require.Len(t, rows, 1)
	require.Equal(t, "2", rows[0].key)
}
