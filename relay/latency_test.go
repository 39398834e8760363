package relay

import (
	"context"
	"fmt"
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

// A set of customers written by a transaction that rang but is not yet visible is expanded by
// the expansion that waits for it (ExpandSets waits for the ringing transactions in its round
// trip, as AwaitAndMove does). Before, the expansion ran before the wait and found nothing; the
// move then waited for the transaction and moved nothing, and the set waited for the next
// sweep (an hour in the test that found it, under CPU contention). The barrier is the
// transaction itself, committed while ExpandSets waits; the control without the wait shows the
// set is invisible until then.
func TestSetsOfARingingTransactionAreExpandedOnceVisible(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	_, err := e.db.Exec(ctx, `INSERT INTO customer (customer_id, first_name) VALUES (1, 'a'), (2, 'b')`)
	require.NoError(t, err)
	_, err = e.db.Exec(ctx, `DELETE FROM data_sync_cust_pending_queue`)
	require.NoError(t, err)
	tx, err := e.db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	var xid int64
	require.NoError(t, tx.QueryRow(ctx, `INSERT INTO data_sync_cust_pending_set (action, customer_ids) VALUES ('UPDATE', '{1,2}')
		RETURNING pg_current_xact_id()::text::bigint % 4294967296`).Scan(&xid))
	s := NewStore(e.db)
	running, err := s.ExpandSets(ctx, queues[0], nil)
	require.NoError(t, err)
	require.Empty(t, running)
	require.Equal(t, 0, e.count(`SELECT count(*) FROM data_sync_cust_pending_queue`), "control: the open set was expanded")

	done := make(chan error, 1)
	go func() {
		r, err := s.ExpandSets(ctx, queues[0], []uint32{uint32(xid)})
		if err == nil && len(r) > 0 {
			err = fmt.Errorf("still running after the wait: %v", r)
		}
		done <- err
	}()
	require.Eventually(t, func() bool { // the expansion is waiting for the transaction
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
			AND query LIKE '%data_sync_await_commit%' AND pid <> pg_backend_pid()`) > 0
	}, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-done)
	require.Equal(t, 2, e.count(`SELECT count(*) FROM data_sync_cust_pending_queue`), "the set was not expanded once visible")
}

// moveIn runs the customer queue's move statement (up to 10 rows) on db, a transaction or a
// session, fenced by term (renew: the lease renewal, or nil), and returns the rows it moved.
func moveIn(t *testing.T, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, term *Term, renew *time.Duration) []*row {
	t.Helper()
	rows, err := db.Query(context.Background(), queues[0].moveSQL, 10, true, term.Epoch(), renew)
	require.NoError(t, err)
	moved, err := scanRows(queues[0], rows)
	require.NoError(t, err)
	return moved
}

// A move commits without waiting for the WAL flush, whether it moves rows, renews the lease or
// finds nothing: a crash that loses it leaves its rows in pending (see moveSQL). The setting is
// the move's transaction's alone.
func TestMoveDoesNotWaitForTheFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	lease := 30 * time.Second
	// syncCommit runs the move in a transaction and reads synchronous_commit as its commit
	// would; the rollback leaves pending as it was.
	syncCommit := func(renew *time.Duration) (string, int) {
		t.Helper()
		tx, err := e.db.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		moved := moveIn(t, tx, ta, renew)
		var v string
		require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v))
		return v, len(moved)
	}
	v, n := syncCommit(nil)
	require.Equal(t, []any{"off", 0}, []any{v, n}, "an empty move waits for the WAL flush")
	v, _ = syncCommit(&lease)
	require.Equal(t, "off", v, "a lease renewal waits for the WAL flush")
	e.queueCust("9")
	v, n = syncCommit(nil)
	require.Equal(t, []any{"off", 1}, []any{v, n}, "a move of rows waits for the WAL flush")

	// As the relay runs it, in a transaction of its own: the session keeps its setting.
	conn, err := e.db.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	require.Len(t, moveIn(t, conn, ta, nil), 1)
	require.NoError(t, conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v))
	require.Equal(t, "on", v, "the move's setting outlived its transaction")
}

// A move calls the customer snapshot builder only when it holds a key-only row to build: the
// call costs milliseconds even for no customer, and a move of rows queued with their JSON (capture
// mode) is on the path of every change. The calls are counted in the move's own transaction
// (pg_stat_xact_user_functions).
func TestMoveCallsTheBuilderOnlyForRowsToBuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	builds := func(insert string) (calls, moved int) {
		t.Helper()
		tx, err := e.db.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		_, err = tx.Exec(ctx, "SET LOCAL track_functions = 'all'")
		require.NoError(t, err)
		_, err = tx.Exec(ctx, insert)
		require.NoError(t, err)
		m := moveIn(t, tx, ta, nil)
		require.NoError(t, tx.QueryRow(ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions
			WHERE funcname = 'data_sync_snapshot_customers'`).Scan(&calls))
		return calls, len(m)
	}
	calls, moved := builds(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object, captured)
		VALUES ('1', 'UPDATE', '{"customerID": "1"}', true), ('2', 'DELETE', NULL, true)`)
	require.Equal(t, []int{0, 2}, []int{calls, moved}, "rows queued with their JSON (and a DELETE) called the builder")
	calls, _ = builds(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object, captured)
		VALUES ('1', 'UPDATE', '{"customerID": "1"}', true), ('3', 'UPDATE', NULL, true)`)
	require.Equal(t, 1, calls, "a key-only row to build: one set-based call")
}

// An acknowledgement commits without waiting for the WAL flush (a crash may only make its rows
// be sent again), in its own transaction only.
func TestAckDoesNotWaitForTheFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	_, err := e.db.Exec(ctx, `INSERT INTO data_sync_cust_progress_queue (id, obj_name, unique_id, action, json_object)
		VALUES (1, 'Customer', '1', 'UPDATE', '{}'), (2, 'Customer', '2', 'UPDATE', '{}')`)
	require.NoError(t, err)
	tx, err := e.db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, queues[0].ackSQL, []int64{1})
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	var v string
	require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v))
	require.Equal(t, "off", v)
	require.NoError(t, tx.Commit(ctx))

	conn, err := e.db.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	require.NoError(t, NewStore(conn).Ack(ctx, queues[0], []int64{2}))
	require.Equal(t, 0, e.count(`SELECT count(*) FROM data_sync_cust_progress_queue`))
	require.NoError(t, conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v))
	require.Equal(t, "on", v, "the acknowledgement's setting outlived its transaction")
}

// Recording a failed attempt and re-checking rows before a retry commit without waiting for
// the WAL flush either (a burst of refusals would otherwise be as many flushes).
func TestFailureRecordsDoNotWaitForTheFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLeaderEnv(t)
	_, err := e.db.Exec(ctx, `INSERT INTO data_sync_cust_progress_queue (id, obj_name, unique_id, action, json_object)
		VALUES (1, 'Customer', '1', 'UPDATE', '{}')`)
	require.NoError(t, err)
	for name, run := range map[string]func(tx pgx.Tx) (pgx.Rows, error){
		"fail": func(tx pgx.Tx) (pgx.Rows, error) {
			return tx.Query(ctx, queues[0].failSQL, []int64{1}, 429, "HTTP 429", time.Now(), 1)
		},
		"check": func(tx pgx.Tx) (pgx.Rows, error) { return tx.Query(ctx, queues[0].checkSQL, []int64{1}) },
	} {
		tx, err := e.db.Begin(ctx)
		require.NoError(t, err)
		rows, err := run(tx)
		require.NoError(t, err, name)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err, name)
		require.Equal(t, []int64{1}, ids, name)
		var v string
		require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v))
		require.Equal(t, "off", v, name)
		require.NoError(t, tx.Rollback(ctx))
	}
}

func TestQueuesOf(t *testing.T) {
	t.Parallel()
	cust, trn := queues[0].pending, queues[1].pending
	require.Equal(t, uint8(1), queuesOf([]string{cust}))
	require.Equal(t, uint8(2), queuesOf([]string{trn}))
	require.Equal(t, lookAll, queuesOf([]string{trn, cust}))
	require.Equal(t, lookAll, queuesOf(nil), "a ring naming no table")
	require.Equal(t, lookAll, queuesOf([]string{cust, ""}), "a table the stream did not name")
	require.Equal(t, lookAll, queuesOf([]string{"data_sync_cust_pending_set"}))
	require.Equal(t, lookAll, queuesOf([]string{"data_sync_resync"}))
	require.Equal(t, lookAll, uint8(1<<len(queues)-1))
}
