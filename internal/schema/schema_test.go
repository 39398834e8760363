package schema_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestInstallIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewEmptyDB(t))
	rep, err := schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.NotEmpty(t, rep.Applied)
	rep, err = schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.Empty(t, rep.Applied, "a second install must change nothing")
}
