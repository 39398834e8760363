package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/relay"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startDaemon runs a daemon in poll mode on dbURL with an admin server on a free port and
// returns the admin address once it serves /readyz as ready (the relay leads).
func startDaemon(t *testing.T, dbURL string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DatabaseURL: dbURL, Poll: true, AdminAddr: "127.0.0.1:0",
			Relay:         relay.Config{SweepInterval: time.Hour},
			OnAdminListen: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	var a string
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatalf("daemon stopped at start: %v", err)
	}
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + a + "/readyz")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		io.Copy(io.Discard, res.Body)
		return res.StatusCode == http.StatusOK
	}, time.Minute, 10*time.Millisecond, "the first relay never became ready")
	return a
}

// TestStandbyWithTakenAdminAddrRefusesToStart: a second relay on the same host whose admin
// address is taken (here by the first relay) must fail at once, naming the address and the
// flag, not wait as a standby and fail when it should take over.
func TestStandbyWithTakenAdminAddrRefusesToStart(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	leaderAddr := startDaemon(t, dbURL)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, Config{DatabaseURL: dbURL, Poll: true, AdminAddr: leaderAddr, Relay: relay.Config{SweepInterval: time.Hour}})
	require.NoError(t, ctx.Err(), "the second relay returned only when the test gave up on it: it waited as a standby")
	require.Error(t, err)
	assert.Contains(t, err.Error(), leaderAddr)
	assert.Contains(t, err.Error(), "--admin-addr")
}

// TestAdminAddrBoundBeforeTheDatabase: with the address taken and the database unreachable,
// the error is the address: nothing else was tried first.
func TestAdminAddrBoundBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	u, err := url.Parse(pgtest.NewDB(t))
	require.NoError(t, err)
	u.Path = "/no_such_database"
	err = Run(context.Background(), Config{DatabaseURL: u.String(), AdminAddr: taken.Addr().String()})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "listening on --admin-addr "+taken.Addr().String()), err.Error())
}
