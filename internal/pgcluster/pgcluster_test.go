package pgcluster_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
)

// TestClusterAdmitsOnlyItsOwner: the cluster's URL works; no TCP port accepts a connection;
// the socket directory is 0700; and (when the test runs as root and can act as another user)
// a different local user cannot reach the socket at all.
func TestClusterAdmitsOnlyItsOwner(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A port no other server listens on, so a TCP connection to it can only reach this cluster.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	c, err := pgcluster.Start(ctx, pgcluster.Options{Port: port})
	if err == pgcluster.ErrNoBinaries {
		t.Skip(err)
	}
	require.NoError(t, err)
	defer c.Stop()

	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	require.NoError(t, err, "the cluster's own URL must connect")
	var super bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	require.True(t, super)
	var listen string
	require.NoError(t, conn.QueryRow(ctx, `SHOW listen_addresses`).Scan(&listen))
	assert.Equal(t, "", listen, "the cluster must open no TCP port")
	var hostTrust int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'local' AND auth_method <> 'reject'`).Scan(&hostTrust))
	assert.Zero(t, hostTrust, "pg_hba.conf must reject every non-local connection")
	require.NoError(t, conn.Close(ctx))

	for _, host := range []string{"127.0.0.1", "localhost"} {
		tcp := fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable&connect_timeout=5", host, c.Port)
		if conn, err := pgx.Connect(ctx, tcp); err == nil {
			conn.Close(ctx)
			t.Errorf("a TCP connection to %s:%d as postgres without a password was accepted", host, c.Port)
		}
	}

	st, err := os.Stat(c.Dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "the socket directory must be reachable by its owner only")

	if os.Geteuid() != 0 {
		t.Log("not root: cannot act as another local user; the directory's mode is the check")
		return
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no nobody user to act as another local user: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	psql := filepath.Join(c.BinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		t.Skipf("no psql beside initdb: %v", err)
	}
	cmd := exec.CommandContext(ctx, psql, "-X", "-w", "-d", c.URL("postgres"), "-c", "SELECT 1")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	assert.Error(t, err, "another local user (nobody) connected as the superuser:\n%s", out)
	t.Logf("psql as nobody: %v: %s", err, out)
}
