package cdc

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const wait = 30 * time.Second

var prefixCounter atomic.Int64

// uniquePrefix gives each test its own slot prefix so SlotLag and pg_replication_slots queries
// see only that test's slots.
func uniquePrefix() string {
	return fmt.Sprintf("cdct%d_%d", time.Now().UnixNano()%1_000_000, prefixCounter.Add(1))
}

type running struct {
	l      *Listener
	cancel context.CancelFunc
	done   chan error
}

// start runs a listener on dbURL until the test ends, waits until it streams and drains the
// rings every connect makes.
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	if cfg.SlotPrefix == "" {
		cfg.SlotPrefix = uniquePrefix()
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	l, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(wait):
			t.Errorf("Run did not return after cancel")
		}
	})
	select {
	case <-l.Ready():
	case err := <-r.done:
		t.Fatalf("Run returned before streaming: %v", err)
	case <-time.After(wait):
		t.Fatalf("listener not ready; status %+v", l.Status())
	}
	waitRing(t, l.Queued(), "Queued (connect ring)")
	waitRing(t, l.ConfigChanged(), "ConfigChanged (connect ring)")
	xids, tables := l.TakeQueued()
	require.Empty(t, xids)
	require.Equal(t, []string{""}, tables, "the connect ring names every table")
	return r
}

func waitRing(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("%s did not ring", what)
	}
}

func requireSilent(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s rang unexpectedly", what)
	default:
	}
}

// barrier commits a data_sync_config change and waits for ConfigChanged: every commit before it
// in WAL order has then been decoded, so a silent Queued really means "nothing rang".
func barrier(t testing.TB, dbURL string, l *Listener) {
	t.Helper()
	pgtest.Exec(t, dbURL, "UPDATE data_sync_config SET updated_at = now() WHERE name = 'DataSyncEnabled'")
	waitRing(t, l.ConfigChanged(), "ConfigChanged (barrier)")
}

// requireReturned waits for Run, cancelled, to return nil.
func requireReturned(t testing.TB, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
}

// runFailing runs a listener with cfg that must fail at once, not retry: it returns the
// listener and Run's error, and fails the test if Run was still retrying when the wait ended.
func runFailing(t testing.TB, cfg Config) (*Listener, error) {
	t.Helper()
	l, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = l.Run(ctx)
	assert.NoError(t, ctx.Err(), "Run retried instead of failing at once")
	return l, err
}

func connect(t testing.TB, u string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), u)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// begin opens a transaction on a connection of its own and runs stmts in it, leaving it open.
func begin(t testing.TB, dbURL string, stmts ...string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := connect(t, dbURL).Begin(ctx)
	require.NoError(t, err)
	for _, stmt := range stmts {
		_, err = tx.Exec(ctx, stmt)
		require.NoError(t, err)
	}
	return tx
}

// withParam returns u with a query parameter added (a runtime parameter for the session).
func withParam(t testing.TB, u, key, value string) string {
	t.Helper()
	p, err := url.Parse(u)
	require.NoError(t, err)
	q := p.Query()
	q.Set(key, value)
	p.RawQuery = q.Encode()
	return p.String()
}

func withUser(t testing.TB, u, user string) string {
	t.Helper()
	p, err := url.Parse(u)
	require.NoError(t, err)
	p.User = url.User(user)
	return p.String()
}

const insertCust = "INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES ('1','UPDATE','{}')"
const insertTrn = "INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object) VALUES ('1','CREATE','{}')"

// startCluster starts a dedicated throwaway cluster, stopped when the test ends, for tests that
// need other server settings or restart the server.
func startCluster(t testing.TB, settings map[string]string) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: settings})
	require.NoError(t, err)
	t.Cleanup(func() { c.Stop() })
	return c
}

// installedDB creates a database on cl with cdc-relay installed and returns its URL.
func installedDB(t testing.TB, cl *pgcluster.Cluster) string {
	t.Helper()
	ctx := context.Background()
	db, err := cl.CreateDatabase(ctx, "relay", "")
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, db)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	return db
}
