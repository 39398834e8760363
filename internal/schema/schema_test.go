package schema_test

import (
	"context"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
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

func TestInstallRefusesNonLogicalWALLevelWithTheFix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"wal_level": "replica"}})
	require.NoError(t, err)
	defer c.Stop()
	url, err := c.CreateDatabase(ctx, "ce", "")
	require.NoError(t, err)
	conn := connect(t, url)
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.ErrorIs(t, err, schema.ErrWALLevel)
	require.ErrorContains(t, err, "ALTER SYSTEM SET wal_level = logical")
	// Asked explicitly (the relay then runs with --poll), it installs.
	_, err = schema.Install(ctx, conn, schema.Options{AllowNonLogical: true})
	require.NoError(t, err)
}

func TestInstallWithoutPrivilegesSaysWhatToDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewEmptyDB(t)
	admin := connect(t, url)
	role := "nopriv_" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "_")
	_, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	require.NoError(t, err)
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	u, err := neturl.Parse(url)
	require.NoError(t, err)
	u.User = neturl.User(role)
	conn := connect(t, u.String())
	_, err = schema.Install(ctx, conn, schema.Options{})
	require.ErrorIs(t, err, schema.ErrPrivileges)
	require.ErrorContains(t, err, "run install as the owner of the CE tables")
}

func TestInstallUpgradesAnOlderInstall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewEmptyDB(t))
	// An "older release": only the first migration, recorded as the migrator records it.
	scripts, err := schema.Scripts()
	require.NoError(t, err)
	first := scripts[0]
	_, err = conn.Exec(ctx, `CREATE TABLE data_sync_schema_version (name text PRIMARY KEY, kind text NOT NULL,
		checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, first.SQL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO data_sync_schema_version (name, kind, checksum) VALUES ($1, $2, $3)`, first.Name, first.Kind, first.Checksum)
	require.NoError(t, err)
	rep, err := schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.NotContains(t, rep.Applied, first.Name)
	require.Len(t, rep.Applied, len(scripts)-1)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM data_sync_schema_version`).Scan(&n))
	require.Equal(t, len(scripts), n)
}

func TestUninstallKeepsQueuedRowsUnlessAsked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewDB(t))
	_, err := conn.Exec(ctx, `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ('1', 'DELETE')`)
	require.NoError(t, err)
	_, err = schema.Uninstall(ctx, conn, schema.UninstallOptions{})
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM data_sync_cust_pending_queue`).Scan(&n))
	require.Equal(t, 1, n)
	var pubs int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'data_sync%'`).Scan(&pubs))
	require.Zero(t, pubs)
	rep, err := schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.NotEmpty(t, rep.Applied, "reinstall brings the repeatable scripts back")
	_, err = schema.Uninstall(ctx, conn, schema.UninstallOptions{DropQueues: true})
	require.NoError(t, err)
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('data_sync_cust_pending_queue') IS NOT NULL`).Scan(&exists))
	require.False(t, exists)
}

func TestConfigValidationGivesClearErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewDB(t))
	for _, c := range []struct{ name, value, want string }{
		{"DataSyncEnabled", "maybe", `invalid value "maybe" for DataSyncEnabled`},
		{"DataSyncApiUrl", "not a url", "not an absolute URL"},
		{"DataSyncTokenUrl", "ftp//x", "not an absolute URL"},
		{"DataSyncCredentialMapName", "bad name!", "invalid value"},
		{"DataSyncSnapshotMode", "later", "DataSyncSnapshotMode"},
		{"DataSyncBulkSnapshotMode", "sometimes", `invalid value "sometimes" for DataSyncBulkSnapshotMode`},
		{"DataSyncColour", "blue", `unknown Data Sync setting "DataSyncColour"`},
	} {
		_, err := conn.Exec(ctx, `INSERT INTO data_sync_config (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, c.name, c.value)
		require.ErrorContains(t, err, c.want, c.name)
	}
	// Accepted spellings are normalised.
	_, err := conn.Exec(ctx, `UPDATE data_sync_config SET value = 'Yes' WHERE name = 'DataSyncEnabled'`)
	require.NoError(t, err)
	var v string
	require.NoError(t, conn.QueryRow(ctx, `SELECT value FROM data_sync_config WHERE name = 'DataSyncEnabled'`).Scan(&v))
	require.Equal(t, "true", v)
}

// A VACUUM of an emptied queue table keeps its pages: truncating them would take an ACCESS
// EXCLUSIVE lock, which every CE insert into the queue (and every move) would wait behind. The
// same VACUUM of a table without the setting does truncate, so the check can tell.
func TestVacuumNeverTruncatesAQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewDB(t))
	_, err := conn.Exec(ctx, `CREATE TABLE plain_queue (LIKE data_sync_cust_pending_queue INCLUDING DEFAULTS)`)
	require.NoError(t, err)
	for _, table := range []string{"data_sync_cust_pending_queue", "data_sync_trn_pending_queue",
		"data_sync_cust_progress_queue", "data_sync_trn_progress_queue", "plain_queue"} {
		_, err := conn.Exec(ctx, `INSERT INTO `+table+` (id, unique_id, action) SELECT g, g::text, 'DELETE' FROM generate_series(1, 2000) g`)
		require.NoError(t, err, table)
		_, err = conn.Exec(ctx, `DELETE FROM `+table)
		require.NoError(t, err, table)
		_, err = conn.Exec(ctx, `VACUUM `+table)
		require.NoError(t, err, table)
		var pages int
		require.NoError(t, conn.QueryRow(ctx, `SELECT relpages FROM pg_class WHERE oid = $1::regclass`, table).Scan(&pages))
		if table == "plain_queue" {
			require.Zero(t, pages, "the control table was not truncated: the check cannot tell")
		} else {
			require.Positive(t, pages, "VACUUM truncated %s", table)
		}
	}
}
