package tests

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// Rows the capture triggers write are marked captured (the relay trusts their schema);
// rows inserted by hand are not (the relay checks them strictly), even by the table owner.
func TestCapturedMarksOnlyTriggerRows(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Exec(`INSERT INTO customer (customer_id) VALUES (5)`)
	s.Exec(`BEGIN; INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T5', 5); COMMIT`)
	s.Exec(`INSERT INTO segment (segment_id) VALUES (900); INSERT INTO customer_segment (customer_id, segment_id) VALUES (5, 900)`)
	require.Equal(t, 3, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5' AND captured`))
	s.Exec(`DELETE FROM customer WHERE customer_id = 5`)
	s.Exec(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES ('6', 'UPDATE', '{}')`)
	s.Exec(`INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object) VALUES ('T6', 'CREATE', '{}')`)
	require.Equal(t, 0, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5' AND NOT captured`))
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_trn_pending_queue WHERE unique_id = 'T5' AND captured`))
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '6' AND NOT captured`))
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_trn_pending_queue WHERE unique_id = 'T6' AND NOT captured`))
	require.Positive(t, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5'`))
}

// Disabling Data Sync disables the capture triggers themselves, so capture costs nothing while
// off; the delete purge stays. A busy table makes the change fail after lock_timeout instead of
// queueing the application behind it.
func TestDisablingDataSyncDisablesTheCaptureTriggers(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	states := func() map[string]int {
		rows, err := s.DB.Query(context.Background(), `SELECT tgenabled::text, count(*) FROM pg_trigger
			WHERE tgname LIKE 'data_sync_%' AND NOT tgisinternal AND tgname <> 'data_sync_customer_delete'
			  AND tgrelid::regclass::text NOT LIKE 'data\_sync\_%' GROUP BY 1`) // the CE tables' capture triggers, not Data Sync's own tables'
		require.NoError(t, err)
		defer rows.Close()
		m := map[string]int{}
		for rows.Next() {
			var st string
			var n int
			require.NoError(t, rows.Scan(&st, &n))
			m[st] = n
		}
		return m
	}
	on := states()
	require.Zero(t, on["D"])
	require.Positive(t, on["O"])
	s.Set("DataSyncEnabled", "false")
	off := states()
	require.Zero(t, off["O"])
	require.Equal(t, on["O"], off["D"])
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM pg_trigger WHERE tgname = 'data_sync_customer_delete' AND tgenabled = 'O'`))
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue`))

	// An application transaction holding the table: enabling fails clearly, nothing changes.
	tx, err := s.DB.Begin(context.Background())
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(context.Background(), `UPDATE customer SET first_name = 'busy' WHERE customer_id = 1`)
	require.NoError(t, err)
	_, err = s.DB.Exec(context.Background(), `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	require.ErrorContains(t, err, "lock timeout")
	require.NoError(t, tx.Rollback(context.Background()))
	s.Set("DataSyncEnabled", "true")
	require.Equal(t, on, states())
}
