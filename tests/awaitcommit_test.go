package tests

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// The doorbell can ring for a commit that is not visible yet: the walsender decodes the commit
// record once it is flushed, while the committing backend still waits (here for a synchronous
// standby that never answers, as when a standby is down) before it leaves the proc array. The
// relay must wait for exactly that transaction, however long, instead of looking again a few
// fixed times and then not until its next sweep (an hour here).
func TestDoorbellWaitsForTheRingingCommitToBecomeVisible(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Its own cluster: synchronous_standby_names is cluster-wide. Sessions commit locally by
	// default; only the writer below asks for the standby.
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"synchronous_standby_names": "'ghost'", "synchronous_commit": "local",
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop() })
	admin, err := pgx.Connect(ctx, c.URL("postgres"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE ce")
	require.NoError(t, err)
	url := c.URL("ce")
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "INSERT INTO customer (customer_id, first_name) VALUES (7, 'Ada')")
	require.NoError(t, err)

	s := newStackOn(t, url, receiver.Config{})
	s.Run(s.Config())
	s.Exec("UPDATE customer SET first_name = 'Bea' WHERE customer_id = 7")
	s.WaitReceived(1) // the relay is up and delivering

	// The writer's commit is flushed (the doorbell rings) but stays invisible while it waits.
	w, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer w.Close(ctx)
	var pid int
	require.NoError(t, w.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	done := make(chan error, 1)
	go func() {
		_, err := w.Exec(ctx, "SET synchronous_commit = on; UPDATE customer SET first_name = 'Cyd' WHERE customer_id = 7")
		done <- err
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		err := admin.QueryRow(ctx, "SELECT coalesce(wait_event = 'SyncRep', false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting)
		return err == nil && waiting
	}, 30*time.Second, 5*time.Millisecond, "the writer's commit waits for the standby")
	// Past the last of the fixed re-checks an earlier relay made after a ring (20 ms, 200 ms,
	// 1 s): a barrier, not a timed assertion.
	time.Sleep(1500 * time.Millisecond)
	before := len(s.Received())
	_, err = admin.Exec(ctx, "SELECT pg_cancel_backend($1)", pid) // the commit stands; it becomes visible
	require.NoError(t, err)
	require.NoError(t, <-done)
	got := s.WaitReceived(before + 1)
	require.Contains(t, got[len(got)-1].Message.Payload, "Cyd", "the last message carries the commit that waited")
}
