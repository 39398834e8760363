package status_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/status"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// countingTracer counts the statements sent on the gauges' connection.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestGaugesOneQueryPerPeriodHoweverManyScrapes: scrapes arriving together share one refresh,
// and scrapes within the cache period send nothing.
func TestGaugesOneQueryPerPeriodHoweverManyScrapes(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object)
		SELECT g::text, 'CREATE', '{}' FROM generate_series(1, 3) g`)
	tr := &countingTracer{}
	m := metrics.NewQueue(nil)
	g := status.NewGauges(status.GaugesConfig{ConnString: url, TTL: time.Hour, Tracer: tr, Metrics: m})
	defer g.Close()

	const scrapers = 32
	var start, wg sync.WaitGroup
	start.Add(1)
	errs := make(chan error, scrapers)
	for range scrapers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			errs <- g.Refresh(context.Background())
		}()
	}
	start.Done()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int64(1), tr.n.Load(), "concurrent scrapes must share one query")
	assert.Equal(t, 3.0, testutil.ToFloat64(m.Rows.WithLabelValues("trn_pending")))
	require.NoError(t, g.Refresh(context.Background()))
	assert.Equal(t, int64(1), tr.n.Load(), "a scrape within the cache period must not query")
}

// TestGaugesLockedDatabaseDoesNotHangAScrape: with a queue locked by another session, the
// refresh ends on the server's statement_timeout (while the lock is still held), and the next
// refresh after the lock is gone reconnects and reads.
func TestGaugesLockedDatabaseDoesNotHangAScrape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object)
		SELECT g::text, 'CREATE', '{}' FROM generate_series(1, 3) g`)
	locker, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE data_sync_cust_progress_queue IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	m := metrics.NewQueue(nil)
	g := status.NewGauges(status.GaugesConfig{ConnString: url, TTL: time.Nanosecond, Timeout: 200 * time.Millisecond, Metrics: m})
	defer g.Close()
	err = g.Refresh(ctx) // no deadline of its own: only the gauges' timeout can end it
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want the server's statement timeout, got %v", err)
	assert.Equal(t, "57014", pgErr.Code)
	assert.Contains(t, pgErr.Message, "statement timeout")
	assert.Zero(t, testutil.CollectAndCount(m.Rows), "a failed read sets no gauge")

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, g.Refresh(ctx))
	assert.Equal(t, 3.0, testutil.ToFloat64(m.Rows.WithLabelValues("trn_pending")))
}
