package cdc

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// BenchmarkDoorbell measures commit → Queued latency: from the moment an autocommit insert into a
// pending table returns to the moment the doorbell rings. It reports p50 and p99 in microseconds.
// With synchronous_commit=off the latency is bounded by wal_writer_delay instead.
func BenchmarkDoorbell(b *testing.B) {
	db := pgtest.NewDB(b)
	r := start(b, Config{ConnString: db, Logger: zap.NewNop()})
	ctx := context.Background()
	conn := connect(b, db)
	// The throwaway cluster runs with synchronous_commit=off, where WAL reaches the walsender only
	// when the WAL writer flushes it (wal_writer_delay, 200ms): measure the production setting.
	_, err := conn.Exec(ctx, "SET synchronous_commit = on")
	require.NoError(b, err)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := conn.Exec(ctx, insertCust)
		require.NoError(b, err)
		committed := time.Now()
		waitRing(b, r.l.Queued(), "Queued")
		lat = append(lat, time.Since(committed))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
