// Package pgcluster starts and stops throwaway PostgreSQL clusters from the local binaries.
//
// It exists so that the tests, `cdc-relay demo` and `cdc-relay bench` all run against a real
// server configured for logical replication, on a fresh machine, without Docker. When the process
// runs as root (as CI does), initdb and pg_ctl run as the postgres user, because PostgreSQL refuses
// to run as root.
//
// A cluster listens on a Unix socket only, in its own directory of mode 0700: no TCP port is
// open, and only the user who started it (and root) can reach the socket. Its superuser
// "postgres" has trust authentication on that socket, so the directory's permissions are what
// keep other local users out.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is returned when initdb/pg_ctl cannot be found on PATH or under
// /usr/lib/postgresql/*/bin.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install them, e.g. apt-get install -y postgresql")

// Options tunes a throwaway cluster. The zero value is a sensible test cluster.
type Options struct {
	// Fsync keeps fsync and full_page_writes on. Off (the default) makes tests fast; benchmarks
	// that measure commit cost turn it on. synchronous_commit stays on either way: with it off,
	// the walsender sees a commit only when the WAL writer flushes (up to 200 ms later), which
	// would hide the replication wake-up's latency.
	Fsync bool
	// Settings are extra postgresql.conf lines, name to value, applied after the defaults.
	Settings map[string]string
	// Port names the socket file (.s.PGSQL.<port>); 0 means 5432. Each cluster has its own
	// socket directory, so clusters never collide.
	Port int
}

// Cluster is a running throwaway cluster. Its superuser is "postgres" with trust authentication
// on the Unix socket in Dir (mode 0700); it opens no TCP port.
type Cluster struct {
	Dir     string // data directory's parent and socket directory (0700); removed by Stop
	DataDir string
	Port    int // names the socket file in Dir
	BinDir  string
	cred    *syscall.Credential
}

// BinDir finds the directory holding initdb and pg_ctl.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	return "", ErrNoBinaries
}

func versionOf(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// Start creates and starts a new cluster with wal_level=logical.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cdc-relay-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	c := &Cluster{Dir: dir, DataDir: filepath.Join(dir, "data"), BinDir: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres user to run PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(dir, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("handing the cluster directory to postgres: %w", err)
		}
	}
	// MkdirTemp made dir 0700 (and root handed it to postgres above): the socket in it is
	// reachable by its owner only, which is what makes local trust safe.
	if err := c.run(ctx, "initdb", "-D", c.DataDir, "-U", "postgres", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		port = 5432
	}
	c.Port = port
	conf := map[string]string{
		"listen_addresses":        "''",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": "'" + dir + "'",
		"wal_level":               "logical",
		"max_wal_senders":         "40",
		"max_replication_slots":   "40",
		"max_connections":         "300",
		"shared_buffers":          "128MB",
		"log_min_messages":        "warning",
		"logging_collector":       "off",
	}
	if !opts.Fsync {
		conf["fsync"] = "off"
		conf["full_page_writes"] = "off"
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	var b strings.Builder
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, conf[k])
	}
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("writing postgresql.conf: %w", err)
	}
	_, err = f.WriteString(b.String())
	f.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("writing postgresql.conf: %w", err)
	}
	if err := c.StartServer(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// StartServer starts (or restarts after StopServer) the postmaster and waits until it accepts
// connections.
func (c *Cluster) StartServer(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.DataDir, "-l", filepath.Join(c.Dir, "server.log"), "-w", "-t", "60", "start")
}

// StopServer stops the postmaster with the given pg_ctl mode ("smart", "fast" or "immediate"),
// keeping the data directory so StartServer can bring it back.
func (c *Cluster) StopServer(ctx context.Context, mode string) error {
	return c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", mode, "-w", "-t", "60", "stop")
}

// Stop stops the server and removes everything the cluster wrote.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.StopServer(ctx, "fast")
	if rmErr := os.RemoveAll(c.Dir); err == nil {
		err = rmErr
	}
	return err
}

// URL returns a connection URL for the named database as the superuser, through the cluster's
// Unix socket (postgres://postgres@/DB?host=DIR&port=PORT), understood by pgx and libpq alike.
func (c *Cluster) URL(database string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + database,
		RawQuery: url.Values{"host": {c.Dir}, "port": {strconv.Itoa(c.Port)}, "sslmode": {"disable"}}.Encode()}
	return u.String()
}

// CreateDatabase creates a database, optionally from a template, and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name, template string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("connecting to create database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// DropDatabase drops a database, terminating its sessions.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// Log returns the server log, for test failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
	return string(b)
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Dir = c.Dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	// pg_ctl's server inherits these; keep them off our pipes so Wait does not block on them.
	logf, err := os.CreateTemp("", "pgcluster-cmd-")
	if err != nil {
		return err
	}
	defer os.Remove(logf.Name())
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
