package tests

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// hostile is text a receiver or a database row may carry: a terminal escape that clears the
// screen, and a newline that forges a line of the command's output.
const hostile = "boom\x1b[2J\x1b[31m\r\nFORGED: all delivered\u2028\u009b1m"

// assertSafeOutput checks that out holds no control character other than newlines and tabs the
// command wrote itself, and no line forged by the hostile text.
func assertSafeOutput(t *testing.T, out string) {
	t.Helper()
	assert.NotContains(t, out, "\x1b", "a terminal escape reached the output")
	assert.NotContains(t, out, "\r")
	assert.NotContains(t, out, "\u2028")
	assert.NotContains(t, out, "\u009b")
	for _, line := range strings.Split(out, "\n") {
		assert.False(t, strings.HasPrefix(line, "FORGED"), "a newline in outside text forged an output line: %q", line)
	}
	assert.Contains(t, out, "FORGED: all delivered", "the text itself is still shown, escaped")
}

func TestStatusPrintsDatabaseStringsSafely(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `INSERT INTO data_sync_cust_progress_queue (id, unique_id, action, attempts, last_status, last_error)
		VALUES (1, $1, 'UPDATE', 2, 500, $1)`, hostile)
	code, out := runCLI(t, "status", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Failing rows:")
	assertSafeOutput(t, out)
}

func TestSendSamplePrintsTheAnswerSafely(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"access_token": "t", "token_type": "Bearer", "expires_in": 3600})
			return
		}
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte(hostile))
	}))
	defer srv.Close()
	dir := t.TempDir()
	caFile, credFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "credentials.json")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))
	require.NoError(t, credentials.Save(credFile, "ce_credentials", "datasync", credentials.Credential{ClientID: "c", ClientSecret: "sample-secret"}))
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncApiUrl'`, srv.URL+"/datasync")
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncTokenUrl'`, srv.URL+"/token")

	code, out := runCLI(t, "send-sample", "--database-url", url, "--ca-file", caFile, "--credentials", credFile)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "HTTP 502")
	assertSafeOutput(t, out)
}

// TestStatusPinsItsSearchPath: the commands' sessions read the installed tables even when the
// database's search_path puts another schema first.
func TestStatusPinsItsSearchPath(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'https://real.example/datasync' WHERE name = 'DataSyncApiUrl';
		CREATE SCHEMA decoy;
		CREATE TABLE decoy.data_sync_config (name text, value text, updated_at timestamptz);
		INSERT INTO decoy.data_sync_config VALUES ('DataSyncApiUrl', 'https://decoy.example/steal');
		DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = decoy, public', current_database()); END $$`)
	code, out := runCLI(t, "status", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "API URL: https://real.example/datasync")
	require.NotContains(t, out, "decoy.example")
}

// status says which relay leads and, while the receiver's endpoint fails as a whole, since when
// and how (the leader writes both into data_sync_leader).
func TestStatusShowsTheLeaderAndAFailingEndpoint(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	code, out := runCLI(t, "status", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Leader: none")
	pgtest.Exec(t, url, `UPDATE data_sync_leader SET holder = 'relay-host pid 42', since = now(), lease_until = now() + interval '1 hour',
		epoch = 7, endpoint_failing_since = now(), endpoint_error = E'HTTP 404\x1b[2J'`)
	code, out = runCLI(t, "status", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Leader: relay-host pid 42 since ")
	require.Contains(t, out, "(epoch 7)")
	require.Contains(t, out, `Endpoint failing: HTTP 404\x1b[2J since `, "the endpoint error, escaped")
}

// install names the row it removes of a repeatable script no longer shipped (here a hostile
// one), escaped, rather than leaving it to look like a missing script; a second run has nothing
// to change.
func TestInstallForgetsScriptsNoLongerShipped(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `INSERT INTO data_sync_schema_version (name, kind, checksum)
		VALUES ('repeatable/20_capture.sql', 'repeatable', 'x'), ($1, 'repeatable', 'x')`, hostile)
	code, out := runCLI(t, "install", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "forgot repeatable/20_capture.sql")
	require.NotContains(t, out, "applied")
	assertSafeOutput(t, out)
	code, out = runCLI(t, "install", "--database-url", url)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "nothing to change")
}

// TestLoadSessionsAreNamedApart: `cdc-relay load` pins the relay's search_path but names its
// sessions "cdc-relay load", so a DBA (or a check) looking for the relay in pg_stat_activity
// finds only the relay.
func TestLoadSessionsAreNamedApart(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	done := make(chan string, 1)
	go func() {
		code, out := runCLI(t, "load", "--database-url", url, "--rate", "20", "--customers", "5", "--duration", "4s")
		done <- fmt.Sprintf("exit %d: %s", code, out)
	}()
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var names []string
	require.Eventually(t, func() bool {
		names = nil
		rows, err := conn.Query(context.Background(), `SELECT DISTINCT application_name FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'cdc-relay%'`)
		if err != nil {
			return false
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err == nil && len(names) > 0
	}, 15*time.Second, 20*time.Millisecond, "no load session seen")
	require.Equal(t, []string{"cdc-relay load"}, names)
	out := <-done
	require.Contains(t, out, "exit 0", out)
}
