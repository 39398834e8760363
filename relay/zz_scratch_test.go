package relay

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/schema"
)

const newFence = `WITH ids AS MATERIALIZED (
    SELECT id FROM %[1]s ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
), fence AS MATERIALIZED (
    SELECT data_sync_leader_fence($3, $4)
       AND CASE WHEN $4 IS NULL AND NOT EXISTS (SELECT FROM ids)
                THEN set_config('synchronous_commit', 'off', true) IS NOT NULL ELSE true END AS ok
)`

func oldMove(q *queue) string {
	pend := q.pending
	nf := strings.ReplaceAll(newFence, "%[1]s", pend)
	old := `WITH fence AS MATERIALIZED (
    SELECT data_sync_leader_fence($3, $4) AS ok
), ids AS MATERIALIZED (
    SELECT id FROM ` + pend + ` ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)`
	if !strings.Contains(q.moveSQL, nf) {
		panic("fence text")
	}
	return strings.Replace(q.moveSQL, nf, old, 1)
}

func TestScratchPath(t *testing.T) {
	admin := os.Getenv("SCRATCH_ADMIN")
	if admin == "" {
		t.Skip()
	}
	ctx := context.Background()
	a, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	a.Exec(ctx, "DROP DATABASE IF EXISTS scratch WITH (FORCE)")
	_, err = a.Exec(ctx, "CREATE DATABASE scratch")
	require.NoError(t, err)
	url := strings.Replace(admin, "/postgres?", "/scratch?", 1)
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = schema.Install(ctx, c, schema.Options{})
	require.NoError(t, err)
	cfg, _ := pgxpool.ParseConfig(url)
	ConfigurePool(cfg)
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	cc, _ := pgx.ParseConfig(url)
	l, err := NewLeader(LeaderConfig{Name: "x", Lease: time.Hour, Logger: zap.NewNop()}, cc)
	require.NoError(t, err)
	term, err := l.Acquire(ctx)
	require.NoError(t, err)
	defer term.Release(ctx)
	oldCust, oldTrn := oldMove(queues[0]), oldMove(queues[1])
	write := func() uint32 {
		var xid int64
		require.NoError(t, c.QueryRow(ctx, `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ('1', 'DELETE')
			RETURNING pg_current_xact_id()::text::bigint % 4294967296`).Scan(&xid))
		return uint32(xid)
	}
	f := func() fence { fe := term.fence(); fe.renew = nil; return fe }
	variants := map[string]func(x uint32) int{
		"old: await; move cust; move trn (durable)": func(x uint32) int {
			b := &pgx.Batch{}
			_ = b
			var running []string
			require.NoError(t, db.QueryRow(ctx, awaitSQL, xidTexts([]uint32{x}), 1000).Scan(&running))
			fe := f()
			rows, err := db.Query(ctx, oldCust, 1000, true, fe.epoch, fe.renew)
			require.NoError(t, err)
			got, err := scanRows(queues[0], rows)
			require.NoError(t, err)
			rows, err = db.Query(ctx, oldTrn, 1000, true, fe.epoch, fe.renew)
			require.NoError(t, err)
			_, err = scanRows(queues[1], rows)
			require.NoError(t, err)
			return len(got)
		},
		"new: await+move cust; move trn (quiet)": func(x uint32) int {
			got, _, err := queues[0].moveAfter(ctx, db, []uint32{x}, 1000, true, false, f())
			require.NoError(t, err)
			_, _, err = queues[1].moveAfter(ctx, db, nil, 1000, true, false, f())
			require.NoError(t, err)
			return len(got)
		},
		"mid: await; move cust; move trn (quiet)": func(x uint32) int {
			var running []string
			require.NoError(t, db.QueryRow(ctx, awaitSQL, xidTexts([]uint32{x}), 1000).Scan(&running))
			got, _, err := queues[0].moveAfter(ctx, db, nil, 1000, true, false, f())
			require.NoError(t, err)
			_, _, err = queues[1].moveAfter(ctx, db, nil, 1000, true, false, f())
			require.NoError(t, err)
			return len(got)
		},
	}
	names := []string{}
	for k := range variants {
		names = append(names, k)
	}
	slices.Sort(names)
	took := map[string][]float64{}
	for i := 0; i < 300; i++ {
		for _, n := range names {
			x := write()
			start := time.Now()
			got := variants[n](x)
			took[n] = append(took[n], float64(time.Since(start))/1e6)
			require.Equal(t, 1, got)
			db.Exec(ctx, "DELETE FROM data_sync_cust_progress_queue")
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, n := range names {
		s := took[n]
		slices.Sort(s)
		t.Logf("%-45s p50 %.3f  p90 %.3f  p99 %.3f ms", n, s[len(s)/2], s[len(s)*9/10], s[len(s)*99/100])
	}
}
