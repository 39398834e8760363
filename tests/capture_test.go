package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// queued is one pending row as the tests compare it.
type queued struct {
	Queue    string // "cust" or "trn"
	ObjName  string
	Action   string
	UniqueID string
	HasJSON  bool
}

func (q queued) String() string {
	return fmt.Sprintf("%s %s %s %s json=%v", q.Queue, q.ObjName, q.Action, q.UniqueID, q.HasJSON)
}

// captureDB returns a pool on a fresh database with Data Sync enabled in the given mode.
func captureDB(t *testing.T, mode string) *pgxpool.Pool {
	t.Helper()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncSnapshotMode'`, mode)
	return pgtest.Pool(t, url)
}

func exec(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := db.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

// pending returns every pending row, in queue order, and empties both pending queues so the
// next step of a test sees only its own rows.
func pending(t *testing.T, db *pgxpool.Pool) []queued {
	t.Helper()
	rows, err := db.Query(context.Background(), `
		WITH c AS (DELETE FROM data_sync_cust_pending_queue RETURNING 'cust' AS q, id, obj_name, action, unique_id, json_object IS NOT NULL AS j),
		     t AS (DELETE FROM data_sync_trn_pending_queue RETURNING 'trn' AS q, id, obj_name, action, unique_id, json_object IS NOT NULL AS j)
		SELECT q, obj_name, action, unique_id, j FROM (SELECT * FROM c UNION ALL SELECT * FROM t) x ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (queued, error) {
		var q queued
		err := r.Scan(&q.Queue, &q.ObjName, &q.Action, &q.UniqueID, &q.HasJSON)
		return q, err
	})
	require.NoError(t, err)
	return out
}

func cust(action, id string, json bool) queued {
	return queued{Queue: "cust", ObjName: "Customer", Action: action, UniqueID: id, HasJSON: json}
}

func requirePending(t *testing.T, db *pgxpool.Pool, want ...queued) {
	t.Helper()
	got := pending(t, db)
	if want == nil {
		want = []queued{}
	}
	if got == nil {
		got = []queued{}
	}
	require.Equal(t, want, got)
}

// seed creates customers 1 and 2 with a card each, a segment and a franchisee, then clears the
// queues.
func seed(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	exec(t, db, `INSERT INTO customer (customer_id, first_name) VALUES (1, 'Ann'), (2, 'Bob')`)
	exec(t, db, `INSERT INTO card (card_number, customer_id) VALUES ('C1', 1), ('C2', 2), ('C9', NULL)`)
	exec(t, db, `INSERT INTO segment (segment_id, segment_name) VALUES (10, 'Gold')`)
	exec(t, db, `INSERT INTO franchisee VALUES (2, '<FRANCHISEE NAME> '), (8, '<FRANCHISEE NAME>')`)
	pending(t, db)
}

func TestCaptureTableH(t *testing.T) {
	t.Parallel()
	// Each step is one change of Tables H-1 to H-4 as our schema expresses it, and the pending
	// rows it must produce.
	steps := []struct {
		name string
		sql  string
		want []queued
	}{
		{"addOrUpdateCustomer create", `INSERT INTO customer (customer_id, first_name) VALUES (3, 'Cy')`, []queued{cust("CREATE", "3", true)}},
		{"addOrUpdateCustomer update", `UPDATE customer SET last_name = 'Smith' WHERE customer_id = 1`, []queued{cust("UPDATE", "1", true)}},
		{"address", `INSERT INTO customer_address (customer_id, city) VALUES (1, 'Paris')`, []queued{cust("UPDATE", "1", true)}},
		{"phone", `INSERT INTO customer_phone (customer_id, phone_number) VALUES (1, '555')`, []queued{cust("UPDATE", "1", true)}},
		{"email update", `INSERT INTO customer_email (customer_id, email_address) VALUES (2, 'b@x'); UPDATE customer_email SET email_address = 'c@x'`, []queued{cust("UPDATE", "2", true)}},
		{"addOrUpdateCustomerNote", `INSERT INTO customer_note (customer_id, note_text) VALUES (1, 'hi')`, []queued{cust("UPDATE", "1", true)}},
		{"alternate key", `INSERT INTO customer_alternate_key VALUES (1, 'LOYALTY', 'L1')`, []queued{cust("UPDATE", "1", true)}},
		{"custom attribute", `INSERT INTO customer_custom_attribute VALUES (2, 'shoe', '42')`, []queued{cust("UPDATE", "2", true)}},
		{"addOrDeleteCustomerFranchisees add", `INSERT INTO customer_franchisee (customer_id, franchisee_id) VALUES (1, 2), (1, 8)`, []queued{cust("UPDATE", "1", true)}},
		{"addOrDeleteCustomerFranchisees delete", `DELETE FROM customer_franchisee WHERE customer_id = 1 AND franchisee_id = 8`, []queued{cust("UPDATE", "1", true)}},
		{"updateAssociateAssignment", `INSERT INTO customer_associate_assignment (customer_id, associate_id) VALUES (2, 'A7')`, []queued{cust("UPDATE", "2", true)}},
		{"contact preference", `INSERT INTO customer_contact_preference VALUES (1, 'FAX', false)`, []queued{cust("UPDATE", "1", true)}},
		{"associateCardToCustomer", `UPDATE card SET customer_id = 1 WHERE card_number = 'C9'`, []queued{cust("UPDATE", "1", true)}},
		{"updateCardToCustomerAssociations (move)", `UPDATE card SET customer_id = 2 WHERE card_number = 'C1'`, []queued{cust("UPDATE", "1", true), cust("UPDATE", "2", true)}},
		{"resetCardExpirationDate", `UPDATE card SET expiration_date = '2030-01-01' WHERE card_number = 'C2'`, []queued{cust("UPDATE", "2", true)}},
		{"activateInstrument", `UPDATE card SET status = 'ACTIVE' WHERE card_number = 'C2'`, []queued{cust("UPDATE", "2", true)}},
		{"deactivateInstrument", `UPDATE card SET status = 'INACTIVE' WHERE card_number = 'C2'`, []queued{cust("UPDATE", "2", true)}},
		{"generateCard / generateMultipleCards", `INSERT INTO card (card_number, customer_id) VALUES ('C20', 2), ('C21', 2)`, []queued{cust("UPDATE", "2", true)}},
		{"replace", `INSERT INTO card (card_number, customer_id, status) VALUES ('C22', 2, 'ACTIVE'); UPDATE card SET status = 'REPLACED', replaced_by = 'C22' WHERE card_number = 'C20'`, []queued{cust("UPDATE", "2", true)}},
		{"unblockTenderAccount", `UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C21'; UPDATE card SET status = 'ACTIVE' WHERE card_number = 'C21'`, []queued{cust("UPDATE", "2", true)}},
		{"addCustomerToSegment", `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 10)`, []queued{cust("UPDATE", "1", true)}},
		{"removeCustomerFromSegment", `DELETE FROM customer_segment WHERE customer_id = 1`, []queued{cust("UPDATE", "1", true)}},
		{"Delete Segments job", `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 10), (2, 10); DELETE FROM segment WHERE segment_id = 10`, []queued{cust("UPDATE", "1", true), cust("UPDATE", "2", true)}},
		{"postTransaction", `BEGIN; INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 1); INSERT INTO line_item (retail_transaction_id, line_item_sequence) VALUES ('T1', 1); COMMIT`,
			[]queued{{Queue: "trn", ObjName: "Transaction", Action: "CREATE", UniqueID: "T1", HasJSON: true}, cust("UPDATE", "1", true)}},
		{"postTransaction anonymous", `INSERT INTO retail_transaction (retail_transaction_id) VALUES ('T2')`,
			[]queued{{Queue: "trn", ObjName: "Transaction", Action: "CREATE", UniqueID: "T2", HasJSON: true}}},
		{"deleteCustomer", `DELETE FROM customer WHERE customer_id = 3`, []queued{cust("DELETE", "3", false)}},
	}
	db := captureDB(t, "capture")
	seed(t, db)
	for _, s := range steps {
		exec(t, db, s.sql)
		got := pending(t, db)
		require.Equal(t, s.want, got, s.name)
	}
}

func TestCaptureMoveModeQueuesKeysOnly(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "move")
	seed(t, db)
	exec(t, db, `INSERT INTO customer (customer_id) VALUES (5)`)
	exec(t, db, `UPDATE customer SET first_name = 'X' WHERE customer_id = 1`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (2, 10)`)
	exec(t, db, `INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 1)`)
	exec(t, db, `DELETE FROM customer WHERE customer_id = 5`)
	// The DELETE purged customer 5's CREATE.
	requirePending(t, db, cust("UPDATE", "1", false), cust("UPDATE", "2", false),
		queued{Queue: "trn", ObjName: "Transaction", Action: "CREATE", UniqueID: "T1"}, cust("UPDATE", "1", false),
		cust("DELETE", "5", false))
	// The relay's "snapshot at move" builds the JSON set-based from the keys.
	var n int
	require.NoError(t, db.QueryRow(context.Background(),
		`SELECT count(data_sync_customer_json(x::bigint)) FROM unnest(ARRAY['1','2','404']) x`).Scan(&n))
	require.Equal(t, 2, n, "JSON for existing customers, NULL for a missing one")
}

func TestCaptureDisabledQueuesNothing(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	db := pgtest.Pool(t, url)
	seed(t, db)
	exec(t, db, `INSERT INTO customer (customer_id) VALUES (5); UPDATE customer SET first_name = 'X'`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, 10 FROM customer`)
	exec(t, db, `UPDATE card SET customer_id = 2`)
	exec(t, db, `INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 1)`)
	exec(t, db, `DELETE FROM customer WHERE customer_id = 5`)
	exec(t, db, `SELECT merge_customers(ARRAY[1, 2]::bigint[])`)
	requirePending(t, db)
	var hooks int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*) FROM data_sync_capture_hook`).Scan(&hooks))
	require.Zero(t, hooks)
}

func TestCaptureDeletePurgesEveryQueue(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	exec(t, db, `UPDATE customer SET last_name = 'Z'`) // pending rows for 1 and 2
	exec(t, db, `INSERT INTO data_sync_cust_progress_queue (id, unique_id, action) VALUES (900, '1', 'UPDATE'), (901, '2', 'UPDATE')`)
	exec(t, db, `INSERT INTO data_sync_cust_failed (id, unique_id, action, created_at) VALUES (902, '1', 'UPDATE', now()), (903, '2', 'UPDATE', now())`)
	exec(t, db, `DELETE FROM customer WHERE customer_id = 1`)
	var rows []string
	r, err := db.Query(context.Background(), `
		SELECT 'pending ' || unique_id || ' ' || action FROM data_sync_cust_pending_queue
		UNION ALL SELECT 'progress ' || unique_id FROM data_sync_cust_progress_queue
		UNION ALL SELECT 'failed ' || unique_id FROM data_sync_cust_failed ORDER BY 1`)
	require.NoError(t, err)
	rows, err = pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"failed 2", "pending 1 DELETE", "pending 2 UPDATE", "progress 2"}, rows)
}

func TestCaptureMerge(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	exec(t, db, `INSERT INTO customer_phone (customer_id, phone_number) VALUES (1, '1'), (2, '2');
		INSERT INTO customer_alternate_key VALUES (1, 'LOY', 'a'), (2, 'LOY', 'b');
		INSERT INTO customer_segment VALUES (1, 10), (2, 10);
		INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T1', 2)`)
	pending(t, db)
	var id int64
	require.NoError(t, db.QueryRow(context.Background(), `SELECT merge_customers(ARRAY[1, 2]::bigint[])`).Scan(&id))
	requirePending(t, db, cust("DELETE", "1", false), cust("DELETE", "2", false), cust("CREATE", fmt.Sprint(id), true))
	var first string
	var phones, cards, segs, trns int
	var key string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT c.first_name,
		(SELECT count(*) FROM customer_phone WHERE customer_id = c.customer_id),
		(SELECT count(*) FROM card WHERE customer_id = c.customer_id),
		(SELECT count(*) FROM customer_segment WHERE customer_id = c.customer_id),
		(SELECT count(*) FROM retail_transaction WHERE customer_id = c.customer_id),
		(SELECT key_value FROM customer_alternate_key WHERE customer_id = c.customer_id)
		FROM customer c WHERE c.customer_id = $1`, id).Scan(&first, &phones, &cards, &segs, &trns, &key))
	require.Equal(t, []any{"Ann", 2, 2, 1, 1, "a"}, []any{first, phones, cards, segs, trns, key})
	var left int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*) FROM customer WHERE customer_id IN (1, 2)`).Scan(&left))
	require.Zero(t, left)
}

func TestMergeRejectsBadInput(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	for _, c := range []struct{ arg, msg string }{
		{`ARRAY[1]::bigint[]`, "at least two customer IDs"},
		{`NULL::bigint[]`, "at least two customer IDs"},
		{`ARRAY[1, 1]::bigint[]`, "NULL or a duplicate"},
		{`ARRAY[1, NULL]::bigint[]`, "NULL or a duplicate"},
		{`ARRAY[1, 404]::bigint[]`, "customers {404} do not exist"},
	} {
		_, err := db.Exec(context.Background(), `SELECT merge_customers(`+c.arg+`)`)
		require.ErrorContains(t, err, c.msg, c.arg)
	}
	requirePending(t, db)
}

func TestCaptureOneBuildPerCustomerPerTransaction(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	// CREATE then child rows, segment, update, in one transaction: one CREATE with the full JSON.
	exec(t, db, `BEGIN;
		INSERT INTO customer (customer_id, first_name) VALUES (7, 'Eve');
		INSERT INTO customer_phone (customer_id, phone_number) VALUES (7, '555-7');
		INSERT INTO customer_segment (customer_id, segment_id) VALUES (7, 10);
		UPDATE customer SET last_name = 'Last' WHERE customer_id = 7;
		INSERT INTO customer_franchisee (customer_id, franchisee_id) VALUES (7, 8);
		COMMIT`)
	var j string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT json_object::text FROM data_sync_cust_pending_queue WHERE unique_id = '7'`).Scan(&j))
	for _, s := range []string{`"555-7"`, `"Gold"`, `"Last"`, `"franchiseeId" : 8`} {
		require.Contains(t, j, s)
	}
	requirePending(t, db, cust("CREATE", "7", true))
	// Many updates of one customer in one transaction: one UPDATE.
	exec(t, db, `BEGIN;
		UPDATE customer SET first_name = 'A1' WHERE customer_id = 1;
		UPDATE customer SET first_name = 'A2' WHERE customer_id = 1;
		INSERT INTO customer_note (customer_id, note_text) VALUES (1, 'n');
		UPDATE card SET status = 'ACTIVE' WHERE card_number = 'C1';
		COMMIT`)
	require.NoError(t, db.QueryRow(context.Background(), `SELECT json_object::text FROM data_sync_cust_pending_queue WHERE unique_id = '1'`).Scan(&j))
	require.Contains(t, j, `"A2"`)
	requirePending(t, db, cust("UPDATE", "1", true))
	// Updated then deleted in one transaction: the DELETE only.
	exec(t, db, `BEGIN; UPDATE customer SET first_name = 'Z' WHERE customer_id = 2; DELETE FROM customer WHERE customer_id = 2; COMMIT`)
	requirePending(t, db, cust("DELETE", "2", false))
}

func TestCaptureBulkSegment(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	const n = 12000
	exec(t, db, `INSERT INTO customer (customer_id, first_name) SELECT g, 'c' || g FROM generate_series(1, $1::int) g`, n)
	exec(t, db, `INSERT INTO segment (segment_id, segment_name) VALUES (1, 'Bulk'), (2, 'Other')`)
	pending(t, db)
	count := func() (rows, distinct, withJSON int) {
		t.Helper()
		require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT unique_id), count(json_object)
			FROM data_sync_cust_pending_queue WHERE action = 'UPDATE'`).Scan(&rows, &distinct, &withJSON))
		pending(t, db)
		return
	}
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, 1 FROM customer`)
	r, d, j := count()
	require.Equal(t, []int{n, n, n}, []int{r, d, j}, "add %d customers to a segment", n)
	// One statement adding each customer to two segments: still one row per customer.
	exec(t, db, `DELETE FROM customer_segment`)
	pending(t, db)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, s FROM customer, (VALUES (1), (2)) v(s)`)
	r, d, _ = count()
	require.Equal(t, []int{n, n}, []int{r, d})
	exec(t, db, `DELETE FROM segment WHERE segment_id = 1`)
	r, d, _ = count()
	require.Equal(t, []int{n, n}, []int{r, d}, "segment deletion")
}

func TestUninstallRemovesTriggersKeepsRows(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	pgtest.Exec(t, url, `INSERT INTO customer (customer_id) VALUES (1)`)
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = schema.Uninstall(context.Background(), conn, schema.UninstallOptions{})
	require.NoError(t, err)
	pgtest.Exec(t, url, `UPDATE customer SET first_name = 'X'; INSERT INTO customer (customer_id) VALUES (2); DELETE FROM customer WHERE customer_id = 1`)
	var rows []string
	r, err := conn.Query(context.Background(), `SELECT unique_id || ' ' || action FROM data_sync_cust_pending_queue ORDER BY id`)
	require.NoError(t, err)
	rows, err = pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"1 CREATE"}, rows)
	var fns int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_proc WHERE proname LIKE 'data_sync_%' AND proname NOT IN ('data_sync_config_validate', 'data_sync_capture_mode')`).Scan(&fns))
	require.Zero(t, fns, "capture functions left behind")
	// Reinstalling brings capture back.
	_, err = schema.Install(context.Background(), conn, schema.Options{})
	require.NoError(t, err)
	pgtest.Exec(t, url, `UPDATE customer SET first_name = 'Y'`)
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM data_sync_cust_pending_queue`).Scan(&n))
	require.Equal(t, 2, n)
}

// shape describes a JSON value's recursive key structure: object keys in order, the type of
// every non-null sample value.
func shape(t *testing.T, path string, sample, got any) {
	t.Helper()
	switch s := sample.(type) {
	case nil:
		return
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, "%s: want array, got %T", path, got)
		if len(s) > 0 {
			for i, e := range g {
				shape(t, fmt.Sprintf("%s[%d]", path, i), s[0], e)
			}
		}
	case orderedObject:
		g, ok := got.(orderedObject)
		require.True(t, ok, "%s: want object, got %T", path, got)
		require.Equal(t, s.keys, g.keys, "%s: keys", path)
		for _, k := range s.keys {
			shape(t, path+"."+k, s.vals[k], g.vals[k])
		}
	default:
		if got != nil {
			require.IsType(t, sample, got, "%s", path)
		}
	}
}

// orderedObject keeps a JSON object's key order.
type orderedObject struct {
	keys []string
	vals map[string]any
}

func decodeOrdered(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	v, err := readValue(dec)
	require.NoError(t, err, string(b))
	return v
}

func readValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch d := tok.(type) {
	case json.Delim:
		switch d {
		case '{':
			o := orderedObject{vals: map[string]any{}}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := readValue(dec)
				if err != nil {
					return nil, err
				}
				o.keys = append(o.keys, k.(string))
				o.vals[k.(string)] = v
			}
			_, err := dec.Token()
			return o, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := readValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			return a, err
		}
	}
	return tok, nil
}

func TestCaptureJSONMatchesSamples(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	// A customer shaped like the sample: franchisees, default preferences; and a transaction
	// shaped like the POSTRNCRE sample.
	exec(t, db, `BEGIN;
		INSERT INTO customer (customer_id, first_name, signup_date, retail_store_id) VALUES (2142, 'Vzxcv', '2020-12-02', '99999');
		INSERT INTO franchisee VALUES (2, '<FRANCHISEE NAME> '), (8, '<FRANCHISEE NAME>'), (6, '<FRANCHISEE NAME>'), (1, '<FRANCHISEE NAME>');
		INSERT INTO customer_franchisee (customer_id, franchisee_id) VALUES (2142, 2), (2142, 8), (2142, 6), (2142, 1);
		COMMIT`)
	var got []byte
	require.NoError(t, db.QueryRow(context.Background(), `SELECT json_object::text FROM data_sync_cust_pending_queue WHERE unique_id = '2142'`).Scan(&got))
	sample, err := os.ReadFile(filepath.Join("..", "testdata", "customer-update.payload.json"))
	require.NoError(t, err)
	shape(t, "customer", decodeOrdered(t, sample), decodeOrdered(t, got))
	// The bare sample customer renders exactly as the sample (dates aside, which we set).
	var gotV, wantV any
	require.NoError(t, json.Unmarshal(got, &gotV))
	require.NoError(t, json.Unmarshal(sample, &wantV))
	require.Equal(t, wantV, gotV)

	// Child rows present: arrays hold objects, each key typed.
	exec(t, db, `BEGIN;
		INSERT INTO customer (customer_id, first_name) VALUES (2147, 'T');
		INSERT INTO retail_transaction (retail_transaction_id, customer_id, begin_datetime, business_date, original_business_date,
			end_datetime, operator_id, retail_location_id, subtotal, tax_total, total, cost_of_goods_sold_total,
			transaction_sequence, transaction_status_code, workstation_id)
		VALUES ('99901000022017110710000100', 2147, '2017-11-07T12:54:22+0530', '2017-11-07', '2017-11-07',
			'2017-11-07T12:54:49+0530', '101', '99901', 1325.00, 79.50, 77.50, 77.00, 10000100, 'DELIVERED', 2);
		INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_tlog_sequence, line_item_type_code, begin_date_timestamp, end_date_timestamp, cust_id)
		VALUES ('99901000022017110710000100', 1, 1, 'Sale', '2017-11-07T12:54:44+0530', '2017-11-07T12:54:44+0530', 2147),
		       ('99901000022017110710000100', 2, 2, 'Tender', '2017-11-07T12:54:47+0530', '2017-11-07T12:54:48+0530', 2147),
		       ('99901000022017110710000100', 3, 3, 'Tax', '2017-11-07T12:54:44+0530', '2017-11-07T12:54:44+0530', 2147);
		INSERT INTO line_item_modifier (retail_transaction_id, line_item_sequence, line_item_modifier_sequence, cust_id)
		VALUES ('99901000022017110710000100', 1, 0, 2147);
		COMMIT`)
	require.NoError(t, db.QueryRow(context.Background(), `SELECT json_object::text FROM data_sync_trn_pending_queue`).Scan(&got))
	sample, err = os.ReadFile(filepath.Join("..", "testdata", "transaction-create.payload.json"))
	require.NoError(t, err)
	shape(t, "transaction", decodeOrdered(t, sample), decodeOrdered(t, got))
	require.Contains(t, string(got), `"beginDatetime" : "2017-11-07T07:24:22+0000"`)
	require.Contains(t, string(got), `"subtotal" : 1325.00`)
	require.Len(t, decodeOrdered(t, got).(orderedObject).vals["lineItems"], 3)
}

// In move mode a statement touching many customers writes one set row, not one pending row per
// customer; the relay's expansion turns it into key-only pending rows for the customers that
// still exist and have no key-only row waiting already.
func TestCaptureMoveModeBulkIsOneSet(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "move")
	ctx := context.Background()
	exec(t, db, `INSERT INTO customer (customer_id) SELECT g FROM generate_series(1, 200) g`)
	exec(t, db, `INSERT INTO segment (segment_id, segment_name) VALUES (1, 'Bulk'), (2, 'Few')`)
	pending(t, db)

	exec(t, db, `UPDATE customer SET first_name = 'Three' WHERE customer_id = 3`) // a key-only row waits
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, 1 FROM customer`)
	n, ids := pendingSets(t, db)
	require.Equal(t, []int{1, 200}, []int{n, ids}, "one set row for the bulk statement")
	var statusRows int
	require.NoError(t, db.QueryRow(ctx, `SELECT rows FROM data_sync_status WHERE queue = 'cust' AND stage = 'pending'`).Scan(&statusRows))
	require.Equal(t, 201, statusRows, "status counts each customer of a set")

	exec(t, db, `DELETE FROM customer WHERE customer_id = 7`) // gone before the relay expands the set
	var expanded int
	require.NoError(t, db.QueryRow(ctx, `SELECT data_sync_expand_customer_sets()`).Scan(&expanded))
	require.Equal(t, 198, expanded, "200 less customer 3 (already waiting) and customer 7 (deleted)")
	n, _ = pendingSets(t, db)
	require.Zero(t, n)
	got := pending(t, db)
	require.Len(t, got, 200)
	require.Equal(t, cust("UPDATE", "3", false), got[0])
	require.Equal(t, cust("DELETE", "7", false), got[1])
	for i, q := range got[2:] {
		require.Equal(t, "UPDATE", q.Action, i)
		require.False(t, q.HasJSON, i)
		require.NotContains(t, []string{"3", "7"}, q.UniqueID)
	}
	var captured bool
	require.NoError(t, db.QueryRow(ctx, `SELECT data_sync_expand_customer_sets()`).Scan(&expanded))
	require.Zero(t, expanded, "nothing left to expand")

	// A few customers are queued at once, no set; a CREATE is never a set.
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 2), (2, 2)`)
	exec(t, db, `INSERT INTO customer (customer_id) SELECT g FROM generate_series(1001, 1100) g`)
	n, _ = pendingSets(t, db)
	require.Zero(t, n)
	require.NoError(t, db.QueryRow(ctx, `SELECT bool_and(captured) FROM data_sync_cust_pending_queue`).Scan(&captured))
	require.True(t, captured, "rows of the move-mode statement path are marked as the triggers' own")
	got = pending(t, db)
	require.Len(t, got, 102)
	require.Equal(t, []queued{cust("UPDATE", "1", false), cust("UPDATE", "2", false), cust("CREATE", "1001", false)}, got[:3])

	// Renaming a segment with more than 64 members is one set too.
	exec(t, db, `UPDATE segment SET segment_name = 'Bulk 2' WHERE segment_id = 1`)
	n, ids = pendingSets(t, db)
	require.Equal(t, []int{1, 199}, []int{n, ids})
	requirePending(t, db)

	// In capture mode the same statement builds every JSON at commit, no set...
	exec(t, db, `UPDATE data_sync_config SET value = 'capture' WHERE name = 'DataSyncSnapshotMode'`)
	exec(t, db, `DELETE FROM data_sync_cust_pending_set`)
	exec(t, db, `DELETE FROM customer_segment WHERE segment_id = 1`)
	n, _ = pendingSets(t, db)
	require.Zero(t, n)
	got = pending(t, db)
	require.Len(t, got, 199)
	require.True(t, got[0].HasJSON)
	// ...unless DataSyncBulkSnapshotMode is move: then only the bulk statement is a set, and
	// small ones still build their JSON at commit.
	exec(t, db, `UPDATE data_sync_config SET value = 'move' WHERE name = 'DataSyncBulkSnapshotMode'`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, 1 FROM customer WHERE customer_id <= 100`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (150, 1)`)
	n, ids = pendingSets(t, db)
	require.Equal(t, []int{1, 99}, []int{n, ids}, "customers 1..100 less the deleted 7")
	requirePending(t, db, cust("UPDATE", "150", true))
}

// A bulk statement captured in capture mode waits for commit in the hook; if the transaction
// switches Data Sync to move mode before committing, the hook queues the move way.
func TestCaptureHookFiredAfterSwitchToMoveMode(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	exec(t, db, `BEGIN; INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 10), (2, 10);
		UPDATE data_sync_config SET value = 'move' WHERE name = 'DataSyncSnapshotMode'; COMMIT`)
	requirePending(t, db, cust("UPDATE", "1", false), cust("UPDATE", "2", false))

	// Many customers become one set, as every move-mode bulk UPDATE does.
	exec(t, db, `UPDATE data_sync_config SET value = 'capture' WHERE name = 'DataSyncSnapshotMode'`)
	exec(t, db, `INSERT INTO customer (customer_id) SELECT g FROM generate_series(100, 199) g`)
	pending(t, db)
	exec(t, db, `BEGIN; INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 10 FROM generate_series(100, 199) g;
		UPDATE data_sync_config SET value = 'move' WHERE name = 'DataSyncSnapshotMode'; COMMIT`)
	requirePending(t, db)
	n, ids := pendingSets(t, db)
	require.Equal(t, []int{1, 100}, []int{n, ids})
}

// pendingSets returns how many data_sync_cust_pending_set rows wait and how many customers
// they hold.
func pendingSets(t *testing.T, db *pgxpool.Pool) (n, ids int) {
	t.Helper()
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(cardinality(customer_ids)), 0)
		FROM data_sync_cust_pending_set`).Scan(&n, &ids))
	return n, ids
}
