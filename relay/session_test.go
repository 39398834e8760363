package relay_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/relay"
)

func TestConfigurePoolSessionSettings(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDB(t))
	require.NoError(t, err)
	relay.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	defer pool.Close()
	var app, mode string
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT current_setting('application_name'), current_setting('plan_cache_mode')`).Scan(&app, &mode))
	require.Equal(t, "cdc-relay", app)
	require.Equal(t, "auto", mode, "generic plans made while the queues are empty would be kept as they fill")
}

// TestRelaySessionPinsItsSearchPath: the relay's statements resolve to the installed tables even
// when the database's search_path puts another schema first, and a temporary table named like
// one of them in the relay's own session is not used (pg_temp is last).
func TestRelaySessionPinsItsSearchPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'https://real.example/datasync' WHERE name = 'DataSyncApiUrl';
		CREATE SCHEMA decoy;
		CREATE TABLE decoy.data_sync_config (name text, value text);
		INSERT INTO decoy.data_sync_config VALUES ('DataSyncApiUrl', 'https://decoy.example/steal');
		DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = decoy, public', current_database()); END $$`)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	relay.ConfigurePool(cfg)
	cfg.MaxConns = 1 // the temporary table below lives in the one session the relay uses
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()

	var path string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&path))
	require.Equal(t, relay.SearchPath, path)
	s, err := relay.NewStore(pool).Settings(ctx)
	require.NoError(t, err)
	require.Equal(t, "https://real.example/datasync", s.APIURL, "a schema put first by ALTER DATABASE was used")

	_, err = pool.Exec(ctx, `CREATE TEMP TABLE data_sync_config (name text, value text);
		INSERT INTO pg_temp.data_sync_config VALUES ('DataSyncApiUrl', 'https://temp.example/steal')`)
	require.NoError(t, err)
	s, err = relay.NewStore(pool).Settings(ctx)
	require.NoError(t, err)
	require.Equal(t, "https://real.example/datasync", s.APIURL, "a temporary table shadowed the real one")
}

// TestRelayPlansStayIndexScansAsQueuesGrow: a session caches the generic plan of a statement
// it ran a few times; when that happened while the queues were empty, the cheapest plan was a
// sequential scan, and it stays cached while progress grows to a backlog of a million rows
// (nothing invalidates it before the next vacuum or analyze). Every relay statement finds its
// rows by id or unique_id, so the relay's sessions never choose a sequential scan.
func TestRelayPlansStayIndexScansAsQueuesGrow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `ALTER TABLE data_sync_cust_progress_queue SET (autovacuum_enabled = false);
		ANALYZE data_sync_cust_progress_queue`)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	relay.ConfigurePool(cfg)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, ack := relay.CustomerMoveAckSQL()
	_, err = conn.Conn().Prepare(ctx, "ack", ack)
	require.NoError(t, err)
	for i := 0; i < 8; i++ { // past the five custom plans after which a generic one may be kept
		_, err := conn.Exec(ctx, "ack", []int64{int64(i), int64(i + 1)})
		require.NoError(t, err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO data_sync_cust_progress_queue (id, obj_name, unique_id, action, json_object)
		SELECT g, 'Customer', g::text, 'UPDATE', '{}' FROM generate_series(1, 200000) g`)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, `EXPLAIN (FORMAT TEXT) EXECUTE ack('{5,6}')`)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	t.Logf("plan:\n%s", plan)
	require.NotContains(t, plan, "Seq Scan", "the acknowledgement scans the whole progress queue")
}
