// Package e2etest is the end-to-end harness that tests share: a CE database with cdc-relay
// installed and Data Sync enabled, the reference receiver (real HTTPS, real OAuth2 token
// endpoint) it points at, a credential store, and the relay daemon run in-process against them,
// as `cdc-relay run` would. Only tests import it.
package e2etest

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cdc-relay/cdc-relay/internal/cli"
	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/logbuf"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/relay"
)

// ClientID is the OAuth2 client the receiver accepts and the credential store holds.
const ClientID = "relay-client"

// Stack is one test's database, receiver and credentials: everything `cdc-relay run` needs.
type Stack struct {
	T      *testing.T
	URL    string // the database
	DB     *pgxpool.Pool
	Recv   *receiver.Server
	Dir    string // the test's own directory, holding CAFile and CredFile
	CAFile string // the receiver's certificate, for --ca-file
	// CredFile is the credential store (--credentials), holding ClientID and Secret under the
	// default map and key, in a directory of its own as `credentials set` makes it.
	CredFile string
	Secret   string         // the client secret the receiver accepts
	Logs     *logbuf.Buffer // everything the relays run by Run logged

	mu  sync.Mutex
	got []receiver.Received
}

// New builds a stack on url, a database with cdc-relay installed (pgtest.NewDB): it starts the
// receiver with rcfg, accepting ClientID and secret and checking every payload strictly, saves
// the credential store, and points Data Sync at the receiver, enabled. The receiver stops when
// the test ends; the relay's log is printed if the test failed.
func New(t *testing.T, url string, rcfg receiver.Config, secret string) *Stack {
	t.Helper()
	s := &Stack{T: t, URL: url, DB: pgtest.Pool(t, url), Dir: t.TempDir(), Secret: secret, Logs: &logbuf.Buffer{}}
	rcfg.ClientID, rcfg.ClientSecret, rcfg.Strict = ClientID, secret, true
	rcfg.OnMessage = func(r receiver.Received) {
		if r.Sample {
			return
		}
		s.mu.Lock()
		s.got = append(s.got, r)
		s.mu.Unlock()
	}
	recv, err := receiver.New(rcfg)
	require.NoError(t, err)
	require.NoError(t, recv.Start())
	t.Cleanup(func() { recv.Close() })
	s.Recv = recv
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", s.Logs.String())
		}
	})
	s.CAFile, s.CredFile = filepath.Join(s.Dir, "ca.pem"), filepath.Join(s.Dir, "cdc-relay", "credentials.json")
	require.NoError(t, recv.WriteCAFile(s.CAFile))
	require.NoError(t, credentials.Save(s.CredFile, credentials.DefaultMapName, credentials.DefaultKeyName,
		credentials.Credential{ClientID: ClientID, ClientSecret: secret}))
	s.Set("DataSyncApiUrl", recv.APIURL())
	s.Set("DataSyncTokenUrl", recv.TokenURL())
	s.Set("DataSyncEnabled", "true")
	return s
}

// Set stores a Data Sync setting, which must exist, as an operator would in psql.
func (s *Stack) Set(name, value string) {
	s.T.Helper()
	tag, err := s.DB.Exec(context.Background(), `UPDATE data_sync_config SET value = $2 WHERE name = $1`, name, value)
	require.NoError(s.T, err)
	require.Equal(s.T, int64(1), tag.RowsAffected(), "setting %s exists", name)
}

// Exec runs sql on the database.
func (s *Stack) Exec(sql string, args ...any) {
	s.T.Helper()
	_, err := s.DB.Exec(context.Background(), sql, args...)
	require.NoError(s.T, err, sql)
}

// Count returns the single integer sql selects.
func (s *Stack) Count(sql string, args ...any) int {
	s.T.Helper()
	var n int
	require.NoError(s.T, s.DB.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

// Received returns the messages the receiver accepted so far (samples left out), in arrival
// order.
func (s *Stack) Received() []receiver.Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receiver.Received(nil), s.got...)
}

// WaitReceived waits until the receiver accepted at least n messages and returns them all.
func (s *Stack) WaitReceived(n int) []receiver.Received {
	s.T.Helper()
	if !assert.Eventually(s.T, func() bool { return len(s.Received()) >= n }, 60*time.Second, 2*time.Millisecond) {
		s.T.Fatalf("received %d of %d messages", len(s.Received()), n) // counted now, not when the wait began
	}
	return s.Received()
}

// Rotate makes the receiver accept only secret from now on and revokes the tokens it issued, as
// a partner rotating the client secret does.
func (s *Stack) Rotate(secret string) {
	s.Recv.SetCredentials(ClientID, secret)
	s.Recv.RevokeTokens()
}

// Config is the daemon configuration a user would pass: this stack's database, CA file and
// credential store, the admin server on a free port, JSON debug logs into Logs, quick retries,
// and the sweep an hour away so that only the replication doorbell can deliver promptly.
func (s *Stack) Config() daemon.Config {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return daemon.Config{
		DatabaseURL: s.URL, CAFile: s.CAFile, CredentialsPath: s.CredFile, AdminAddr: "127.0.0.1:0",
		Relay:  relay.Config{SweepInterval: time.Hour, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond},
		Logger: zap.New(zapcore.NewCore(enc, s.Logs, zap.DebugLevel)),
	}
}

// Run starts the daemon with cfg and returns a stop function that checks it stopped cleanly;
// the test's cleanup calls it too.
func (s *Stack) Run(cfg daemon.Config) (stop func()) {
	s.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(s.T, err)
		case <-time.After(30 * time.Second):
			s.T.Fatal("daemon did not stop")
		}
	}
	s.T.Cleanup(stop)
	return stop
}

// RunCLI runs a cdc-relay command in-process, as a user would type it, with an empty stdin and
// environment, and returns its exit code.
func RunCLI(stdout, stderr io.Writer, args ...string) int {
	return cli.Main(args, cli.Env{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }})
}
