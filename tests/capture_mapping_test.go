package tests

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/mapping"
)

// Every JSON the triggers build, bare or with every child table filled, decodes strictly with
// the mapping types.
func TestCaptureJSONDecodesStrictly(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	exec(t, db, `BEGIN;
		INSERT INTO customer (customer_id) VALUES (1);
		INSERT INTO customer (customer_id, first_name, middle_name, last_name, suffix, retail_store_id, org_name, employee_id,
			prospect, birth_date, anniversary, annual_income_amount, net_worth, affiliation_store_id, last_update_info)
		VALUES (2, 'Ann', 'B', 'Cee', 'Jr', '99999', 'Org', 'E1', true, '1980-01-02', '2005-06-07', 50000.50, 1000000, '12', 'upd');
		INSERT INTO customer_address (customer_id, address_line1, city, postal_code, country_code, primary_flag) VALUES (2, '1 Main', 'Paris', '75001', 'FR', true);
		INSERT INTO customer_phone (customer_id, phone_number) VALUES (2, '555');
		INSERT INTO customer_email (customer_id, email_address) VALUES (2, 'a@"x"');
		INSERT INTO customer_note (customer_id, note_text, create_user_id) VALUES (2, E'line1\nline2', 'u1');
		INSERT INTO customer_alternate_key VALUES (2, 'LOYALTY', 'L1');
		INSERT INTO customer_custom_attribute VALUES (2, 'shoe', '42'), (2, 'empty', NULL);
		INSERT INTO franchisee VALUES (3, 'F3');
		INSERT INTO customer_franchisee (customer_id, franchisee_id) VALUES (2, 3);
		INSERT INTO customer_associate_assignment (customer_id, associate_id, primary_flag) VALUES (2, 'A1', true);
		INSERT INTO customer_contact_preference VALUES (2, 'EMAIL', false);
		INSERT INTO promotion_deal VALUES (77, 'deal');
		INSERT INTO customer_promotion_deal VALUES (2, 77);
		INSERT INTO segment (segment_id, segment_name) VALUES (5, 'Gold');
		INSERT INTO customer_segment (customer_id, segment_id) VALUES (2, 5);
		INSERT INTO card (card_number, customer_id, status, expiration_date, serial_number) VALUES ('C1', 2, 'ACTIVE', '2030-01-01', 'S1');
		COMMIT`)
	exec(t, db, `BEGIN;
		INSERT INTO retail_transaction (retail_transaction_id, customer_id, begin_datetime, end_datetime, operator_id,
			retail_location_id, transaction_sequence, workstation_id, transaction_status_code, original_business_date,
			subtotal, total, tax_total)
		VALUES ('T1', 2, now(), now(), '101', '99901', 1, 2, 'DELIVERED', current_date, 20, 21.5, 1.5);
		INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_type_code, quantity, extended_amount,
			begin_date_timestamp, end_date_timestamp, line_item_tlog_sequence)
		VALUES ('T1', 1, 'Sale', 2, 20, now(), now(), 1), ('T1', 2, 'Return', 1, 5, now(), now(), 2);
		INSERT INTO line_item_modifier (retail_transaction_id, line_item_sequence, line_item_modifier_sequence) VALUES ('T1', 1, 0);
		INSERT INTO transaction_property VALUES ('T1', 'channel', 'web');
		COMMIT`)
	rows, err := db.Query(context.Background(), `
		SELECT obj_name, unique_id, json_object::text FROM data_sync_cust_pending_queue WHERE json_object IS NOT NULL
		UNION ALL SELECT obj_name, unique_id, json_object::text FROM data_sync_trn_pending_queue`)
	require.NoError(t, err)
	type row struct{ Obj, ID, JSON string }
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	require.NoError(t, err)
	require.Len(t, all, 4) // customers 1, 2 (CREATE), transaction T1, customer 2 (UPDATE)
	for _, r := range all {
		if r.Obj == "Customer" {
			c, err := mapping.DecodeCustomer([]byte(r.JSON))
			require.NoError(t, err, r.JSON)
			require.Equal(t, r.ID, c.CustomerID)
		} else {
			tr, err := mapping.DecodeTransaction([]byte(r.JSON))
			require.NoError(t, err, r.JSON)
			require.Len(t, tr.LineItems, 2)
		}
	}
	// The activity summaries count the posted transaction.
	var j string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT json_object->'entityInformation'->'individual'->>'lifetimeActivitySummary'
		FROM data_sync_cust_pending_queue WHERE unique_id = '2' AND action = 'UPDATE'`).Scan(&j))
	require.JSONEq(t, `{"totalReturnsAmount":"5","totalSalesAmount":"20","totalTransactionCount":"1","totalItemsSoldCount":"2","totalItemsReturnedCount":"1"}`, j)
}
