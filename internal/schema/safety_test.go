package schema_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// An upgrade that must wait for a long CE transaction never queues the application's writes
// behind it: each attempt gives up after lock_timeout and is tried again, and install succeeds
// once the long transaction has ended.
func TestInstallNeverQueuesCEWritesBehindALongTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	_, err := admin.Exec(ctx, `INSERT INTO customer (customer_id) VALUES (1), (2)`)
	require.NoError(t, err)
	// An upgrade whose triggers script changed: it re-creates the triggers on the CE tables.
	_, err = admin.Exec(ctx, `DELETE FROM data_sync_schema_version WHERE name = 'repeatable/26_triggers.sql'`)
	require.NoError(t, err)

	long := connect(t, url)
	_, err = long.Exec(ctx, `BEGIN; UPDATE customer SET first_name = 'long' WHERE customer_id = 1`)
	require.NoError(t, err)

	installer := connect(t, url)
	retried := make(chan struct{})
	var retries atomic.Int32
	done := make(chan error, 1)
	go func() {
		_, err := schema.Install(ctx, installer, schema.Options{
			LockTimeout: 100 * time.Millisecond, LockAttempts: 1000, LockBackoff: 10 * time.Millisecond,
			OnLockRetry: func(script string, attempt int, wait time.Duration, err error) {
				if retries.Add(1) == 1 {
					close(retried)
				}
			},
		})
		done <- err
	}()
	select {
	case <-retried:
	case err := <-done:
		t.Fatalf("install finished while the long transaction held customer: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("install never gave up waiting for the lock: it queues the CE application behind it")
	}
	// While install keeps trying, the application writes the same table. Its lock_timeout
	// only turns a write queued for good (behind an install that waits for ever) into a
	// failure instead of a hang.
	writer := connect(t, url)
	_, err = writer.Exec(ctx, `SET lock_timeout = '60s'`)
	require.NoError(t, err)
	_, err = writer.Exec(ctx, `UPDATE customer SET first_name = 'app' WHERE customer_id = 2`)
	require.NoError(t, err, "a CE write queued behind install")
	_, err = long.Exec(ctx, `COMMIT`)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(2 * time.Minute):
		t.Fatal("install did not finish after the long transaction ended")
	}
	var n int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM data_sync_schema_version WHERE name = 'repeatable/26_triggers.sql'`).Scan(&n))
	require.Equal(t, 1, n)
}

// Still locked after every attempt: a clear error naming the cause and the fix, nothing applied.
func TestInstallGivesUpClearlyWhileATableStaysLocked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	_, err := admin.Exec(ctx, `DELETE FROM data_sync_schema_version WHERE name = 'repeatable/26_triggers.sql'`)
	require.NoError(t, err)
	long := connect(t, url)
	_, err = long.Exec(ctx, `BEGIN; LOCK TABLE customer IN ROW EXCLUSIVE MODE`)
	require.NoError(t, err)
	_, err = schema.Install(ctx, connect(t, url), schema.Options{LockTimeout: 50 * time.Millisecond, LockAttempts: 2, LockBackoff: time.Millisecond})
	require.ErrorIs(t, err, schema.ErrBusy)
	require.ErrorContains(t, err, "repeatable/26_triggers.sql")
	require.ErrorContains(t, err, "pg_stat_activity")
	var n int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM data_sync_schema_version WHERE name = 'repeatable/26_triggers.sql'`).Scan(&n))
	require.Zero(t, n)
}

// Objects that install creates with IF NOT EXISTS, created first by another role, are refused
// with their owner named, rather than adopted (a trigger of that role on the capture hook table
// would run inside the capture functions, as the owner).
func TestInstallRefusesObjectsOfAnotherOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewEmptyDB(t)
	admin := connect(t, url)
	role := "squatter_" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "_")
	id := pgx.Identifier{role}.Sanitize()
	_, err := admin.Exec(ctx, `CREATE ROLE `+id+`; GRANT CREATE ON SCHEMA public TO `+id)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			c.Exec(context.Background(), `DROP OWNED BY `+id+`; DROP ROLE `+id)
			c.Close(context.Background())
		}
	})
	_, err = admin.Exec(ctx, `SET ROLE `+id+`;
		CREATE UNLOGGED TABLE data_sync_capture_hook (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			action text NOT NULL, customer_ids bigint[] NOT NULL);
		CREATE TABLE data_sync_cust_pending_set (id bigint PRIMARY KEY, action text, customer_ids bigint[], created_at timestamptz);
		RESET ROLE`)
	require.NoError(t, err)
	_, err = schema.Install(ctx, admin, schema.Options{})
	require.ErrorIs(t, err, schema.ErrForeignOwner)
	require.ErrorContains(t, err, "table data_sync_capture_hook is owned by "+role)
	require.ErrorContains(t, err, "table data_sync_cust_pending_set is owned by "+role)
	var triggers int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'data_sync%'`).Scan(&triggers))
	require.Zero(t, triggers, "nothing installed on top of the foreign objects")
}

// A cdc_relay role created beforehand with more than a group role needs is refused, not adopted:
// every member of it would get those attributes' powers along with the relay's rights. Its own
// cluster, since roles are cluster-wide.
func TestInstallRefusesAPowerfulCdcRelayRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	require.NoError(t, err)
	defer c.Stop()
	url, err := c.CreateDatabase(ctx, "ce", "")
	require.NoError(t, err)
	conn := connect(t, url)
	_, err = conn.Exec(ctx, `CREATE ROLE cdc_relay NOLOGIN CREATEROLE`)
	require.NoError(t, err)
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.ErrorContains(t, err, "ALTER ROLE cdc_relay NOSUPERUSER NOCREATEROLE")
	_, err = conn.Exec(ctx, `ALTER ROLE cdc_relay NOCREATEROLE`)
	require.NoError(t, err)
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
}
