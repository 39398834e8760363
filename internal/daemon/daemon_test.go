package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/status"
	"github.com/cdc-relay/cdc-relay/relay"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startDaemon runs a daemon in poll mode on dbURL with an admin server on a free port and
// returns the admin address once it serves /readyz as ready (the relay leads).
func startDaemon(t *testing.T, dbURL string) string {
	t.Helper()
	return startDaemonWith(t, Config{DatabaseURL: dbURL})
}

// startDaemonWith is startDaemon with more of the configuration.
func startDaemonWith(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	cfg.Poll, cfg.AdminAddr, cfg.Relay.SweepInterval = true, "127.0.0.1:0", time.Hour
	cfg.OnAdminListen = func(a string) { addr <- a }
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	var a string
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatalf("daemon stopped at start: %v", err)
	}
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + a + "/readyz")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		io.Copy(io.Discard, res.Body)
		return res.StatusCode == http.StatusOK
	}, time.Minute, 10*time.Millisecond, "the first relay never became ready")
	return a
}

// TestStandbyWithTakenAdminAddrRefusesToStart: a second relay on the same host whose admin
// address is taken (here by the first relay) must fail at once, naming the address and the
// flag, not wait as a standby and fail when it should take over.
func TestStandbyWithTakenAdminAddrRefusesToStart(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	leaderAddr := startDaemon(t, dbURL)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, Config{DatabaseURL: dbURL, Poll: true, AdminAddr: leaderAddr, Relay: relay.Config{SweepInterval: time.Hour}})
	require.NoError(t, ctx.Err(), "the second relay returned only when the test gave up on it: it waited as a standby")
	require.Error(t, err)
	assert.Contains(t, err.Error(), leaderAddr)
	assert.Contains(t, err.Error(), "--admin-addr")
}

// TestAdminAddrBoundBeforeTheDatabase: with the address taken and the database unreachable,
// the error is the address: nothing else was tried first.
func TestAdminAddrBoundBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	u, err := url.Parse(pgtest.NewDB(t))
	require.NoError(t, err)
	u.Path = "/no_such_database"
	err = Run(context.Background(), Config{DatabaseURL: u.String(), AdminAddr: taken.Addr().String()})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "listening on --admin-addr "+taken.Addr().String()), err.Error())
}

// TestConcurrentScrapesShareOneQuery: many /metrics scrapes at once cost the database one
// statement per cache period, counted in cdc_relay_db_queries_total{by="scrape"}.
func TestConcurrentScrapesShareOneQuery(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	pgtest.Exec(t, dbURL, `INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES ('5', 'UPDATE', '{}')`)
	// The daemon records in the metrics it finds registered on its registry (see metrics.New).
	reg := metrics.NewRegistry()
	scrapes := metrics.New(reg).Queries.Counter.WithLabelValues("scrape")
	addr := startDaemonWith(t, Config{DatabaseURL: dbURL, Metrics: status.GaugesConfig{TTL: time.Hour}, Registry: reg})
	before := testutil.ToFloat64(scrapes)

	const scrapers = 20
	var start, wg sync.WaitGroup
	start.Add(1)
	bodies := make(chan string, scrapers)
	for range scrapers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			res, err := http.Get("http://" + addr + "/metrics")
			if !assert.NoError(t, err) {
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			assert.Equal(t, http.StatusOK, res.StatusCode)
			bodies <- string(b)
		}()
	}
	start.Done()
	wg.Wait()
	close(bodies)
	assert.Equal(t, 1.0, testutil.ToFloat64(scrapes)-before, "%d concurrent scrapes must cost one statement", scrapers)
	for b := range bodies {
		assert.Contains(t, b, `cdc_relay_queue_rows{queue="cust_pending"} 1`)
	}
}

// TestStopDuringStartIsClean: a stop (SIGTERM, Ctrl-C) that arrives while the daemon's first
// statement waits is a clean stop, not an error exit: the statement is held back by a lock on
// data_sync_config until the stop has been asked for.
func TestStopDuringStartIsClean(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	ctx := context.Background()
	blocker, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer blocker.Close(ctx)
	tx, err := blocker.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `LOCK TABLE data_sync_config IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Config{DatabaseURL: dbURL, Poll: true, AdminAddr: "off", Relay: relay.Config{SweepInterval: time.Hour}})
	}()
	// The daemon's settings read now waits for the lock (seen from a third session: inside the
	// blocker's transaction pg_stat_activity would not change).
	watcher, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer watcher.Close(ctx)
	require.Eventually(t, func() bool {
		var n int
		err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%data_sync_config%'`).Scan(&n)
		return err == nil && n > 0
	}, time.Minute, 5*time.Millisecond, "the daemon's first statement never waited on the lock")
	stop()
	select {
	case err := <-done:
		require.NoError(t, err, "a stop during start-up must be a clean stop")
	case <-time.After(time.Minute):
		t.Fatal("the daemon did not stop")
	}
}
