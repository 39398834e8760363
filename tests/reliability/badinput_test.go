package reliability

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// badInputs counts the bad inputs tried by this package's tests, for the summary.
var badInputs atomic.Int64

// insertQueued inserts one hand-made pending row and returns its id.
func (e *env) insertQueued(table, objName string, uniqueID *string, action string, jsonObject *string) int64 {
	e.t.Helper()
	c := e.conn()
	var id int64
	require.NoError(e.t, c.QueryRow(context.Background(),
		`INSERT INTO `+pgx.Identifier{table}.Sanitize()+` (obj_name, unique_id, action, json_object) VALUES ($1, $2, $3, $4::json) RETURNING id`,
		objName, uniqueID, action, jsonObject).Scan(&id))
	return id
}

func ptr(s string) *string { return &s }

// TestMalformedJSONRefusedAtInsert: json_object is of type json, so PostgreSQL itself refuses
// malformed JSON at INSERT with a clear error, and nothing is queued.
func TestMalformedJSONRefusedAtInsert(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.conn()
	for _, bad := range []string{`{"customerID": "1",`, `not json`, `{'single': 'quotes'}`} {
		badInputs.Add(1)
		_, err := c.Exec(context.Background(), `INSERT INTO data_sync_cust_pending_queue (obj_name, unique_id, action, json_object) VALUES ('Customer', '1', 'UPDATE', $1::json)`, bad)
		require.Error(t, err)
		require.Contains(t, err.Error(), "invalid input syntax for type json", "the error should name the problem")
	}
	n, err := e.queued()
	require.NoError(t, err)
	require.Zero(t, n, "nothing may be queued")
	report(t, summaryRow{BadInputsTried: 3, Notes: "PostgreSQL refuses malformed json at INSERT"})
}

// TestBadRowsParked hand-inserts rows that can never be sent (wrongly typed JSON, unknown
// OBJ_NAME, unknown ACTION, null UNIQUE_ID, null JSON for an UPDATE) among good rows: each bad
// row is parked in the dead-letter table with an error naming the problem, the relay logs it and
// keeps running, and the good rows (including a valid payload of several MB) are delivered.
func TestBadRowsParked(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(10)
	p := e.startRelay()
	key := func(i int) *string { return ptr(fmt.Sprint(customers[i])) }
	type bad struct {
		name, table, obj, action string
		uid, json                *string
		want                     string // in last_error and the log
	}
	bads := []bad{
		{"wrongly typed JSON (array)", "data_sync_cust_pending_queue", "Customer", "UPDATE", key(0), ptr(`[1, 2, 3]`), ""},
		{"wrongly typed JSON (customerID a number, names an object)", "data_sync_cust_pending_queue", "Customer", "UPDATE", key(1), ptr(`{"customerID": 12, "entityInformation": "x"}`), ""},
		{"unknown OBJ_NAME", "data_sync_cust_pending_queue", "Widget", "UPDATE", key(2), ptr(`{}`), "Widget"},
		{"unknown ACTION", "data_sync_cust_pending_queue", "Customer", "FROB", key(3), ptr(`{}`), "FROB"},
		{"null UNIQUE_ID", "data_sync_cust_pending_queue", "Customer", "UPDATE", nil, ptr(`{}`), "UNIQUE_ID is null"},
		{"null JSON_OBJECT for an UPDATE", "data_sync_cust_pending_queue", "Customer", "UPDATE", key(4), nil, "JSON_OBJECT is null"},
		{"transaction with wrongly typed JSON", "data_sync_trn_pending_queue", "Transaction", "CREATE", ptr("T-1"), ptr(`"just a string"`), ""},
	}
	badIDs := map[int64]bad{}
	for _, b := range bads {
		badInputs.Add(1)
		badIDs[e.insertQueued(b.table, b.obj, b.uid, b.action, b.json)] = b
	}
	// Good rows after the bad ones, on other customers, and a valid multi-MB payload.
	w := &writer{}
	w.run(context.Background(), e.dbURL, customers[5:], 20, 1, 0)
	big := strings.Repeat("x", 5<<20)
	e.exec(`UPDATE customer SET first_name = $1 WHERE customer_id = $2`, big, customers[9])
	var bigID int64
	bigIDv, err := e.queryInt(`SELECT max(id) FROM data_sync_cust_pending_queue WHERE unique_id = $1`, fmt.Sprint(customers[9]))
	if err == nil {
		bigID = bigIDv
	}
	require.NotZero(t, bigID, "the big update should be queued")
	ids := append(w.ids(), bigID)
	e.waitDrained(p, ids, 2*time.Minute)
	badInputs.Add(1)
	e.rec.mu.Lock()
	bigSize := e.rec.sizes[fmt.Sprint(bigID)]
	e.rec.mu.Unlock()
	require.Greater(t, bigSize, 5<<20, "the multi-MB payload should arrive whole")

	c := e.conn()
	for id, b := range badIDs {
		table := "data_sync_cust_failed"
		if b.table == "data_sync_trn_pending_queue" {
			table = "data_sync_trn_failed"
		}
		var lastErr string
		require.NoErrorf(t, c.QueryRow(context.Background(), `SELECT coalesce(last_error, '') FROM `+table+` WHERE id = $1`, id).Scan(&lastErr),
			"%s: row %d not parked in %s", b.name, id, table)
		require.Contains(t, lastErr, "bad queue record", b.name)
		if b.want != "" {
			require.Contains(t, lastErr, b.want, b.name)
		}
		require.Contains(t, p.output(), fmt.Sprintf(`"id":%d`, id), "%s: the log should name the row", b.name)
		require.False(t, e.rec.got(id), "%s: a bad row must not be sent", b.name)
		t.Logf("%s: parked with last_error %q", b.name, lastErr)
	}
	require.False(t, p.exited(), "the relay must keep running:\n%s", tail(p.output(), 3000))
	p.stop()
	report(t, summaryRow{ChangesCommitted: len(ids), Delivered: len(ids) - len(e.rec.missing(ids)), BadInputsTried: len(bads) + 1,
		MaxRSSKiB: p.MaxRSS(), Notes: fmt.Sprintf("7 bad rows parked; %d-byte payload delivered", bigSize)})
}

// TestConfigGarbageRefused: data_sync_config values are validated by a trigger, so garbage fails
// with a clear error and the old value stays.
func TestConfigGarbageRefused(t *testing.T) {
	e := newEnv(t, envOptions{noConfig: true})
	c := e.conn()
	cases := []struct{ sql, want string }{
		{`UPDATE data_sync_config SET value = 'maybe' WHERE name = 'DataSyncEnabled'`, `invalid value "maybe" for DataSyncEnabled`},
		{`UPDATE data_sync_config SET value = 'not a url' WHERE name = 'DataSyncApiUrl'`, `not an absolute URL`},
		{`UPDATE data_sync_config SET value = 'sometimes' WHERE name = 'DataSyncSnapshotMode'`, `invalid value "sometimes" for DataSyncSnapshotMode`},
		{`INSERT INTO data_sync_config (name, value) VALUES ('DataSyncTypo', 'x')`, `unknown Data Sync setting "DataSyncTypo"`},
	}
	for _, tc := range cases {
		badInputs.Add(1)
		_, err := c.Exec(context.Background(), tc.sql)
		require.Error(t, err, tc.sql)
		require.Contains(t, err.Error(), tc.want)
	}
	var v string
	require.NoError(t, c.QueryRow(context.Background(), `SELECT value FROM data_sync_config WHERE name = 'DataSyncEnabled'`).Scan(&v))
	require.Equal(t, "false", v)
	report(t, summaryRow{BadInputsTried: len(cases)})
}

// TestCredentialStoreRefused: a missing, corrupt or world-readable credential store makes the
// relay refuse to start with the fix in the message; queued rows stay queued.
func TestCredentialStoreRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(5)
	w := &writer{}
	w.run(context.Background(), e.dbURL, customers, 5, 1, 0)
	good, err := os.ReadFile(e.credFile)
	require.NoError(t, err)
	cases := []struct {
		name  string
		setup func()
		want  []string
	}{
		{"missing", func() { require.NoError(t, os.Remove(e.credFile)) }, []string{"does not exist", "cdc-relay credentials set"}},
		{"corrupt", func() { require.NoError(t, os.WriteFile(e.credFile, []byte("{\"ce_credentials\": {"), 0o600)) },
			[]string{"corrupt", "not valid credential JSON", "cdc-relay credentials set"}},
		{"world-readable", func() {
			require.NoError(t, os.WriteFile(e.credFile, good, 0o600))
			require.NoError(t, os.Chmod(e.credFile, 0o644))
		}, []string{"insecure permissions", "chmod 600"}},
	}
	for _, c := range cases {
		badInputs.Add(1)
		c.setup()
		p := e.startRelay()
		out := p.wait(time.Minute)
		require.Error(t, p.err, "%s: the relay must refuse to run", c.name)
		for _, s := range c.want {
			require.Contains(t, out, s, "%s: the message should name the problem and the fix", c.name)
		}
		t.Logf("%s: %s", c.name, lastLine(out))
	}
	n, err := e.queued()
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "queued rows must stay queued")
	// Restored, the relay delivers them.
	require.NoError(t, os.Chmod(e.credFile, 0o600))
	p := e.startRelay()
	e.waitDrained(p, w.ids(), time.Minute)
	p.stop()
	report(t, summaryRow{ChangesCommitted: 5, Delivered: 5, BadInputsTried: len(cases)})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// tokenProxy is an HTTPS token endpoint in front of the reference receiver's: it fetches a real
// token and answers it in a chosen bad shape.
func tokenProxy(t *testing.T, e *env, ca *testCA, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	cert, key := ca.issue(t, e.dir, fmt.Sprintf("proxy%d", time.Now().UnixNano()), []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	kp, err := tls.LoadX509KeyPair(cert, key)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// Trust both the receiver and the proxy.
	require.NoError(t, os.WriteFile(e.caFile, append(e.rcv.CAPEM(), ca.pem...), 0o644))
	return srv
}

// realToken fetches a token from the reference receiver.
func realToken(t *testing.T, e *env) string {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test-only fetch from our own receiver
	req, _ := http.NewRequest(http.MethodPost, e.rcv.TokenURL(), strings.NewReader("grant_type=client_credentials"))
	req.SetBasicAuth(clientID, clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	return tok.AccessToken
}

// TestTokenEndpointBadAnswers: a token endpoint answering HTML or redirecting gives a clear
// error and loses nothing; one answering without expires_in still works (with a warning).
func TestTokenEndpointBadAnswers(t *testing.T) {
	ca := newTestCA(t)
	cases := []struct {
		name    string
		handler func(e *env, elsewhere *atomic.Int64) http.HandlerFunc
		works   bool
		want    []string
	}{
		{"HTML", func(e *env, _ *atomic.Int64) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html><body>Please log in</body></html>")
			}
		}, false, []string{"not a valid OAuth2 token"}},
		{"no expires_in", func(e *env, _ *atomic.Int64) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]string{"access_token": realToken(t, e), "token_type": "Bearer"})
			}
		}, true, []string{"no expires_in"}},
		{"redirect", func(e *env, elsewhere *atomic.Int64) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					elsewhere.Add(1)
					w.WriteHeader(http.StatusTeapot)
					return
				}
				http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			}
		}, false, []string{"redirected", "never follows redirects"}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			badInputs.Add(1)
			e := newEnv(t, envOptions{})
			var elsewhere atomic.Int64
			srv := tokenProxy(t, e, ca, tc.handler(e, &elsewhere))
			e.configure(e.rcv.APIURL(), srv.URL+"/token")
			customers := e.createCustomers(3)
			w := &writer{}
			w.run(context.Background(), e.dbURL, customers, 3, 1, 0)
			p := e.startRelay()
			line := p.waitLog(time.Minute, tc.want...)
			t.Logf("%s: %s", tc.name, line)
			if tc.works {
				e.waitDrained(p, w.ids(), time.Minute)
			} else {
				require.Len(t, e.rec.missing(w.ids()), 3, "nothing can be delivered")
				n, err := e.queued()
				require.NoError(t, err)
				require.EqualValues(t, 3, n, "rows stay queued")
				require.Zero(t, elsewhere.Load(), "the redirect must not be followed")
				require.False(t, p.exited())
				// Fixed token URL: delivered without a restart.
				e.exec(`UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncTokenUrl'`, e.rcv.TokenURL())
				e.waitDrained(p, w.ids(), time.Minute)
			}
			p.stop()
		})
	}
	report(t, summaryRow{BadInputsTried: len(cases), Notes: "token endpoint: HTML, no expires_in, redirect"})
}

// TestReceiverRedirectNeverFollowed: a receiver answering 307 to another host, or to plain
// http, is never followed (the other side sees no request, hence no token); the rows are parked,
// not lost.
func TestReceiverRedirectNeverFollowed(t *testing.T) {
	for _, scheme := range []string{"https", "http"} {
		t.Run(scheme, func(t *testing.T) {
			badInputs.Add(1)
			e := newEnv(t, envOptions{})
			var hits, withAuth atomic.Int64
			other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if r.Header.Get("Authorization") != "" {
					withAuth.Add(1)
				}
			}))
			if scheme == "https" {
				other.StartTLS()
			} else {
				other.Start()
			}
			t.Cleanup(other.Close)
			target := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) + "/steal"
			e.rcv.SetFaults(receiver.Faults{RedirectTo: target})
			customers := e.createCustomers(2)
			w := &writer{}
			w.run(context.Background(), e.dbURL, customers, 2, 1, 0)
			p := e.startRelay()
			line := p.waitLog(time.Minute, "never follows redirects")
			t.Logf("redirect to %s: %s", scheme, line)
			require.Contains(t, line, "localhost", "the message should name where it was sent")
			// Parked (progress with its error, or dead-lettered after the permanent attempts).
			require.True(t, waitFor(time.Minute, func() bool {
				n, err := e.queryInt(`SELECT count(*) FROM (SELECT id FROM data_sync_cust_progress_queue WHERE last_error LIKE '%redirect%'
					UNION ALL SELECT id FROM data_sync_cust_failed) x`)
				return err == nil && n == 2
			}), "rows should be parked with the redirect error")
			require.Zero(t, hits.Load(), "the redirect must never be followed")
			require.Zero(t, withAuth.Load())
			require.False(t, p.exited())
			p.stop()
		})
	}
	report(t, summaryRow{BadInputsTried: 2, Notes: "receiver 307 to another host (https) and to http: not followed"})
}

// TestReceiverHugeResponseBody: a receiver answering 200 with a 200 MB body: the relay reads
// only a bounded prefix, counts the message delivered, and its RSS stays small.
func TestReceiverHugeResponseBody(t *testing.T) {
	badInputs.Add(1)
	ca := newTestCA(t)
	e := newEnv(t, envOptions{})
	var seen atomic.Int64
	srv := tokenProxy(t, e, ca, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		seen.Add(1)
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(strings.Repeat(" ", 1<<20))
		for range 200 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	e.configure(srv.URL+"/datasync", e.rcv.TokenURL())
	customers := e.createCustomers(5)
	w := &writer{}
	w.run(context.Background(), e.dbURL, customers, 5, 1, 0)
	p := e.startRelay()
	require.True(t, waitFor(time.Minute, func() bool {
		n, err := e.queued()
		return err == nil && n == 0
	}), "rows should count as delivered:\n%s", tail(p.output(), 3000))
	require.GreaterOrEqual(t, seen.Load(), int64(5))
	require.Zero(t, e.failedRows())
	require.Positive(t, p.MaxRSS(), "RSS was never sampled")
	require.Less(t, p.MaxRSS(), int64(200<<10), "the relay must not buffer a huge response")
	p.stop()
	t.Logf("huge body: %d requests answered with 200 MB each; max RSS %d KiB", seen.Load(), p.MaxRSS())
	report(t, summaryRow{ChangesCommitted: 5, Delivered: 5, BadInputsTried: 1, MaxRSSKiB: p.MaxRSS(), Notes: "200 MB response bodies"})
}

// TestReceiverBadTLS: an expired certificate, a certificate for another host, and a receiver
// offering only TLS 1.0/1.1 each give a clear error naming the fix; nothing is lost.
func TestReceiverBadTLS(t *testing.T) {
	ca := newTestCA(t)
	cases := []struct {
		name string
		cfg  func(t *testing.T, dir string, c *receiver.Config)
		want string
	}{
		{"expired", func(t *testing.T, dir string, c *receiver.Config) {
			c.CertFile, c.KeyFile = ca.issue(t, dir, "expired", []string{"127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
		}, "expired"},
		{"wrong host", func(t *testing.T, dir string, c *receiver.Config) {
			c.CertFile, c.KeyFile = ca.issue(t, dir, "wronghost", []string{"receiver.example.invalid"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		}, "does not name this host"},
		{"TLS 1.0/1.1 only", func(t *testing.T, dir string, c *receiver.Config) {
			c.MinTLSVersion, c.MaxTLSVersion = tls.VersionTLS10, tls.VersionTLS11
		}, "TLS 1.2"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			badInputs.Add(1)
			dir := t.TempDir()
			e := newEnv(t, envOptions{receiverConfig: func(c *receiver.Config) { tc.cfg(t, dir, c) }})
			if !strings.Contains(tc.name, "TLS 1.0") {
				require.NoError(t, os.WriteFile(e.caFile, ca.pem, 0o644))
			}
			customers := e.createCustomers(2)
			w := &writer{}
			w.run(context.Background(), e.dbURL, customers, 2, 1, 0)
			p := e.startRelay()
			line := p.waitLog(time.Minute, "TLS error", tc.want)
			t.Logf("%s: %s", tc.name, line)
			require.Len(t, e.rec.missing(w.ids()), 2)
			n, err := e.queryInt(`SELECT (SELECT count(*) FROM data_sync_cust_pending_queue) + (SELECT count(*) FROM data_sync_cust_progress_queue) + (SELECT count(*) FROM data_sync_cust_failed)`)
			require.NoError(t, err)
			require.EqualValues(t, 2, n, "rows must stay queued or parked")
			require.False(t, p.exited())
			p.stop()
		})
	}
	report(t, summaryRow{BadInputsTried: len(cases), Notes: "expired cert, wrong-host cert, TLS 1.0/1.1-only receiver"})
}

// TestAdminAddrDefaultsToLocalhost reads the --admin-addr default from `cdc-relay run -h`.
func TestAdminAddrDefaultsToLocalhost(t *testing.T) {
	out, _ := exec.Command(relayBinary(t), "run", "-h").CombinedOutput()
	var def string
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "-admin-addr") && i+1 < len(lines) {
			def = l + lines[i+1]
		}
	}
	require.Contains(t, def, `(default "127.0.0.1:9187")`, "the admin server must bind to localhost by default:\n%s", out)
}
