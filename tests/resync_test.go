package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/cli"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// resyncCLI runs `cdc-relay resync ARGS` in-process against url and returns its exit code and
// output.
func resyncCLI(t *testing.T, url string, args ...string) (int, string) {
	t.Helper()
	return cliRun(t, url, append([]string{"resync"}, args...)...)
}

// cliRun runs `cdc-relay ARGS` in-process with DATABASE_URL=url.
func cliRun(t *testing.T, url string, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string {
			if k == "DATABASE_URL" {
				return url
			}
			return ""
		}}
	code := cli.Main(args, env)
	return code, out.String() + errOut.String()
}

// drainResync runs data_sync_resync_step(maxRows) until no request is active and returns the
// number of calls.
func drainResync(t *testing.T, db *pgxpool.Pool, maxRows int) int {
	t.Helper()
	for calls := 1; ; calls++ {
		require.Less(t, calls, 100000, "the resync never finished")
		var n int
		err := db.QueryRow(context.Background(), `SELECT queued_now FROM data_sync_resync_step($1)`, maxRows).Scan(&n)
		if err == pgx.ErrNoRows {
			return calls
		}
		require.NoError(t, err)
	}
}

// keyOnly returns the keys of the pending rows of queue ("cust" or "trn") and empties it,
// checking that each is key-only, captured and has the given action.
func keyOnly(t *testing.T, db *pgxpool.Pool, queue, action string) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), fmt.Sprintf(`DELETE FROM data_sync_%s_pending_queue
		RETURNING unique_id, action, json_object IS NULL AND captured`, queue))
	require.NoError(t, err)
	var keys []string
	for rows.Next() {
		var key, act string
		var ok bool
		require.NoError(t, rows.Scan(&key, &act, &ok))
		require.True(t, ok, "row %s is not a captured key-only row", key)
		require.Equal(t, action, act, key)
		keys = append(keys, key)
	}
	require.NoError(t, rows.Err())
	sort.Strings(keys)
	return keys
}

func ids(from, to int, except ...int) []string {
	skip := map[int]bool{}
	for _, e := range except {
		skip[e] = true
	}
	var out []string
	for i := from; i <= to; i++ {
		if !skip[i] {
			out = append(out, strconv.Itoa(i))
		}
	}
	sort.Strings(out)
	return out
}

// Each selection queues exactly the existing customers or transactions it names, one key-only
// row each, whatever the page size (pages of 1 exercise the cursor, pages of 3 a range scanned
// in several calls for a sparse selection).
func TestResyncSelectionsQueueWhatTheyName(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	ctx := context.Background()
	exec(t, db, `INSERT INTO customer (customer_id, created_at) SELECT g, '2020-01-01' FROM generate_series(1, 40) g`)
	exec(t, db, `INSERT INTO segment (segment_id, segment_name) VALUES (7, 'Gold'), (8, 'Empty')`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id, added_at) SELECT g, 7, '2020-01-01' FROM generate_series(10, 19) g`)
	exec(t, db, `INSERT INTO retail_transaction (retail_transaction_id, customer_id, business_date, create_date)
		SELECT 'T' || lpad(g::text, 3, '0'), g, DATE '2020-01-01' + g, DATE '2020-01-01' FROM generate_series(1, 30) g`)
	// Changes since 2024: the customer row, a segment membership, a card, a note, a transaction;
	// a new phone carries no timestamp and does not count.
	exec(t, db, `UPDATE customer SET updated_at = '2024-06-01' WHERE customer_id = 3`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id, added_at) VALUES (25, 7, '2024-06-01')`)
	exec(t, db, `INSERT INTO card (card_number, customer_id, created_at) VALUES ('C31', 31, '2024-06-01'), ('C32', 32, '2019-01-01')`)
	exec(t, db, `INSERT INTO customer_note (customer_id, note_text, create_date) VALUES (33, 'hi', '2024-06-01')`)
	exec(t, db, `UPDATE retail_transaction SET update_date = '2024-06-01' WHERE retail_transaction_id = 'T005'`)
	exec(t, db, `INSERT INTO customer_phone (customer_id, phone_number) VALUES (36, '555')`)
	exec(t, db, `INSERT INTO customer (customer_id, created_at) VALUES (41, '2024-07-01')`)
	exec(t, db, `DELETE FROM customer WHERE customer_id IN (2, 12)`) // deleted customers are never selected
	pending(t, db)

	for _, pageSize := range []int{1, 3, 1000} {
		t.Run(fmt.Sprint("page", pageSize), func(t *testing.T) {
			cases := []struct {
				insert string
				queue  string
				action string
				want   []string
			}{
				{`INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`, "cust", "UPDATE", ids(1, 41, 2, 12)},
				{`INSERT INTO data_sync_resync (object, action, customer_ids) VALUES ('customer', 'create', '{40,4,2,999,4}')`, "cust", "CREATE", []string{"4", "40"}},
				{`INSERT INTO data_sync_resync (object, segment_id) VALUES ('customer', 7)`, "cust", "UPDATE", ids(10, 25, 12, 20, 21, 22, 23, 24)},
				{`INSERT INTO data_sync_resync (object, segment_id) VALUES ('customer', 8)`, "cust", "UPDATE", nil},
				{`INSERT INTO data_sync_resync (object, changed_since) VALUES ('customer', '2024-01-01T00:00:00Z')`, "cust", "UPDATE", []string{"25", "3", "31", "33", "41", "5"}},
				{`INSERT INTO data_sync_resync (object, select_all) VALUES ('transaction', true)`, "trn", "CREATE", transactionIDs(1, 30)},
				{`INSERT INTO data_sync_resync (object, transaction_ids) VALUES ('transaction', '{T007,T003,nope}')`, "trn", "CREATE", []string{"T003", "T007"}},
				{`INSERT INTO data_sync_resync (object, since_date) VALUES ('transaction', '2020-01-26')`, "trn", "CREATE", transactionIDs(25, 30)},
			}
			for _, c := range cases {
				exec(t, db, c.insert)
				var estimate int
				require.NoError(t, db.QueryRow(ctx, `SELECT estimated_total FROM data_sync_resync ORDER BY id DESC LIMIT 1`).Scan(&estimate))
				require.Equal(t, len(c.want), estimate, c.insert)
				drainResync(t, db, pageSize)
				got := keyOnly(t, db, c.queue, c.action)
				other := map[string]string{"cust": "trn", "trn": "cust"}[c.queue]
				require.Empty(t, keyOnly(t, db, other, c.action), c.insert)
				if c.want == nil {
					c.want = []string(nil)
				}
				require.Equal(t, c.want, got, c.insert)
				var state string
				var selected, queued int
				require.NoError(t, db.QueryRow(ctx, `SELECT state, selected, queued FROM data_sync_resync ORDER BY id DESC LIMIT 1`).Scan(&state, &selected, &queued))
				require.Equal(t, "done", state, c.insert)
				require.Equal(t, len(c.want), selected, c.insert)
				require.Equal(t, len(c.want), queued, c.insert)
			}
		})
	}
}

func transactionIDs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("T%03d", i))
	}
	return out
}

// A key that already has a key-only row of the same effect waiting is not queued again: that
// row's snapshot, built when it is moved, carries the same state. A cancelled request queues
// nothing more.
func TestResyncSkipsKeysAlreadyWaitingAndStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "move")
	exec(t, db, `INSERT INTO customer (customer_id) SELECT g FROM generate_series(1, 10) g`)
	pending(t, db)
	exec(t, db, `UPDATE customer SET first_name = 'x' WHERE customer_id = 4`) // key-only UPDATE waits
	exec(t, db, `INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`)
	drainResync(t, db, 3)
	require.Equal(t, ids(1, 10), keyOnly(t, db, "cust", "UPDATE"), "customer 4 once")
	var selected, queued int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT selected, queued FROM data_sync_resync`).Scan(&selected, &queued))
	require.Equal(t, 10, selected)
	require.Equal(t, 9, queued)

	exec(t, db, `INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`)
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*) FROM data_sync_resync_step(4)`).Scan(&queued))
	exec(t, db, `UPDATE data_sync_resync SET state = 'cancelled' WHERE state = 'running'`)
	require.Equal(t, 1, drainResync(t, db, 4))
	require.Len(t, keyOnly(t, db, "cust", "UPDATE"), 4)
}

// Bad requests are refused before anything is queued, with the same errors from psql and the
// CLI, and the CLI refuses bad flags before it connects.
func TestResyncRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Exec(`INSERT INTO segment (segment_id) VALUES (1)`)
	for _, c := range []struct{ sql, want string }{
		{`INSERT INTO data_sync_resync (object) VALUES ('customer')`, "a resync needs a selection"},
		{`INSERT INTO data_sync_resync (object, select_all, segment_id) VALUES ('customer', true, 1)`, "one selection, 2 were given"},
		{`INSERT INTO data_sync_resync (object, segment_id) VALUES ('customer', 99)`, "segment 99 does not exist"},
		{`INSERT INTO data_sync_resync (object, since_date) VALUES ('customer', '2024-01-01')`, "select transactions, not customers"},
		{`INSERT INTO data_sync_resync (object, segment_id) VALUES ('transaction', 1)`, "select customers, not transactions"},
		{`INSERT INTO data_sync_resync (object, action, select_all) VALUES ('customer', 'DELETE', true)`, `invalid resync action "DELETE"`},
		{`INSERT INTO data_sync_resync (object, action, select_all) VALUES ('transaction', 'UPDATE', true)`, "transactions are sent as CREATE"},
		{`INSERT INTO data_sync_resync (object, customer_ids) VALUES ('customer', '{}')`, "list of IDs to resync is empty"},
		{`INSERT INTO data_sync_resync (object, select_all, rate) VALUES ('customer', true, 0)`, "data_sync_resync_rate_check"},
	} {
		_, err := s.DB.Exec(context.Background(), c.sql)
		require.ErrorContains(t, err, c.want, c.sql)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "say what to resync"},
		{[]string{"customers"}, "no selection: give one of --all, --customer, --segment, --changed-since"},
		{[]string{"customers", "--all", "--segment", "1"}, "one selection per resync, got --all and --segment"},
		{[]string{"customers", "--since", "2024-01-01"}, "--since does not select customers"},
		{[]string{"transactions", "--segment", "1"}, "--segment does not select transactions"},
		{[]string{"customers", "--changed-since", "last tuesday"}, `--changed-since "last tuesday": not a timestamp`},
		{[]string{"transactions", "--since", "2024-13-01"}, `--since "2024-13-01": not a date`},
		{[]string{"customers", "--customer", "abc"}, "a customer ID is a positive whole number"},
		{[]string{"customers", "--segment", "42"}, "segment 42 does not exist"},
		{[]string{"customers", "--all", "--action", "delete"}, `--action "delete"`},
		{[]string{"transactions", "--all", "--action", "create"}, "drop --action"},
		{[]string{"customers", "--all", "--rate", "0"}, "--rate 0"},
		{[]string{"planets", "--all"}, `unknown object "planets"`},
		{[]string{"--status", "--cancel", "1"}, "--cancel takes no other flag"},
		{[]string{"--cancel", "77"}, "no resync request 77"},
	} {
		code, out := resyncCLI(t, s.URL, c.args...)
		require.NotZero(t, code, "%v: %s", c.args, out)
		require.Contains(t, out, c.want, c.args)
	}
	s.Set("DataSyncEnabled", "false")
	code, out := resyncCLI(t, s.URL, "customers", "--all")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "Data Sync is disabled")
	require.Contains(t, out, "cdc-relay config set DataSyncEnabled yes")
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_resync`), "nothing was queued")
}

// Each CLI selection flag writes the request it names; --status and --cancel read and stop it.
func TestResyncCLIFlags(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Exec(`INSERT INTO customer (customer_id) SELECT g FROM generate_series(1, 5) g`)
	s.Exec(`INSERT INTO segment (segment_id) VALUES (3)`)
	s.Exec(`INSERT INTO retail_transaction (retail_transaction_id, customer_id, business_date) VALUES ('A', 1, '2024-03-01'), ('B', 2, '2024-02-01')`)
	for _, c := range []struct {
		args []string
		want string // the request's columns, as data_sync_resync_status shows its selection
	}{
		{[]string{"customers", "--all"}, "customer UPDATE all 5 <nil>"},
		{[]string{"customers", "--customer", "2", "--customer", "4,5", "--action", "create"}, "customer CREATE customers 2,4,5 3 <nil>"},
		{[]string{"customers", "--segment", "3", "--rate", "50"}, "customer UPDATE segment 3 0 50"},
		{[]string{"customers", "--changed-since", "2000-01-01T00:00:00+02:00"}, "customer UPDATE changed since 1999-12-31T22:00:00Z 5 <nil>"},
		{[]string{"customers", "--changed-since", "2000-01-01"}, "customer UPDATE changed since 2000-01-01T00:00:00Z 5 <nil>"},
		{[]string{"transactions", "--all"}, "transaction CREATE all 2 <nil>"},
		{[]string{"transactions", "--transaction", "B", "--transaction", "C"}, "transaction CREATE transactions B,C 1 <nil>"},
		{[]string{"transactions", "--since", "2024-02-15"}, "transaction CREATE business date since 2024-02-15 1 <nil>"},
	} {
		code, out := resyncCLI(t, s.URL, c.args...)
		require.Zero(t, code, "%v: %s", c.args, out)
		require.Contains(t, out, "started")
		var object, action, selection string
		var estimate int
		var rate *int
		require.NoError(t, s.DB.QueryRow(context.Background(), `SELECT object, action, selection, estimated_total, rate_limit
			FROM data_sync_resync_status ORDER BY id DESC LIMIT 1`).Scan(&object, &action, &selection, &estimate, &rate))
		got := fmt.Sprintf("%s %s %s %d ", object, action, selection, estimate)
		if rate == nil {
			got += "<nil>"
		} else {
			got += strconv.Itoa(*rate)
		}
		require.Equal(t, c.want, got, c.args)
	}
	code, out := resyncCLI(t, s.URL, "--status")
	require.Zero(t, code, out)
	require.Contains(t, out, "changed since 1999-12-31T22:00:00Z")
	require.Contains(t, out, "0/5 (0.0%)")
	code, out = cliRun(t, s.URL, "status")
	require.Zero(t, code, out)
	require.Contains(t, out, "Resync requests:")
	require.Contains(t, out, "business date since 2024-02-15")
	code, out = resyncCLI(t, s.URL, "--cancel", "1")
	require.Zero(t, code, out)
	require.Contains(t, out, "resync 1 cancelled")
	code, out = resyncCLI(t, s.URL, "--cancel", "1")
	require.Equal(t, 1, code)
	require.Contains(t, out, "resync request 1 is already cancelled")
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_resync WHERE state = 'cancelled'`))
}

// The relay's role cannot choose what a resync reads: it may not write requests or call the
// selection functions, and the step it runs queues only what the owner's request asked for.
func TestResyncRelayRoleCannotChooseCustomers(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Exec(`INSERT INTO customer (customer_id) SELECT g FROM generate_series(1, 20) g`)
	s.Exec(`DELETE FROM data_sync_cust_pending_queue`)
	login := relayLogin(t, s)
	conn, err := pgx.Connect(context.Background(), login)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	for stmt, want := range map[string]string{
		`INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`: "permission denied for table data_sync_resync",
		`UPDATE data_sync_resync SET customer_ids = '{1,2,3}'`:                        "permission denied for table data_sync_resync",
		`DELETE FROM data_sync_resync`:                                                "permission denied for table data_sync_resync",
		`SELECT * FROM data_sync_resync_customer_keys(ROW(1,'customer','UPDATE',true,NULL,NULL,NULL,NULL,NULL,NULL,'pending',NULL,NULL,0,0,NULL,now(),NULL,NULL,NULL)::data_sync_resync, NULL, NULL, NULL)`: "permission denied for function data_sync_resync_customer_keys",
	} {
		_, err := conn.Exec(context.Background(), stmt)
		require.Error(t, err, stmt)
		require.Contains(t, err.Error(), want, stmt)
	}
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM data_sync_resync_step(1000)`).Scan(&n))
	require.Zero(t, n, "no request: the step does nothing")
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue`))

	s.Exec(`INSERT INTO data_sync_resync (object, customer_ids) VALUES ('customer', '{7,9}')`)
	for {
		var state string
		require.NoError(t, conn.QueryRow(context.Background(), `SELECT request_state FROM data_sync_resync_step(1000)`).Scan(&state))
		if state == "done" {
			break
		}
	}
	require.Equal(t, []string{"7", "9"}, keyOnly(t, s.DB, "cust", "UPDATE"))
	_, err = conn.Exec(context.Background(), `SELECT * FROM data_sync_resync_status`)
	require.NoError(t, err, "the relay's role may read the requests")
}

// The running relay delivers a resync of every customer and transaction, each snapshot equal
// to the database's JSON for it, through the same path as live changes; status shows it done.
func TestResyncDeliveredByTheRelay(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"capture", "move"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, receiver.Config{})
			s.Set("DataSyncSnapshotMode", mode)
			s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'C' || g FROM generate_series(1, 150) g`)
			s.Exec(`INSERT INTO card (card_number, customer_id) SELECT 'K' || g, g FROM generate_series(1, 150, 7) g`)
			s.Exec(`INSERT INTO retail_transaction (retail_transaction_id, customer_id) SELECT 'T' || g, g FROM generate_series(1, 40) g`)
			s.Exec(`DELETE FROM data_sync_cust_pending_queue; DELETE FROM data_sync_trn_pending_queue; DELETE FROM data_sync_cust_pending_set`)
			cfg := s.Config()
			cfg.Relay.MoveBatch, cfg.Relay.Window = 32, 64 // many pages
			s.Run(cfg)
			code, out := resyncCLI(t, s.URL, "customers", "--all", "--action", "create")
			require.Zero(t, code, out)
			code, out = resyncCLI(t, s.URL, "transactions", "--all")
			require.Zero(t, code, out)
			got := s.WaitReceived(190)
			want := map[string]string{}
			rows, err := s.DB.Query(context.Background(), `SELECT 'CUSTOMERCRE/' || customer_id, data_sync_customer_json(customer_id)::text FROM customer
				UNION ALL SELECT 'POSTRNCRE/' || retail_transaction_id, data_sync_transaction_json(retail_transaction_id)::text FROM retail_transaction`)
			require.NoError(t, err)
			for rows.Next() {
				var k, j string
				require.NoError(t, rows.Scan(&k, &j))
				want[k] = j
			}
			require.NoError(t, rows.Err())
			seen := map[string]bool{}
			for _, r := range got {
				var key struct {
					CustomerID          string `json:"customerID"`
					RetailTransactionID string `json:"retailTransactionId"`
				}
				require.NoError(t, json.Unmarshal([]byte(r.Message.Payload), &key))
				k := r.Message.Action + "/" + key.CustomerID
				if r.Message.Action == "POSTRNCRE" {
					k = r.Message.Action + "/" + key.RetailTransactionID
				}
				require.Contains(t, want, k)
				require.JSONEq(t, want[k], r.Message.Payload, k)
				require.False(t, seen[k], "%s delivered twice", k)
				seen[k] = true
			}
			require.Len(t, seen, 190)
			require.Eventually(t, func() bool {
				return s.Count(`SELECT count(*) FROM data_sync_resync WHERE state <> 'done'`) == 0 &&
					s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`)+s.Count(`SELECT count(*) FROM data_sync_trn_progress_queue`) == 0
			}, 30e9, 10e6)
			code, out = resyncCLI(t, s.URL, "--status")
			require.Zero(t, code, out)
			require.Contains(t, out, "150/150 (100.0%)")
			require.Contains(t, out, "40/40 (100.0%)")
		})
	}
}

// Live changes keep priority over a resync: a change committed while hundreds of customers are
// still to be resynced is sent after a few messages (the requests in flight, the page being
// moved), not behind the resync.
func TestResyncLiveChangesGoFirst(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'C' || g FROM generate_series(1, 600) g`)
	s.Exec(`DELETE FROM data_sync_cust_pending_queue`)
	s.Recv.SetFaults(receiver.Faults{Delay: 20 * time.Millisecond}) // a slow receiver: the resync takes seconds
	cfg := s.Config()
	cfg.Relay.Concurrency = 2
	s.Run(cfg)
	code, out := resyncCLI(t, s.URL, "customers", "--all")
	require.Zero(t, code, out)
	got := s.WaitReceived(50)
	var first struct {
		CustomerID string `json:"customerID"`
	}
	require.NoError(t, json.Unmarshal([]byte(got[0].Message.Payload), &first))

	before := len(s.Received())
	s.Exec(`UPDATE customer SET first_name = 'LIVE' WHERE customer_id = $1::bigint`, first.CustomerID)
	var at int
	require.Eventually(t, func() bool {
		for i, r := range s.Received() {
			if strings.Contains(r.Message.Payload, `"LIVE"`) {
				at = i
				return true
			}
		}
		return false
	}, 60*time.Second, 5*time.Millisecond)
	t.Logf("the live change arrived %d messages after its commit (resync rows waiting then: about %d)", at-before, 600-before)
	require.Less(t, at-before, 100, "the live change waited behind the resync")
	s.WaitReceived(601)
}

// A request the step cannot read fails with the reason instead of failing the relay's move
// (which would stop live deliveries), and the next request runs.
func TestResyncUnreadableRequestFailsAlone(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "move")
	exec(t, db, `INSERT INTO customer (customer_id) SELECT g FROM generate_series(1, 3) g`)
	exec(t, db, `INSERT INTO segment (segment_id) VALUES (7)`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 7)`)
	pending(t, db)
	exec(t, db, `INSERT INTO data_sync_resync (object, segment_id) VALUES ('customer', 7)`)
	exec(t, db, `INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`)
	exec(t, db, `ALTER TABLE customer_segment RENAME TO customer_segment_moved`)
	var state string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT request_state FROM data_sync_resync_step(100)`).Scan(&state))
	require.Equal(t, "failed", state)
	var lastErr string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT last_error FROM data_sync_resync WHERE id = 1`).Scan(&lastErr))
	require.Contains(t, lastErr, "customer_segment")
	drainResync(t, db, 100)
	require.Equal(t, ids(1, 3), keyOnly(t, db, "cust", "UPDATE"))
}
