package schema_test

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
	cdcsql "github.com/cdc-relay/cdc-relay/sql"
)

// The capture scripts, in run order: three of functions, then the triggers that call them.
var captureScripts = []string{
	"repeatable/20_builders.sql", "repeatable/22_queueing.sql", "repeatable/24_merge.sql", "repeatable/26_triggers.sql",
}

// embedded returns a copy of the embedded SQL that a test may change.
func embedded(t *testing.T) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(cdcsql.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(cdcsql.Files, p)
		out[p] = &fstest.MapFile{Data: b}
		return err
	})
	require.NoError(t, err)
	return out
}

// triggerOIDs returns every Data Sync trigger, table and name, with its OID: a trigger
// re-created gets a new one.
func triggerOIDs(t *testing.T, conn *pgx.Conn) map[string]uint32 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT tgrelid::regclass::text || ' ' || tgname, oid::int8
		FROM pg_trigger WHERE tgname LIKE 'data\_sync\_%' AND NOT tgisinternal`)
	require.NoError(t, err)
	out := map[string]uint32{}
	for rows.Next() {
		var name string
		var oid int64
		require.NoError(t, rows.Scan(&name, &oid))
		out[name] = uint32(oid)
	}
	require.NoError(t, rows.Err())
	return out
}

// Changing a builder, a capture function or merge_customers re-applies that script alone: the
// triggers on the CE tables keep their OIDs, and the script needs no lock on a CE table beyond
// ACCESS SHARE (it succeeds while another transaction holds every CE table in EXCLUSIVE mode,
// which conflicts with every other lock). Changing the triggers script, the control, needs
// those tables.
func TestChangingACaptureFunctionLeavesTheTriggersAlone(t *testing.T) {
	t.Parallel()
	for _, name := range captureScripts {
		t.Run(strings.TrimSuffix(strings.TrimPrefix(name, "repeatable/"), ".sql"), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.NewDB(t)
			admin := connect(t, url)
			before := triggerOIDs(t, admin)
			require.Contains(t, before, "customer data_sync_customer_update")

			marker := "-- changed: " + name
			files := embedded(t)
			text := string(files[name].Data)
			if name == "repeatable/26_triggers.sql" {
				text += "\n" + marker + "\n"
			} else {
				// Inside the first function's body, so the replaced function shows it.
				require.Contains(t, text, "AS $fn$\n")
				text = strings.Replace(text, "AS $fn$\n", "AS $fn$\n"+marker+"\n", 1)
			}
			files[name] = &fstest.MapFile{Data: []byte(text)}

			// The CE application's transactions, at their strongest short of DDL.
			long := connect(t, url)
			var ce []string
			rows, err := long.Query(ctx, `SELECT c.oid::regclass::text FROM pg_class c
				WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname NOT LIKE 'data\_sync\_%'`)
			require.NoError(t, err)
			ce, err = pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			require.Contains(t, ce, "customer")
			_, err = long.Exec(ctx, `BEGIN; LOCK TABLE `+strings.Join(ce, ", ")+` IN EXCLUSIVE MODE`)
			require.NoError(t, err)

			opts := schema.Options{LockTimeout: 200 * time.Millisecond, LockAttempts: 1}
			rep, err := schema.InstallFrom(ctx, connect(t, url), opts, files)
			if name == "repeatable/26_triggers.sql" {
				require.ErrorIs(t, err, schema.ErrBusy)
				_, err = long.Exec(ctx, `ROLLBACK`)
				require.NoError(t, err)
				rep, err = schema.InstallFrom(ctx, connect(t, url), opts, files)
				require.NoError(t, err)
				require.Equal(t, []string{name}, rep.Applied)
				after := triggerOIDs(t, admin)
				require.NotEqual(t, before["customer data_sync_customer_update"], after["customer data_sync_customer_update"],
					"the triggers script re-creates the triggers")
				return
			}
			require.NoError(t, err, "a function script waited for a CE table")
			require.Equal(t, []string{name}, rep.Applied, "only the changed script is applied")
			require.Empty(t, rep.Retired)
			_, err = long.Exec(ctx, `ROLLBACK`)
			require.NoError(t, err)

			require.Equal(t, before, triggerOIDs(t, admin), "a trigger was re-created or dropped")
			var replaced int
			require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE prosrc LIKE '%' || $1 || '%'`, marker).Scan(&replaced))
			require.Equal(t, 1, replaced, "the changed function was replaced")
		})
	}
}

// singleCaptureScript returns the embedded SQL laid out as the version with one capture script
// had it: the same objects, in the same order, from repeatable/20_capture.sql.
func singleCaptureScript(t *testing.T) fstest.MapFS {
	t.Helper()
	files := embedded(t)
	var capture []byte
	for _, n := range captureScripts {
		capture = append(capture, files[n].Data...)
		capture = append(capture, '\n')
		delete(files, n)
	}
	files["repeatable/20_capture.sql"] = &fstest.MapFile{Data: capture}
	return files
}

// A database installed by the version with one capture script (repeatable/20_capture.sql)
// upgrades to the split scripts: they are applied (their names are new), the old row is
// removed, the table then lists exactly the scripts shipped, and capture keeps working.
func TestInstallUpgradesFromTheSingleCaptureScript(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, pgtest.NewEmptyDB(t))

	_, err := schema.InstallFrom(ctx, conn, schema.Options{}, singleCaptureScript(t))
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
		INSERT INTO customer (customer_id) VALUES (1)`)
	require.NoError(t, err)
	triggers := len(triggerOIDs(t, conn))

	rep, err := schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.Equal(t, captureScripts, rep.Applied)
	require.Equal(t, []string{"repeatable/20_capture.sql"}, rep.Retired)

	scripts, err := schema.Scripts()
	require.NoError(t, err)
	var want []string
	for _, s := range scripts {
		want = append(want, s.Name)
	}
	rows, err := conn.Query(ctx, `SELECT name FROM data_sync_schema_version ORDER BY kind, name`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, want, got)

	rep, err = schema.Install(ctx, conn, schema.Options{})
	require.NoError(t, err)
	require.Empty(t, rep.Applied)
	require.Empty(t, rep.Retired)

	require.Len(t, triggerOIDs(t, conn), triggers)
	var disabled int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger
		WHERE tgname LIKE 'data\_sync\_%' AND NOT tgisinternal AND tgenabled = 'D'`).Scan(&disabled))
	require.Zero(t, disabled, "DataSyncEnabled is true: every trigger stays enabled")
	_, err = conn.Exec(ctx, `INSERT INTO customer (customer_id) VALUES (2); UPDATE customer SET first_name = 'X' WHERE customer_id = 1`)
	require.NoError(t, err)
	rows, err = conn.Query(ctx, `SELECT unique_id || ' ' || action FROM data_sync_cust_pending_queue ORDER BY id`)
	require.NoError(t, err)
	queued, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"1 CREATE", "2 CREATE", "1 UPDATE"}, queued)
}

// catalog lists the objects install may create in public: functions, triggers, views, tables
// and publications.
func catalog(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || tg.tgrelid::regclass::text || ' ' || tg.tgname FROM pg_trigger tg WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'relation ' || c.relkind::text || ' ' || c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')
UNION ALL
SELECT 'publication ' || b.pubname FROM pg_publication b
ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// Uninstall (keeping the queues) leaves only what the migrations create: no trigger, function,
// view or publication of any repeatable script, whether the current scripts or the single
// capture script of an earlier version installed them.
func TestUninstallLeavesOnlyWhatTheMigrationsCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	migrationsOnly := embedded(t)
	for n := range migrationsOnly {
		if strings.HasPrefix(n, "repeatable/") {
			delete(migrationsOnly, n)
		}
	}
	base := connect(t, pgtest.NewEmptyDB(t))
	_, err := schema.InstallFrom(ctx, base, schema.Options{}, migrationsOnly)
	require.NoError(t, err)
	baseline := catalog(t, base)

	for name, layout := range map[string]fs.FS{"current": cdcsql.Files, "single capture script": singleCaptureScript(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.NewEmptyDB(t))
			_, err := schema.InstallFrom(ctx, conn, schema.Options{}, layout)
			require.NoError(t, err)
			require.Contains(t, catalog(t, conn), "trigger customer data_sync_customer_update")
			_, err = schema.Uninstall(ctx, conn, schema.UninstallOptions{})
			require.NoError(t, err)
			var left []string
			for _, o := range catalog(t, conn) {
				if !slices.Contains(baseline, o) {
					left = append(left, o)
				}
			}
			require.Empty(t, left, "uninstall left objects of the repeatable scripts")
			var rows int
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM data_sync_schema_version WHERE kind = 'repeatable'`).Scan(&rows))
			require.Zero(t, rows)
		})
	}
}
