package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/e2etest"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

// stack is a database with Data Sync enabled, the reference receiver (real HTTPS, real OAuth2
// token endpoint) and saved credentials: everything `cdc-relay run` needs.
type stack = e2etest.Stack

func newStack(t *testing.T, rcfg receiver.Config) *stack {
	t.Helper()
	return newStackOn(t, pgtest.NewDB(t), rcfg)
}

// newStackOn is newStack on a database of the test's own (an installed cdc-relay).
func newStackOn(t *testing.T, url string, rcfg receiver.Config) *stack {
	t.Helper()
	return e2etest.New(t, url, rcfg, "s3cr3t-"+strings.ReplaceAll(t.Name(), "/", "-"))
}

func TestEndToEndEveryMessageTypeWithoutTheSweep(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Run(s.Config())
	// CE activity through the triggers, after the relay is up: only the doorbell can wake it.
	// Each step waits for its delivery, since a delete purges the customer's undelivered rows.
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (4242, 'Ada')`)
	s.WaitReceived(1)
	s.Exec(`UPDATE customer SET last_name = 'Lovelace' WHERE customer_id = 4242`)
	s.WaitReceived(2)
	s.Exec(`BEGIN; INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T-4242', 4242);
		INSERT INTO line_item (retail_transaction_id, line_item_sequence, cust_id) VALUES ('T-4242', 1, 4242); COMMIT`)
	s.WaitReceived(4) // the transaction and its customer's update
	s.Exec(`DELETE FROM customer WHERE customer_id = 4242`)
	got := s.WaitReceived(5)
	seen := map[string]mapping.Message{}
	var custOrder []string
	for _, r := range got {
		seen[r.Message.Action] = r.Message
		if r.Message.Type == "CUSTOMER" {
			custOrder = append(custOrder, r.Message.Action)
		}
	}
	for _, a := range []string{"CUSTOMERCRE", "CUSTOMERMOD", "POSTRNCRE", "CUSTOMERDEL"} {
		require.Contains(t, seen, a)
	}
	require.Equal(t, "CUSTOMERCRE", custOrder[0])
	require.Equal(t, "CUSTOMERDEL", custOrder[len(custOrder)-1])
	require.Equal(t, "4242", seen["CUSTOMERDEL"].Payload)
	c, err := mapping.DecodeCustomer([]byte(seen["CUSTOMERMOD"].Payload))
	require.NoError(t, err)
	require.Equal(t, "4242", c.CustomerID)
	tr, err := mapping.DecodeTransaction([]byte(seen["POSTRNCRE"].Payload))
	require.NoError(t, err)
	require.Equal(t, "T-4242", tr.RetailTransactionID)
	require.Zero(t, s.Recv.Stats().Duplicates)
}

func TestEndToEndFailingReceiverThenRecovery(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Recv.SetFaults(receiver.Faults{Down: true})
	s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE attempts >= 2 AND last_status = 503 AND last_error = 'HTTP 503'`) == 1
	}, 30*time.Second, 5*time.Millisecond)
	s.Recv.SetFaults(receiver.Faults{})
	got := s.WaitReceived(1)
	require.Equal(t, "CUSTOMERCRE", got[0].Message.Action)
	require.Eventually(t, func() bool { return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`) == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestEndToEnd401RefreshesTheTokenOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	s.WaitReceived(1)
	require.Equal(t, 1, s.Recv.Stats().TokensIssued)
	s.Recv.RevokeTokens()
	s.Exec(`INSERT INTO customer (customer_id) VALUES (2)`)
	s.WaitReceived(2)
	require.Equal(t, 2, s.Recv.Stats().TokensIssued, "a 401 fetches exactly one new token")
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE attempts > 0`), "a 401 is not a failure")
}

func TestEndToEndExpiredTokenIsRefreshed(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{TokenTTL: time.Second})
	s.Run(s.Config())
	// Keep delivering changes until the 1 s token has been replaced by a fetched one.
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; s.Recv.Stats().TokensIssued < 2; i++ {
		require.True(t, time.Now().Before(deadline), "token never refreshed: %+v", s.Recv.Stats())
		s.Exec(`INSERT INTO customer (customer_id) VALUES ($1)`, i)
		s.WaitReceived(i)
	}
	require.Zero(t, s.Recv.Stats().Rejected["auth"], "the token is renewed before it expires, not after a 401")
}

func TestEndToEndLegacyTLSReceiverIsRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{MinTLSVersion: tls.VersionTLS10, MaxTLSVersion: tls.VersionTLS11})
	s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE attempts >= 1 AND last_error ILIKE '%TLS%'`) == 1
	}, 30*time.Second, 5*time.Millisecond)
	require.Empty(t, s.Received())
}

func TestEndToEndPlainHTTPIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Set("DataSyncApiUrl", "http://127.0.0.1:9/datasync")
	err := daemon.Run(context.Background(), s.Config())
	require.ErrorIs(t, err, relay.ErrSettings)
	require.ErrorContains(t, err, "--allow-insecure-http")
}

func TestEndToEndConfigChangesAreLive(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	s.WaitReceived(1)
	require.Eventually(t, func() bool { return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`) == 0 }, 10*time.Second, 2*time.Millisecond)
	// Disable: changes stay queued.
	s.Set("DataSyncEnabled", "No")
	require.Eventually(t, func() bool { return strings.Contains(s.Logs.String(), "Data Sync is disabled") }, 10*time.Second, 2*time.Millisecond)
	s.Exec(`INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ('1', 'DELETE')`)
	// Point at a second receiver, then enable: the change goes there.
	second, err := receiver.New(receiver.Config{ClientID: e2etest.ClientID, ClientSecret: s.Secret})
	require.NoError(t, err)
	require.NoError(t, second.Start())
	defer second.Close()
	ca2 := filepath.Join(t.TempDir(), "ca2.pem")
	require.NoError(t, second.WriteCAFile(ca2))
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue`)+s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`))
	// The second receiver's certificate is not trusted by this relay: delivery there fails with a TLS error,
	// which shows the new URL was taken without a restart.
	s.Set("DataSyncApiUrl", second.APIURL())
	s.Set("DataSyncEnabled", "yes")
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error ILIKE '%TLS%'`) == 1
	}, 30*time.Second, 5*time.Millisecond, "%v", s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`))
	require.Len(t, s.Received(), 1)
	// Back to the first receiver: delivered.
	s.Set("DataSyncApiUrl", s.Recv.APIURL())
	require.Eventually(t, func() bool { return len(s.Received()) == 2 }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, "CUSTOMERDEL", s.Received()[1].Message.Action)
}

func TestEndToEndStopLeavesNoSlotAndNoRetainedWAL(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	stop := s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	s.WaitReceived(1)
	require.Eventually(t, func() bool {
		slots, err := cdc.SlotLag(context.Background(), s.DB, cdc.DefaultSlotPrefix)
		require.NoError(t, err)
		for _, sl := range slots {
			if sl.Database == dbName(s.URL) {
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond)
	stop()
	// Heavy writing elsewhere while the relay is stopped.
	s.Exec(`CREATE TABLE elsewhere (id int, pad text); INSERT INTO elsewhere SELECT g, repeat('x', 500) FROM generate_series(1, 50000) g`)
	slots, err := cdc.SlotLag(context.Background(), s.DB, cdc.DefaultSlotPrefix)
	require.NoError(t, err)
	for _, sl := range slots {
		require.NotEqual(t, dbName(s.URL), sl.Database, "a stopped relay must leave no slot retaining WAL")
	}
}

func dbName(url string) string {
	i := strings.LastIndex(url, "/")
	j := strings.Index(url[i:], "?")
	if j < 0 {
		return url[i+1:]
	}
	return url[i+1 : i+j]
}

func TestEndToEndMetricsAndReadiness(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	cfg := s.Config()
	addr := make(chan string, 1)
	cfg.OnAdminListen = func(a string) { addr <- a }
	s.Run(cfg)
	base := "http://" + <-addr
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	require.Eventually(t, func() bool { code, _ := get("/readyz"); return code == 200 }, 30*time.Second, 10*time.Millisecond)
	code, _ := get("/livez")
	require.Equal(t, 200, code)
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	s.WaitReceived(1)
	require.Eventually(t, func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `cdc_relay_messages_delivered_total{type="CUSTOMER"}`) &&
			strings.Contains(body, `cdc_relay_queue_rows{queue="cust_pending"} 0`) &&
			strings.Contains(body, "cdc_relay_commit_to_delivery_seconds_count")
	}, 10*time.Second, 10*time.Millisecond)
}

func TestSendSampleSucceedsAndFails(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	run := func() (int, string) {
		return runCLI(t, "send-sample", "--database-url", s.URL, "--ca-file", s.CAFile, "--credentials", s.CredFile)
	}
	code, out := run()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "HTTP 200")
	require.Equal(t, 1, s.Recv.Stats().Samples)
	s.Recv.SetFaults(receiver.Faults{Down: true})
	code, out = run()
	require.Equal(t, 1, code)
	require.Contains(t, out, "HTTP 503")
	s.Recv.SetFaults(receiver.Faults{})
	s.Rotate("another-secret")
	code, out = run()
	require.Equal(t, 1, code)
	require.Contains(t, out, "token")
	require.NotContains(t, out, s.Secret)
}

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Run(s.Config())
	s.Exec(`INSERT INTO customer (customer_id) VALUES (1)`)
	s.WaitReceived(1)
	s.Rotate("rotated")
	s.Exec(`INSERT INTO customer (customer_id) VALUES (2)`)
	require.Eventually(t, func() bool { return strings.Contains(s.Logs.String(), "token") }, 30*time.Second, 10*time.Millisecond)
	require.NotContains(t, s.Logs.String(), s.Secret)
	require.NotContains(t, s.Logs.String(), "Bearer ")
	require.NotContains(t, fmt.Sprint(s.Logs.String()), "customerID")
}

// runCLI runs a cdc-relay command in-process and returns its exit code and its output, stdout
// and stderr as one stream.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := e2etest.RunCLI(&out, &out, args...)
	return code, out.String()
}

func TestStatusDeadLettersAndRequeueCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Recv.SetFaults(receiver.Faults{FailRate: 1, FailStatus: 422})
	cfg := s.Config()
	cfg.Relay.PermanentAttempts = 1
	s.Run(cfg)
	s.Exec(`INSERT INTO customer (customer_id) VALUES (77)`)
	s.Exec(`UPDATE customer SET first_name = 'B' WHERE customer_id = 77`)
	require.Eventually(t, func() bool { return s.Count(`SELECT count(*) FROM data_sync_cust_failed`) == 2 }, 30*time.Second, 5*time.Millisecond)

	code, out := runCLI(t, "status", "--database-url", s.URL, "--json")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"data_sync_enabled": true`)
	require.Contains(t, out, `"stage": "failed"`)
	require.Contains(t, out, "HTTP 422")
	code, out = runCLI(t, "status", "--database-url", s.URL)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Replication slots:")

	code, out = runCLI(t, "dead-letters", "--database-url", s.URL)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "failed")
	require.Contains(t, out, "held")
	require.Contains(t, out, "2 dead-letter rows")

	code, out = runCLI(t, "requeue", "--database-url", s.URL)
	require.Equal(t, 2, code, "requeue needs exactly one selector: %s", out)
	s.Recv.SetFaults(receiver.Faults{})
	code, out = runCLI(t, "requeue", "--database-url", s.URL, "--customer", "77")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "requeued 2 rows")
	got := s.WaitReceived(2)
	require.Equal(t, "CUSTOMERCRE", got[0].Message.Action)
	require.Equal(t, "CUSTOMERMOD", got[1].Message.Action)
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestConfigCommand(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	code, out := runCLI(t, "config", "--database-url", s.URL, "set", "datasyncenabled", "No")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "DataSyncEnabled  false")
	// Any setting, in any case, prints what was stored (an extension's name once printed nothing).
	code, out = runCLI(t, "config", "--database-url", s.URL, "set", "datasyncbulksnapshotmode", "move")
	require.Equal(t, 0, code, out)
	require.Equal(t, "DataSyncBulkSnapshotMode  move\n", out)
	code, out = runCLI(t, "config", "--database-url", s.URL, "set", "DataSyncApiUrl", "not a url")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, `invalid value "not a url" for DataSyncApiUrl`)
	require.Contains(t, out, "give an absolute https URL")
	code, out = runCLI(t, "config", "--database-url", s.URL, "set", "DataSyncColour", "blue")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "unknown Data Sync setting")
	require.Contains(t, out, "known settings: DataSyncEnabled")
	code, out = runCLI(t, "config", "--database-url", s.URL, "show")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "DataSyncApiUrl")
	require.Contains(t, out, s.Recv.APIURL(), "the bad value did not replace the good one")
	require.Contains(t, out, "DataSyncCredentialMapName  ce_credentials")
	code, out = runCLI(t, "config", "--database-url", s.URL, "frob")
	require.Equal(t, 2, code, out)
}

// Rows and sets queued in move mode still get their JSON after a switch back to capture mode
// (they are the triggers' own rows), instead of being parked as bad rows; with
// DataSyncBulkSnapshotMode = move, capture mode writes sets that the relay expands at once.
func TestEndToEndSetsOfCustomers(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	decode := func(r receiver.Received) (id string, segments int) {
		t.Helper()
		c, err := mapping.DecodeCustomer([]byte(r.Message.Payload))
		require.NoError(t, err, r.Message.Action)
		return c.CustomerID, len(c.CustomerSegments.Segment)
	}
	// 80 CREATE rows with their JSON (capture mode), then in move mode a bulk statement (one
	// set) and a key-only row for customer 1, then back to capture before the relay starts.
	s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'n' || g FROM generate_series(1, 80) g`)
	s.Set("DataSyncSnapshotMode", "move")
	s.Exec(`INSERT INTO segment (segment_id, segment_name) VALUES (9, 'Autumn')`)
	s.Exec(`UPDATE customer SET first_name = 'One' WHERE customer_id = 1`)
	s.Exec(`INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 9 FROM generate_series(1, 80) g`)
	require.Equal(t, 1, s.Count(`SELECT count(*) FROM data_sync_cust_pending_set`))
	s.Set("DataSyncSnapshotMode", "capture")
	s.Run(s.Config())
	got := s.WaitReceived(160)  // 80 CREATE, customer 1's UPDATE, 79 UPDATE from the set
	seen := map[string]string{} // customer -> actions in arrival order
	for _, r := range got {
		id, segments := decode(r)
		switch r.Message.Action {
		case "CUSTOMERCRE":
			require.Zero(t, segments, "created before the segment")
		case "CUSTOMERMOD":
			require.Equal(t, 1, segments, "snapshot built when moved")
		}
		seen[id] += r.Message.Action[len("CUSTOMER"):] + " "
	}
	require.Len(t, seen, 80)
	for id, actions := range seen {
		require.Equal(t, "CRE MOD ", actions, id)
	}
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_failed`))

	// Capture mode with bulk statements snapshotted at move: the relay expands the set as soon
	// as the doorbell rings (the sweep is an hour away).
	s.Set("DataSyncBulkSnapshotMode", "move")
	s.Exec(`INSERT INTO segment (segment_id, segment_name) VALUES (10, 'Winter')`)
	s.Exec(`INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 10 FROM generate_series(1, 80) g`)
	got = s.WaitReceived(240)
	for _, r := range got[160:] {
		require.Equal(t, "CUSTOMERMOD", r.Message.Action)
		_, segments := decode(r)
		require.Equal(t, 2, segments)
	}
}

// A key-only row whose customer is gone by the time the relay builds its snapshot (deleted
// after the row was queued, in a race the delete's purge could not see) is dropped, not parked:
// the customer's DELETE says the rest.
func TestEndToEndSnapshotOfADeletedCustomerIsDropped(t *testing.T) {
	t.Parallel()
	s := newStack(t, receiver.Config{})
	s.Set("DataSyncSnapshotMode", "move")
	s.Exec(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, captured) VALUES ('404', 'UPDATE', true)`)
	s.Exec(`INSERT INTO customer (customer_id) VALUES (405)`)
	s.Run(s.Config())
	got := s.WaitReceived(1)
	require.Equal(t, "CUSTOMERCRE", got[0].Message.Action)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue`)+s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`) == 0
	}, 30*time.Second, 5*time.Millisecond)
	require.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_failed`), "not parked as a dead letter")
	require.Len(t, s.Received(), 1)
}

// The leading relay records its limit on requests in flight in data_sync_leader, and status
// shows it: adaptive by default (bounded by --max-concurrency), or fixed by --concurrency.
func TestStatusShowsTheConcurrencyLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fixed int
		want  string
	}{
		{"adaptive", 0, "(adaptive, --max-concurrency)"},
		{"fixed", 3, "Requests in flight: limit 3 of at most 3 (fixed by --concurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, receiver.Config{})
			cfg := s.Config()
			cfg.Relay.Concurrency = tc.fixed
			s.Run(cfg)
			s.Exec(`INSERT INTO customer (customer_id) VALUES (78)`)
			s.WaitReceived(1)
			require.Eventually(t, func() bool {
				return s.Count(`SELECT count(*) FROM data_sync_leader WHERE concurrency_limit > 0`) == 1
			}, 30*time.Second, 5*time.Millisecond, "the relay did not record its concurrency limit")
			code, out := runCLI(t, "status", "--database-url", s.URL)
			require.Equal(t, 0, code, out)
			require.Contains(t, out, "Requests in flight: limit ")
			require.Contains(t, out, tc.want)
			code, out = runCLI(t, "status", "--database-url", s.URL, "--json")
			require.Equal(t, 0, code, out)
			require.Contains(t, out, `"concurrency_limit": `)
		})
	}
}
