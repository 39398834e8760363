package tests

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCaptureBuildersAgree checks that the set-based builder (bulk statements) and the
// one-customer builder (single-row changes, the relay's move) produce the same JSON for
// customers with every kind of child row, none at all, and activity across years.
func TestCaptureBuildersAgree(t *testing.T) {
	t.Parallel()
	db := captureDB(t, "capture")
	seed(t, db)
	exec(t, db, `INSERT INTO customer (customer_id, first_name, birth_date, net_worth) VALUES (3, 'Cy', '1980-02-29', 12.50), (4, NULL, NULL, NULL)`)
	exec(t, db, `INSERT INTO customer_address (customer_id, address_line1) VALUES (1, 'a'), (1, 'b'), (3, 'c')`)
	exec(t, db, `INSERT INTO customer_phone (customer_id, phone_number) VALUES (1, '1'), (1, '2')`)
	exec(t, db, `INSERT INTO customer_email (customer_id, email_address) VALUES (1, 'x@example.com')`)
	exec(t, db, `INSERT INTO customer_note (customer_id, note_text) VALUES (1, 'n1'), (1, 'n"2')`)
	exec(t, db, `INSERT INTO customer_alternate_key VALUES (1, 'B', 'v1'), (1, 'A', 'v2')`)
	exec(t, db, `INSERT INTO customer_custom_attribute VALUES (1, 'z', NULL), (1, 'y', 'w')`)
	exec(t, db, `INSERT INTO customer_franchisee (customer_id, franchisee_id) VALUES (1, 8), (1, 2)`)
	exec(t, db, `INSERT INTO customer_associate_assignment (customer_id, associate_id) VALUES (1, 'A2'), (1, 'A1')`)
	exec(t, db, `INSERT INTO customer_contact_preference VALUES (1, 'FAX', false), (3, 'MAIL', true)`)
	exec(t, db, `INSERT INTO promotion_deal VALUES (5, 'd5'), (3, 'd3')`)
	exec(t, db, `INSERT INTO customer_promotion_deal VALUES (1, 5), (1, 3)`)
	exec(t, db, `INSERT INTO customer_segment (customer_id, segment_id) VALUES (1, 10), (3, 10)`)
	exec(t, db, `INSERT INTO retail_transaction (retail_transaction_id, customer_id, business_date, void_flag) VALUES
		('T1', 1, current_date, false), ('T2', 1, current_date - 400, false), ('T3', 1, current_date, true), ('T4', 3, current_date, false)`)
	exec(t, db, `INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_type_code, quantity, extended_amount, void_flag) VALUES
		('T1', 1, 'Sale', 2, 20, false), ('T1', 2, 'Return', 1, 5, false), ('T1', 3, 'Sale', 9, 90, true), ('T1', 4, 'Tax', 1, 1, false),
		('T2', 1, 'Sale', 1, 3.25, false), ('T3', 1, 'Sale', 7, 70, false)`)

	var rows, same int
	require.NoError(t, db.QueryRow(context.Background(), `
		SELECT count(*), count(*) FILTER (WHERE s.json_object::text = data_sync_customer_json(s.customer_id)::text)
		FROM data_sync_customers_json(ARRAY[1, 2, 3, 4, 99]::bigint[]) s`).Scan(&rows, &same))
	require.Equal(t, 4, rows, "one row per existing customer")
	require.Equal(t, rows, same, "set-based and one-customer JSON differ")

	var missing *string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT data_sync_customer_json(99)::text`).Scan(&missing))
	require.Nil(t, missing)
}
