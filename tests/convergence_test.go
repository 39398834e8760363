package tests

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Capture mode: two transactions change one customer through different tables, and the one
// whose capture fired first (SET CONSTRAINTS ALL IMMEDIATE, standing for a slow commit) commits
// last. The last pending row of the customer must still carry the state the database ends with.
func TestCaptureConvergesWhenBuildsInterleave(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// first fires its capture early and stays open; second commits meanwhile.
		first, second []string
	}{
		{"card first, name second",
			[]string{`UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C1'`, `SET CONSTRAINTS ALL IMMEDIATE`},
			[]string{`UPDATE customer SET first_name = 'Renamed' WHERE customer_id = 1`}},
		{"name first, card second",
			[]string{`UPDATE customer SET first_name = 'Renamed' WHERE customer_id = 1`, `SET CONSTRAINTS ALL IMMEDIATE`},
			[]string{`UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C1'`}},
		{"card first inside a released savepoint",
			[]string{`SAVEPOINT a`, `INSERT INTO card (card_number, customer_id) VALUES ('C2', 1)`, `SET CONSTRAINTS ALL IMMEDIATE`, `RELEASE a`},
			[]string{`UPDATE customer SET last_name = 'Other' WHERE customer_id = 1`}},
		// The early build and its lock are undone with the savepoint; the card change, made
		// before it, is captured again at T1's commit.
		{"card first, early build in a savepoint rolled back",
			[]string{`UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C1'`, `SAVEPOINT a`, `SET CONSTRAINTS ALL IMMEDIATE`, `ROLLBACK TO a`},
			[]string{`UPDATE customer SET first_name = 'Renamed' WHERE customer_id = 1`}},
		{"two card changes",
			[]string{`UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C1'`, `SET CONSTRAINTS ALL IMMEDIATE`},
			[]string{`INSERT INTO card (card_number, customer_id) VALUES ('C3', 1)`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := captureDB(t, "capture")
			exec(t, db, `INSERT INTO customer (customer_id, first_name) VALUES (1, 'Ann')`)
			exec(t, db, `INSERT INTO card (card_number, customer_id, status) VALUES ('C1', 1, 'ACTIVE')`)

			url := db.Config().ConnConfig.ConnString()
			t1, err := pgx.Connect(ctx, url)
			require.NoError(t, err)
			defer t1.Close(context.Background())
			t2, err := pgx.Connect(ctx, url)
			require.NoError(t, err)
			defer t2.Close(context.Background())
			var pid2 int
			require.NoError(t, t2.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid2))

			_, err = t1.Exec(ctx, `BEGIN`)
			require.NoError(t, err)
			for _, s := range c.first {
				_, err = t1.Exec(ctx, s)
				require.NoError(t, err, s)
			}
			// T1 has built its row and stays open. T2 changes the customer and commits; it
			// either completes or waits for T1.
			done := make(chan error, 1)
			go func() {
				_, err := t2.Exec(ctx, `BEGIN`)
				for _, s := range c.second {
					if err == nil {
						_, err = t2.Exec(ctx, s)
					}
				}
				if err == nil {
					_, err = t2.Exec(ctx, `COMMIT`)
				}
				done <- err
			}()
			var finished bool
			var t2err error
			require.Eventually(t, func() bool {
				select {
				case t2err = <-done:
					finished = true
					return true
				default:
				}
				var waiting bool
				err := db.QueryRow(ctx, `SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
					FROM pg_stat_activity WHERE pid = $1`, pid2).Scan(&waiting)
				return err == nil && waiting
			}, time.Minute, 5*time.Millisecond, "T2 neither finished nor waited for a lock")
			require.NoError(t, t2err)
			t.Logf("T2 %s before T1 committed", map[bool]string{true: "committed", false: "waited"}[finished])
			_, err = t1.Exec(ctx, `COMMIT`)
			require.NoError(t, err)
			if !finished {
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-time.After(time.Minute):
					t.Fatal("T2 did not finish after T1 committed")
				}
			}

			var last, now string
			require.NoError(t, db.QueryRow(ctx, `SELECT json_object::jsonb::text FROM data_sync_cust_pending_queue
				WHERE unique_id = '1' ORDER BY id DESC LIMIT 1`).Scan(&last))
			require.NoError(t, db.QueryRow(ctx, `SELECT data_sync_customer_json(1)::jsonb::text`).Scan(&now))
			require.JSONEq(t, now, last, "the last queued message for the customer must carry its final state")
		})
	}
}

// One transaction fires its capture early (SET CONSTRAINTS ALL IMMEDIATE, or a slow commit's
// other deferred triggers), then changes the same customer again, through the same or another
// table. Its one pending row of the customer must carry what it commits, not the early
// snapshot.
func TestCaptureOfOneTransactionChangedAfterAnEarlyCapture(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"name, early, name": {`UPDATE customer SET first_name = 'Early' WHERE customer_id = 1`, `SET CONSTRAINTS ALL IMMEDIATE`,
			`SET CONSTRAINTS ALL DEFERRED`, `UPDATE customer SET first_name = 'Late' WHERE customer_id = 1`},
		"card, early, name (immediate throughout)": {`SET CONSTRAINTS ALL IMMEDIATE`, `UPDATE card SET status = 'BLOCKED' WHERE card_number = 'C1'`,
			`UPDATE customer SET first_name = 'Late' WHERE customer_id = 1`},
		"name, early, segment": {`UPDATE customer SET first_name = 'Early' WHERE customer_id = 1`, `SET CONSTRAINTS ALL IMMEDIATE`,
			`SET CONSTRAINTS ALL DEFERRED`, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 7)`},
		"name, early, card in a released savepoint": {`UPDATE customer SET first_name = 'Early' WHERE customer_id = 1`, `SET CONSTRAINTS ALL IMMEDIATE`,
			`SET CONSTRAINTS ALL DEFERRED`, `SAVEPOINT a`, `INSERT INTO card (card_number, customer_id) VALUES ('C2', 1)`, `RELEASE a`},
	}
	for name, stmts := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := captureDB(t, "capture")
			exec(t, db, `INSERT INTO customer (customer_id, first_name) VALUES (1, 'Ann')`)
			exec(t, db, `INSERT INTO card (card_number, customer_id, status) VALUES ('C1', 1, 'ACTIVE')`)
			exec(t, db, `INSERT INTO segment (segment_id, segment_name) VALUES (7, 'Gold')`)
			conn, err := db.Acquire(ctx)
			require.NoError(t, err)
			defer conn.Release()
			before := 0
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '1'`).Scan(&before))
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			for _, s := range stmts {
				_, err := tx.Exec(ctx, s)
				require.NoError(t, err, s)
			}
			require.NoError(t, tx.Commit(ctx))
			var rows int
			var last, now string
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '1'`).Scan(&rows))
			require.Equal(t, before+1, rows, "one pending row per customer per transaction")
			require.NoError(t, conn.QueryRow(ctx, `SELECT json_object::jsonb::text FROM data_sync_cust_pending_queue
				WHERE unique_id = '1' ORDER BY id DESC LIMIT 1`).Scan(&last))
			require.NoError(t, conn.QueryRow(ctx, `SELECT data_sync_customer_json(1)::jsonb::text`).Scan(&now))
			require.JSONEq(t, now, last, "the transaction's row carries its early snapshot, not what it committed")
		})
	}
}
