package tests

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// relayLogin creates a login role in cdc_relay (with REPLICATION, which the doorbell needs and
// which cannot be inherited) and returns the database URL as that role.
func relayLogin(t *testing.T, s *stack) string {
	t.Helper()
	role := "relay_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	if len(role) > 60 {
		role = role[:60]
	}
	s.Exec(`CREATE ROLE ` + pgx.Identifier{role}.Sanitize() + ` LOGIN REPLICATION IN ROLE cdc_relay`)
	t.Cleanup(func() {
		s.DB.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize())
	})
	u, err := url.Parse(s.URL)
	require.NoError(t, err)
	u.User = url.User(role)
	return u.String()
}

func TestRelayRunsAsTheLeastPrivilegedRole(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Set("DataSyncSnapshotMode", "move") // the relay builds the JSON: through the definer functions only
	login := relayLogin(t, s)
	cfg := s.Config()
	cfg.DatabaseURL = login
	s.Run(cfg)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (31, 'Grace')`)
	s.Exec(`INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T-31', 31)`)
	got := s.WaitReceived(3)
	byAction := map[string]mapping.Message{}
	for _, r := range got {
		byAction[r.Message.Action] = r.Message
	}
	c, err := mapping.DecodeCustomer([]byte(byAction["CUSTOMERCRE"].Payload))
	require.NoError(t, err, "snapshot built at move time by the relay role")
	require.Equal(t, "31", c.CustomerID)
	_, err = mapping.DecodeTransaction([]byte(byAction["POSTRNCRE"].Payload))
	require.NoError(t, err)

	// A bulk statement is one set row; the relay role expands it through the definer function,
	// woken by the doorbell (the sweep is an hour away).
	s.Exec(`INSERT INTO customer (customer_id) SELECT g FROM generate_series(100, 199) g`)
	s.WaitReceived(3 + 100)
	s.Exec(`INSERT INTO segment (segment_id, segment_name) VALUES (5, 'Spring')`)
	s.Exec(`INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 5 FROM generate_series(100, 199) g`)
	got = s.WaitReceived(3 + 200)
	inSegment := map[string]bool{}
	for _, r := range got[103:] {
		require.Equal(t, "CUSTOMERMOD", r.Message.Action)
		c, err := mapping.DecodeCustomer([]byte(r.Message.Payload))
		require.NoError(t, err)
		require.Len(t, c.CustomerSegments.Segment, 1, c.CustomerID)
		require.Contains(t, string(c.CustomerSegments.Segment[0]), `"Spring"`)
		inSegment[c.CustomerID] = true
	}
	require.Len(t, inSegment, 100)

	// What the relay role cannot do.
	conn, err := pgx.Connect(context.Background(), login)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var super bool
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	require.False(t, super)
	for _, stmt := range []string{
		`SELECT * FROM customer`,
		`SELECT * FROM retail_transaction`,
		`UPDATE customer SET first_name = 'x'`,
		`UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`,
		`DROP TABLE data_sync_cust_pending_queue`,
		`SELECT merge_customers(ARRAY[31, 32]::bigint[])`,
		`SELECT data_sync_queue_customer(31, 'UPDATE', 'capture')`,
		`SELECT data_sync_queue_customer_set('move', 'UPDATE', ARRAY[31]::bigint[])`,
		`CREATE TABLE stolen (id int)`,
	} {
		_, err := conn.Exec(context.Background(), stmt)
		require.Error(t, err, stmt)
		require.Regexp(t, `permission denied|must be owner`, err.Error(), stmt)
	}
	// What it can: read its settings and queues.
	_, err = conn.Exec(context.Background(), `SELECT * FROM data_sync_status`)
	require.NoError(t, err)
}
