package relay_test

import (
	"context"
	"testing"

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
	require.Equal(t, "force_generic_plan", mode)

	// The acknowledgement keeps one plan on this connection however its array changes.
	conn, err := pool.Acquire(context.Background())
	require.NoError(t, err)
	defer conn.Release()
	for _, ids := range [][]int64{{1}, {1, 2}, {1}, {5}, {1, 2, 3}, {7}, {8}, {9}} {
		_, err := conn.Exec(context.Background(), `DELETE FROM data_sync_cust_progress_queue WHERE id = ANY($1)`, ids)
		require.NoError(t, err)
	}
	var generic, custom int64
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT generic_plans, custom_plans FROM pg_prepared_statements
		WHERE statement LIKE 'DELETE FROM data_sync_cust_progress_queue%'`).Scan(&generic, &custom))
	require.Zero(t, custom, "custom plans")
	require.Equal(t, int64(8), generic)
}
