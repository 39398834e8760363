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
	require.Equal(t, "auto", mode, "generic plans made while the queues are empty would be kept as they fill")
}
