package tests

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// Rows the capture triggers write are marked captured (the relay trusts their schema);
// rows inserted by hand are not (the relay checks them strictly), even by the table owner.
func TestCapturedMarksOnlyTriggerRows(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.exec(`INSERT INTO customer (customer_id) VALUES (5)`)
	s.exec(`BEGIN; INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T5', 5); COMMIT`)
	s.exec(`INSERT INTO segment (segment_id) VALUES (900); INSERT INTO customer_segment (customer_id, segment_id) VALUES (5, 900)`)
	require.Equal(t, 3, s.count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5' AND captured`))
	s.exec(`DELETE FROM customer WHERE customer_id = 5`)
	s.exec(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES ('6', 'UPDATE', '{}')`)
	s.exec(`INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object) VALUES ('T6', 'CREATE', '{}')`)
	require.Equal(t, 0, s.count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5' AND NOT captured`))
	require.Equal(t, 1, s.count(`SELECT count(*) FROM data_sync_trn_pending_queue WHERE unique_id = 'T5' AND captured`))
	require.Equal(t, 1, s.count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '6' AND NOT captured`))
	require.Equal(t, 1, s.count(`SELECT count(*) FROM data_sync_trn_pending_queue WHERE unique_id = 'T6' AND NOT captured`))
	require.Positive(t, s.count(`SELECT count(*) FROM data_sync_cust_pending_queue WHERE unique_id = '5'`))
}
