package tests

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// roleName turns a test name into a role name of its own (roles are cluster-wide).
func roleName(prefix string, t *testing.T) string {
	r := prefix + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	if len(r) > 60 {
		r = r[:60]
	}
	return r
}

// appLogin creates a login role that is what a CE application role is: SELECT, INSERT, UPDATE
// and DELETE on the CE tables (not the Data Sync ones), their sequences, and the TEMP
// privilege every role has by default. It returns the database URL as that role.
func appLogin(t *testing.T, adminURL string) string {
	t.Helper()
	role := roleName("app_", t)
	id := pgx.Identifier{role}.Sanitize()
	pgtest.Exec(t, adminURL, `CREATE ROLE `+id+` LOGIN`)
	pgtest.Exec(t, adminURL, fmt.Sprintf(`DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
             AND c.relkind IN ('r', 'S') AND c.relname NOT LIKE 'data\_sync\_%%' LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE ON SEQUENCE public.%%I TO %%s', r.relname, %[1]s);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%%I TO %%s', r.relname, %[1]s);
        END IF;
    END LOOP;
END $$`, quoteLiteral(id)))
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		conn.Exec(context.Background(), `DROP OWNED BY `+id+`; DROP ROLE `+id)
	})
	u, err := url.Parse(adminURL)
	require.NoError(t, err)
	u.User = url.User(role)
	return u.String()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// plantedQueueNames are the Data Sync tables and transition tables the capture code names:
// each is planted as a temporary table whose every insert runs pg_temp.planted.
var plantedQueueNames = []string{
	"data_sync_cust_pending_queue", "data_sync_trn_pending_queue", "data_sync_cust_progress_queue",
	"data_sync_trn_progress_queue", "data_sync_cust_failed", "data_sync_trn_failed",
	"data_sync_cust_pending_set", "data_sync_capture_hook", "data_sync_leader",
	"data_sync_schema_version", "data_sync_old_rows", "data_sync_new_rows",
}

// plantedViewNames are tables the capture code only reads: each is planted as a temporary view
// whose every read runs pg_temp.planted (the CE tables' views show the real rows, so a planted
// view is noticed only through its function).
var plantedViewNames = []string{
	"data_sync_config", "data_sync_status",
	"customer", "customer_address", "customer_phone", "customer_email", "customer_note",
	"customer_alternate_key", "customer_custom_attribute", "franchisee", "customer_franchisee",
	"customer_associate_assignment", "customer_contact_preference", "promotion_deal",
	"customer_promotion_deal", "segment", "customer_segment", "card", "retail_transaction",
	"line_item", "line_item_modifier", "transaction_property",
}

// plantedFunctions are the functions the capture code calls, planted in pg_temp with their
// signatures.
var plantedFunctions = []string{
	"data_sync_capture_mode() RETURNS text",
	"data_sync_customer_json(bigint) RETURNS json",
	"data_sync_customers_json(bigint[]) RETURNS TABLE (customer_id bigint, json_object json)",
	"data_sync_transaction_json(text) RETURNS json",
	"data_sync_queue_customer(bigint, text, text) RETURNS void",
	"data_sync_queue_customer_set(text, text, bigint[]) RETURNS void",
	"data_sync_apply_enabled() RETURNS void",
	"data_sync_snapshot_customer(bigint) RETURNS json",
	"data_sync_snapshot_transaction(text) RETURNS json",
	"data_sync_expand_customer_sets(integer) RETURNS bigint",
	"data_sync_requeue(text, bigint[]) RETURNS bigint",
	"merge_customers(bigint[]) RETURNS bigint",
}

// plant creates, in conn's session, temporary tables, views and functions under every name the
// capture code uses. Any use of one calls pg_temp.planted, which logs who ran it in
// pg_temp.planted_calls and tries to create the role marker (which only a superuser, the
// owner of the CE tables in this test, can).
func plant(t *testing.T, conn *pgx.Conn, marker string) {
	t.Helper()
	ctx := context.Background()
	stmts := []string{
		`CREATE TEMP TABLE planted_calls (who text, what text)`,
		fmt.Sprintf(`CREATE FUNCTION pg_temp.planted(what text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.planted_calls VALUES (current_user, what);
    BEGIN
        EXECUTE 'CREATE ROLE %s';
    EXCEPTION WHEN insufficient_privilege OR duplicate_object THEN NULL;
    END;
    RETURN 1;
END $$`, pgx.Identifier{marker}.Sanitize()),
	}
	for _, n := range plantedQueueNames {
		stmts = append(stmts, fmt.Sprintf(`CREATE TEMP TABLE %[1]s (
    id bigint DEFAULT pg_temp.planted('%[1]s'), obj_name text, unique_id text, action text, json_object json,
    created_at timestamptz, captured boolean, customer_ids bigint[], customer_id bigint, segment_id bigint,
    segment_name text, name text, value text, planted bigint DEFAULT pg_temp.planted('%[1]s'))`, n),
			// One row each, so lookups find something (inserted without running the defaults).
			fmt.Sprintf(`INSERT INTO pg_temp.%s (id, planted, obj_name, unique_id, action, customer_id, customer_ids, name, value)
    VALUES (0, 0, 'Customer', '1', 'UPDATE', 1, '{1}', 'DataSyncEnabled', 'false')`, n))
	}
	stmts = append(stmts,
		`CREATE TEMP VIEW data_sync_config AS SELECT v.name, v.value, now() AS updated_at
    FROM (VALUES ('DataSyncEnabled', 'false'), ('DataSyncSnapshotMode', 'move')) v (name, value)
    WHERE pg_temp.planted('data_sync_config') IS NOT NULL`,
		`CREATE TEMP VIEW data_sync_status AS SELECT 1 AS x WHERE pg_temp.planted('data_sync_status') IS NOT NULL`)
	for _, n := range plantedViewNames[2:] {
		stmts = append(stmts, fmt.Sprintf(`CREATE TEMP VIEW %[1]s AS SELECT * FROM public.%[1]s WHERE pg_temp.planted('%[1]s') IS NOT NULL`, n))
	}
	for _, f := range plantedFunctions {
		name := f[:strings.Index(f, "(")]
		body := fmt.Sprintf(`BEGIN PERFORM pg_temp.planted('%s()'); RETURN NULL; END`, name)
		if strings.HasSuffix(f, "void") || strings.Contains(f, "TABLE") {
			body = fmt.Sprintf(`BEGIN PERFORM pg_temp.planted('%s()'); RETURN; END`, name)
		}
		stmts = append(stmts, fmt.Sprintf(`CREATE FUNCTION pg_temp.%s LANGUAGE plpgsql AS $$ %s $$`, f, body))
	}
	for _, s := range stmts {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err, s)
	}
}

// A CE application role plants temporary tables, views and functions under every name the
// capture code uses, then makes every kind of change; none of its objects is ever used (so
// nothing ran as the owner) and every change is captured in the real queues.
func TestApplicationRoleCannotHijackCapture(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"capture", "move"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			adminURL := pgtest.NewDB(t)
			pgtest.Exec(t, adminURL, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
			pgtest.Exec(t, adminURL, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncSnapshotMode'`, mode)
			admin := pgtest.Pool(t, adminURL)
			var ownerIsSuper bool
			require.NoError(t, admin.QueryRow(ctx, `SELECT rolsuper FROM pg_roles r JOIN pg_class c ON c.relowner = r.oid
				WHERE c.oid = 'public.customer'::regclass`).Scan(&ownerIsSuper))
			require.True(t, ownerIsSuper, "the CE tables' owner is a superuser here, as in the demo: the worst case")
			marker := roleName("pwned_", t)
			t.Cleanup(func() { admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{marker}.Sanitize()) })

			app, err := pgx.Connect(ctx, appLogin(t, adminURL))
			require.NoError(t, err)
			defer app.Close(context.Background())
			plant(t, app, marker)

			key := func(q queued) string { return q.Queue + " " + q.Action + " " + q.UniqueID }
			steps := []struct {
				name string
				sql  string
				want []string // queue, action and key of rows that must be in the real pending queues
				sets int      // customers that must be in data_sync_cust_pending_set instead (move mode)
			}{
				{"customer insert", `INSERT INTO public.customer (customer_id, first_name) VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Cy')`,
					[]string{"cust CREATE 1", "cust CREATE 2", "cust CREATE 3"}, 0},
				{"customer update", `UPDATE public.customer SET first_name = 'Anna' WHERE customer_id = 1`, []string{"cust UPDATE 1"}, 0},
				{"card", `INSERT INTO public.card (card_number, customer_id) VALUES ('C1', 2)`, []string{"cust UPDATE 2"}, 0},
				{"card in a transaction with savepoints", `BEGIN; SAVEPOINT a; UPDATE public.card SET status = 'ACTIVE' WHERE card_number = 'C1';
					SET CONSTRAINTS ALL IMMEDIATE; RELEASE a; COMMIT`, []string{"cust UPDATE 2"}, 0},
				{"segment membership", `INSERT INTO public.segment (segment_id, segment_name) VALUES (7, 'Gold');
					INSERT INTO public.customer_segment (customer_id, segment_id) VALUES (3, 7)`, []string{"cust UPDATE 3"}, 0},
				{"segment rename", `UPDATE public.segment SET segment_name = 'Platinum' WHERE segment_id = 7`, []string{"cust UPDATE 3"}, 0},
				{"bulk customers", `INSERT INTO public.customer (customer_id) SELECT g FROM generate_series(100, 199) g`, nil, 0},
				{"bulk segment job", `INSERT INTO public.customer_segment (customer_id, segment_id) SELECT g, 7 FROM generate_series(100, 199) g`, nil, 0},
				{"posted transaction", `INSERT INTO public.retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 1)`,
					[]string{"trn CREATE T1", "cust UPDATE 1"}, 0},
				{"transaction re-pointed", `UPDATE public.retail_transaction SET customer_id = 2 WHERE retail_transaction_id = 'T1'`,
					[]string{"cust UPDATE 1", "cust UPDATE 2"}, 0},
				{"customer delete", `DELETE FROM public.customer WHERE customer_id = 3`, []string{"cust DELETE 3"}, 0},
				{"merge", `SELECT public.merge_customers(ARRAY[1, 2]::bigint[])`, []string{"cust DELETE 1", "cust DELETE 2"}, 0},
			}
			// The bulk steps: 100 CREATE rows; 100 UPDATEs, as rows in capture mode and as one set in move mode.
			for g := 100; g < 200; g++ {
				steps[6].want = append(steps[6].want, fmt.Sprintf("cust CREATE %d", g))
				if mode == "capture" {
					steps[7].want = append(steps[7].want, fmt.Sprintf("cust UPDATE %d", g))
				}
			}
			if mode == "move" {
				steps[7].sets = 100
			}
			for _, s := range steps {
				_, err := app.Exec(ctx, s.sql)
				require.NoError(t, err, s.name)
				sets, setIDs := pendingSets(t, admin)
				_, err = admin.Exec(ctx, `DELETE FROM data_sync_cust_pending_set`)
				require.NoError(t, err)
				var got []string
				for _, q := range pending(t, admin) {
					got = append(got, key(q))
					require.Equal(t, mode == "capture" && q.Action != "DELETE", q.HasJSON, "%s: %s", s.name, q)
				}
				for _, w := range s.want {
					require.Contains(t, got, w, s.name)
				}
				require.Equal(t, s.sets, setIDs, "%s: customers in sets (%d sets)", s.name, sets)
			}
			rows, err := app.Query(ctx, `SELECT who || ': ' || what FROM pg_temp.planted_calls`)
			require.NoError(t, err)
			calls, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			require.Empty(t, calls, "planted objects were used by the capture code")
			var roles int
			require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, marker).Scan(&roles))
			require.Zero(t, roles, "code planted by the application ran as the owner")
		})
	}
}

// The relay's login (a member of cdc_relay) gets no customer's or transaction's data except
// through rows queued for it: every function it may execute with the owner's rights is called
// with keys that are not queued and returns nothing, the builders it could call with its own
// rights are refused, and it can neither forge a pending row nor mark one captured.
func TestRelayLoginGetsOnlyQueuedData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminURL := pgtest.NewDB(t)
	admin := pgtest.Pool(t, adminURL)
	run := func(sql string) {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	// Data exists for customers 1-3 and transactions T1-T3 while Data Sync is disabled (nothing
	// queued); then, in move mode, only customer 4 and transaction T4 are queued.
	run(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Cy')`)
	run(`INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 1), ('T2', 2), ('T3', 3)`)
	run(`UPDATE data_sync_config SET value = 'move' WHERE name = 'DataSyncSnapshotMode'`)
	run(`UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	run(`INSERT INTO customer (customer_id, first_name) VALUES (4, 'Dee')`)
	run(`INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T4', 4)`)

	role := roleName("relay_", t)
	pgtest.Exec(t, adminURL, `CREATE ROLE `+pgx.Identifier{role}.Sanitize()+` LOGIN REPLICATION IN ROLE cdc_relay`)
	t.Cleanup(func() { admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize()) })
	u, err := url.Parse(adminURL)
	require.NoError(t, err)
	u.User = url.User(role)
	relay, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	defer relay.Close()

	// Every SECURITY DEFINER function the login may execute, each with a call that must give
	// nothing of a customer or transaction that is not queued. A new one must be added here.
	// Trigger functions are left out: PostgreSQL runs them only as triggers.
	notQueued := map[string][]string{
		"data_sync_snapshot_customer(bigint)": {
			`SELECT data_sync_snapshot_customer(g) FROM generate_series(1, 3) g`,
			`SELECT data_sync_snapshot_customer(g) FROM generate_series(5, 1000) g`},
		"data_sync_snapshot_customers(bigint[])": {
			`SELECT json_object::text FROM data_sync_snapshot_customers(ARRAY[1, 2, 3]::bigint[])`,
			`SELECT json_object::text FROM data_sync_snapshot_customers(ARRAY(SELECT generate_series(5, 1000)::bigint))`},
		"data_sync_snapshot_transaction(text)": {
			`SELECT data_sync_snapshot_transaction(x) FROM unnest(ARRAY['T1', 'T2', 'T3', 'T5']) x`},
		"data_sync_expand_customer_sets(integer)": {`SELECT data_sync_expand_customer_sets(100)::text`},
		// No resync request exists (only the owner may insert one): nothing is queued.
		"data_sync_resync_step(integer)": {`SELECT data_sync_resync_step(1000)::text`},
		"data_sync_requeue(text,bigint[])": {
			`SELECT data_sync_requeue('cust', ARRAY[1, 2, 3])::text`, `SELECT data_sync_requeue('trn', ARRAY[1, 2, 3])::text`},
	}
	rows, err := relay.Query(ctx, `SELECT p.oid::regprocedure::text FROM pg_proc p
		WHERE p.prosecdef AND p.prorettype <> 'trigger'::regtype AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
		  AND has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1`)
	require.NoError(t, err)
	definers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	for _, f := range definers {
		calls, ok := notQueued[strings.ReplaceAll(f, " ", "")]
		require.True(t, ok, "cdc_relay may execute SECURITY DEFINER function %s: add it to this test with calls showing it gives no data that was not queued", f)
		for _, c := range calls {
			rows, err := relay.Query(ctx, c)
			require.NoError(t, err, c)
			vals, err := pgx.CollectRows(rows, pgx.RowTo[*string])
			require.NoError(t, err, c)
			for _, v := range vals {
				if v != nil && *v != "0" {
					t.Errorf("%s returned %.80q...: data that was never queued for the relay", c, *v)
				}
			}
		}
	}
	require.Subset(t, definers, []string{"data_sync_snapshot_customer(bigint)"}, "the move-mode snapshot is still available")
	// Customer 4 was queued key-only (move mode): both customer snapshots build it for the relay.
	for _, c := range []string{`SELECT data_sync_snapshot_customer(4)::text`,
		`SELECT json_object::text FROM data_sync_snapshot_customers(ARRAY[4]::bigint[])`} {
		var j *string
		require.NoError(t, relay.QueryRow(ctx, c).Scan(&j), c)
		require.NotNil(t, j, "%s built nothing for a queued customer", c)
		require.Contains(t, *j, `"Dee"`, c)
	}

	// The builders run with the caller's rights: the login may not read the CE tables.
	for _, c := range []string{
		`SELECT data_sync_customer_json(1)`, `SELECT * FROM data_sync_customers_json(ARRAY[1, 2]::bigint[])`,
		`SELECT data_sync_transaction_json('T1')`,
	} {
		_, err := relay.Exec(ctx, c)
		require.ErrorContains(t, err, "permission denied", c)
	}
	// No forged pending row: no INSERT, no UPDATE of a row's key, and a requeued dead letter it
	// wrote itself is not captured, so it gets no snapshot either.
	for _, c := range []string{
		`INSERT INTO data_sync_cust_pending_queue (unique_id, action, captured) VALUES ('1', 'UPDATE', true)`,
		`INSERT INTO data_sync_trn_pending_queue (unique_id, action, captured) VALUES ('T1', 'CREATE', true)`,
		`UPDATE data_sync_cust_pending_queue SET unique_id = '1'`,
		`UPDATE data_sync_trn_pending_queue SET unique_id = 'T1'`,
		`UPDATE data_sync_cust_pending_queue SET captured = true`,
		`INSERT INTO data_sync_cust_pending_set (action, customer_ids) VALUES ('UPDATE', ARRAY[1, 2, 3])`,
		`SET data_sync.captured = on; INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ('2', 'UPDATE')`,
	} {
		_, err := relay.Exec(ctx, c)
		require.ErrorContains(t, err, "permission denied", c)
	}
	var n int64
	require.NoError(t, relay.QueryRow(ctx, `WITH f AS (INSERT INTO data_sync_cust_failed (id, obj_name, unique_id, action, created_at)
		VALUES (-1, 'Customer', '1', 'UPDATE', now()) RETURNING id) SELECT data_sync_requeue('cust', ARRAY(SELECT id FROM f))`).Scan(&n))
	var j *string
	require.NoError(t, relay.QueryRow(ctx, `SELECT data_sync_snapshot_customer(1)::text`).Scan(&j))
	require.Nil(t, j, "a requeued row the relay wrote itself gets no snapshot")
	require.NoError(t, relay.QueryRow(ctx, `SELECT count(*) FROM data_sync_snapshot_customers('{1}')`).Scan(&n))
	require.Zero(t, n, "a requeued row the relay wrote itself gets no snapshot")

	// What is queued, the relay gets: customer 4 and transaction T4.
	require.NoError(t, relay.QueryRow(ctx, `SELECT data_sync_snapshot_customer(4)::text`).Scan(&j))
	require.NotNil(t, j)
	require.Contains(t, *j, `"Dee"`)
	var set []string
	rows, err = relay.Query(ctx, `SELECT customer_id || ' ' || json_object::text FROM data_sync_snapshot_customers('{1, 2, 3, 4, 4, 5}')`)
	require.NoError(t, err)
	set, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, set, 1, "only customer 4 is queued, once however often it is asked for")
	require.Equal(t, "4 "+*j, set[0], "the set-based snapshot is the per-key one")
	require.NoError(t, relay.QueryRow(ctx, `SELECT data_sync_snapshot_transaction('T4')::text`).Scan(&j))
	require.NotNil(t, j)
	require.True(t, slices.Contains(definers, "data_sync_snapshot_transaction(text)"))
}

// The captured marker is set only by the capture functions: a session that may insert into
// the pending queues cannot pass a row of its own off as captured with a custom setting.
func TestCapturedCannotBeForgedWithASetting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Pool(t, pgtest.NewDB(t))
	conn, err := db.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET data_sync.captured = on`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ('1', 'UPDATE')`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO data_sync_trn_pending_queue (unique_id, action) VALUES ('T1', 'CREATE')`)
	require.NoError(t, err)
	var forged int
	require.NoError(t, conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM data_sync_cust_pending_queue WHERE captured)
		+ (SELECT count(*) FROM data_sync_trn_pending_queue WHERE captured)`).Scan(&forged))
	require.Zero(t, forged)
}

// dead-letters, requeue (through data_sync_requeue) and status work as the relay's login, which
// may not write the pending queues itself; database strings are printed without their control
// characters.
func TestDeadLetterCommandsRunAsTheRelayLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminURL := pgtest.NewDB(t)
	admin := pgtest.Pool(t, adminURL)
	_, err := admin.Exec(ctx, `INSERT INTO data_sync_cust_failed (id, obj_name, unique_id, action, json_object, created_at, reason, last_error)
		VALUES (10, 'Customer', '7', 'UPDATE', '{}', now(), 'failed', E'HTTP 422\x1b[2J\nforged line'),
		       (11, 'Customer', '7', 'UPDATE', '{}', now(), 'held', 'held behind dead letter 10'),
		       (12, 'Customer', '8', 'UPDATE', '{}', now(), 'failed', 'HTTP 422')`)
	require.NoError(t, err)
	role := roleName("relay_", t)
	_, err = admin.Exec(ctx, `CREATE ROLE `+pgx.Identifier{role}.Sanitize()+` LOGIN IN ROLE cdc_relay`)
	require.NoError(t, err)
	t.Cleanup(func() { admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize()) })
	u, err := url.Parse(adminURL)
	require.NoError(t, err)
	u.User = url.User(role)

	code, out := runCLI(t, "dead-letters", "--database-url", u.String())
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "3 dead-letter rows")
	require.NotContains(t, out, "\x1b")
	require.NotContains(t, out, "\nforged line")
	code, out = runCLI(t, "requeue", "--database-url", u.String(), "--id", "10")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "requeued 2 rows", "the dead letter and the row held behind it")
	var pending, captured int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE captured) FROM data_sync_cust_pending_queue
		WHERE id IN (10, 11)`).Scan(&pending, &captured))
	require.Equal(t, 2, pending)
	require.Zero(t, captured, "requeued rows are checked strictly")
	code, out = runCLI(t, "requeue", "--database-url", u.String(), "--all")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "requeued 1 rows")
}

// Switching Data Sync on or off enables or disables the capture triggers of the CE tables only:
// a trigger of the same name on another table is left as it is.
func TestApplyEnabledTouchesOnlyTheCETables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Pool(t, pgtest.NewDB(t))
	for _, s := range []string{
		`CREATE SCHEMA other`,
		`CREATE TABLE other.customer (id int)`,
		`CREATE TABLE public.audit (id int)`,
		`CREATE FUNCTION other.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`,
		`CREATE TRIGGER data_sync_customer_update AFTER UPDATE ON other.customer FOR EACH ROW EXECUTE FUNCTION other.noop()`,
		`CREATE TRIGGER data_sync_child_change AFTER UPDATE ON public.audit FOR EACH ROW EXECUTE FUNCTION other.noop()`,
		`ALTER TABLE other.customer DISABLE TRIGGER data_sync_customer_update`,
		`UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`,
	} {
		_, err := db.Exec(ctx, s)
		require.NoError(t, err, s)
	}
	state := func(rel string) string {
		var st string
		require.NoError(t, db.QueryRow(ctx, `SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass`, rel).Scan(&st))
		return st
	}
	require.Equal(t, "D", state("other.customer"), "enabling Data Sync left another schema's table alone")
	require.Equal(t, "O", state("public.audit"))
	_, err := db.Exec(ctx, `UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`)
	require.NoError(t, err)
	require.Equal(t, "O", state("public.audit"), "disabling Data Sync left a table that is not a CE table alone")
	var ce string
	require.NoError(t, db.QueryRow(ctx, `SELECT tgenabled::text FROM pg_trigger
		WHERE tgrelid = 'public.customer'::regclass AND tgname = 'data_sync_customer_update'`).Scan(&ce))
	require.Equal(t, "D", ce, "the CE table's own trigger is disabled")
}
