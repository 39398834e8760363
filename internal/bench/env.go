package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/logbuf"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// env is one bench run's shared state: the server, the template database and a scratch
// directory for CA and credential files.
type env struct {
	o             Options
	admin         string
	template      string
	dir           string
	serverVersion string
	// jsonPrefix + customer id + jsonSuffix is a valid customer snapshot (CUSTOMERMOD payload)
	// for that id, as the capture trigger builds it.
	jsonPrefix, jsonSuffix string
	seq                    int
	dbs                    []string
}

var customerIDField = regexp.MustCompile(`"customerID"\s*:\s*"1"`)

func newEnv(ctx context.Context, o Options, admin string) (*env, error) {
	dir, err := os.MkdirTemp("", "cdc-relay-bench-")
	if err != nil {
		return nil, fmt.Errorf("%w: creating a scratch directory: %w", ErrBench, err)
	}
	e := &env{o: o, admin: admin, dir: dir, template: fmt.Sprintf("cdcbench_tmpl_%d", os.Getpid())}
	if err := e.prepareTemplate(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// prepareTemplate creates the template database: cdc-relay installed (Data Sync disabled) and
// Customers customers, and reads one customer's snapshot to build backlog rows from.
func (e *env) prepareTemplate(ctx context.Context) error {
	aconn, err := pgx.Connect(ctx, e.admin)
	if err != nil {
		return fmt.Errorf("%w: connecting to %s: %w", ErrBench, redact(e.admin), err)
	}
	defer aconn.Close(context.WithoutCancel(ctx))
	if err := aconn.QueryRow(ctx, "SHOW server_version").Scan(&e.serverVersion); err != nil {
		return fmt.Errorf("%w: reading the server version: %w", ErrBench, err)
	}
	e.serverVersion = "PostgreSQL " + e.serverVersion
	if _, err := aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{e.template}.Sanitize()); err != nil {
		return fmt.Errorf("%w: creating the template database: %w", ErrBench, err)
	}
	e.dbs = append(e.dbs, e.template)
	tu, err := withDatabase(e.admin, e.template)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, tu)
	if err != nil {
		return fmt.Errorf("%w: connecting to the template database: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := schema.Install(ctx, conn, schema.Options{}); err != nil {
		return fmt.Errorf("%w: installing cdc-relay: %w", ErrBench, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO customer (customer_id, first_name, last_name)
		SELECT g, 'First' || g, 'Last' || g FROM generate_series(1, $1::int) g`, e.o.Sizes.Customers); err != nil {
		return fmt.Errorf("%w: seeding customers: %w", ErrBench, err)
	}
	var snap string
	if err := conn.QueryRow(ctx, "SELECT data_sync_customer_json(1)::text").Scan(&snap); err != nil {
		return fmt.Errorf("%w: building a customer snapshot: %w", ErrBench, err)
	}
	loc := customerIDField.FindStringIndex(snap)
	if loc == nil {
		return fmt.Errorf("%w: customer snapshot has no \"customerID\":\"1\" field: %.200s", ErrBench, snap)
	}
	e.jsonPrefix = snap[:loc[0]] + `"customerID":"`
	e.jsonSuffix = `"` + snap[loc[1]:]
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return fmt.Errorf("%w: vacuuming the template: %w", ErrBench, err)
	}
	return nil
}

// payload returns the customer snapshot of id.
func (e *env) payload(id string) string { return e.jsonPrefix + id + e.jsonSuffix }

// newDB clones the template into a fresh database and returns its name and URL.
func (e *env) newDB(ctx context.Context, what string) (name, dbURL string, err error) {
	e.seq++
	name = fmt.Sprintf("cdcbench_%d_%d_%s", os.Getpid(), e.seq, what)
	aconn, err := pgx.Connect(ctx, e.admin)
	if err != nil {
		return "", "", fmt.Errorf("%w: connecting to %s: %w", ErrBench, redact(e.admin), err)
	}
	defer aconn.Close(context.WithoutCancel(ctx))
	if _, err := aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{e.template}.Sanitize()); err != nil {
		return "", "", fmt.Errorf("%w: creating database %s: %w", ErrBench, name, err)
	}
	e.dbs = append(e.dbs, name)
	u, err := withDatabase(e.admin, name)
	return name, u, err
}

// close drops every database the run created and the scratch directory.
func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if conn, err := pgx.Connect(ctx, e.admin); err == nil {
		for i := len(e.dbs) - 1; i >= 0; i-- {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{e.dbs[i]}.Sanitize()+" WITH (FORCE)")
		}
		conn.Close(ctx)
	}
	os.RemoveAll(e.dir)
}

func withDatabase(base, db string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("%w: the database URL must be a postgres:// URL (got %s)", ErrBench, redact(base))
	}
	u.Path = "/" + db
	return u.String(), nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the database URL"
	}
	return u.Redacted()
}

// recv is a reference receiver with its CA and credential files, ready for a relay.
type recv struct {
	srv       *receiver.Server
	caFile    string
	credsFile string
	cred      credentials.Credential
}

// newReceiver starts a reference receiver calling onMessage for each accepted message.
func (e *env) newReceiver(onMessage func(receiver.Received), opts ...func(*receiver.Config)) (*recv, error) {
	e.seq++
	cred := credentials.Credential{ClientID: "bench-client", ClientSecret: fmt.Sprintf("bench-secret-%d-%d", os.Getpid(), e.seq)}
	rcfg := receiver.Config{ClientID: cred.ClientID, ClientSecret: cred.ClientSecret, OnMessage: onMessage}
	for _, o := range opts {
		o(&rcfg)
	}
	srv, err := receiver.New(rcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBench, err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBench, err)
	}
	r := &recv{srv: srv, cred: cred,
		caFile:    filepath.Join(e.dir, fmt.Sprintf("ca-%d.pem", e.seq)),
		credsFile: filepath.Join(e.dir, fmt.Sprintf("credentials-%d.json", e.seq))}
	if err := srv.WriteCAFile(r.caFile); err != nil {
		srv.Close()
		return nil, fmt.Errorf("%w: %w", ErrBench, err)
	}
	if err := credentials.Save(r.credsFile, credentials.DefaultMapName, credentials.DefaultKeyName, cred); err != nil {
		srv.Close()
		return nil, fmt.Errorf("%w: saving bench credentials: %w", ErrBench, err)
	}
	return r, nil
}

// enable points Data Sync at the receiver and turns it on.
func enable(ctx context.Context, conn *pgx.Conn, r *recv) error {
	for _, kv := range [][2]string{
		{"DataSyncApiUrl", r.srv.APIURL()}, {"DataSyncTokenUrl", r.srv.TokenURL()},
		{"DataSyncSnapshotMode", "capture"}, {"DataSyncEnabled", "true"},
	} {
		if _, err := conn.Exec(ctx, "UPDATE data_sync_config SET value = $2 WHERE name = $1", kv[0], kv[1]); err != nil {
			return fmt.Errorf("%w: setting %s: %w", ErrBench, kv[0], err)
		}
	}
	return nil
}

// waitSlot waits until a doorbell slot of database db is streaming.
func waitSlot(ctx context.Context, dbURL, db string, timeout time.Duration, exited <-chan struct{}) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		slots, err := cdc.SlotLag(ctx, conn, cdc.DefaultSlotPrefix)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBench, err)
		}
		for _, s := range slots {
			if s.Database == db && s.Active {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("%w: the relay exited before its replication doorbell connected", ErrBench)
		case <-deadline.C:
			return fmt.Errorf("%w: the relay's replication doorbell did not connect within %s", ErrBench, timeout)
		case <-tick.C:
		}
	}
}

// child is the relay running as a child process (`cdc-relay run`).
type child struct {
	cmd    *exec.Cmd
	stderr *logbuf.Buffer
	exited chan struct{}
	err    error
}

// startRelay starts `cdc-relay run` against dbURL, delivering to r.
func (e *env) startRelay(dbURL string, r *recv, messagesPerRequest int, extra ...string) (*child, error) {
	args := append(append([]string(nil), e.o.RelayArgs...), "run",
		"--database-url", dbURL, "--admin-addr", "off",
		"--credentials", r.credsFile, "--ca-file", r.caFile,
		"--messages-per-request", strconv.Itoa(messagesPerRequest),
		"--move-batch", strconv.Itoa(e.o.MoveBatch),
		"--log-level", "warn")
	if e.o.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(e.o.Concurrency))
	}
	args = append(args, extra...) // a repeated flag's last value wins
	cmd := exec.Command(e.o.RelayExe, args...)
	cmd.Env = append(os.Environ(), e.o.RelayEnv...)
	c := &child{cmd: cmd, stderr: &logbuf.Buffer{Max: 1 << 20}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: starting the relay (%s run): %w", ErrBench, e.o.RelayExe, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop asks the relay to stop (SIGTERM) and waits; it kills it after 20 s.
func (c *child) stop() error {
	select {
	case <-c.exited:
		return c.exitErr()
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%w: the relay did not stop within 20 s of SIGTERM", ErrBench)
	}
	return c.exitErr()
}

func (c *child) exitErr() error {
	if c.err != nil {
		return fmt.Errorf("%w: relay exited: %w: %s", ErrBench, c.err, c.stderr.Tail(2000))
	}
	return nil
}

// memory reads the child's peak (VmHWM) and current (VmRSS) resident set size in bytes.
func (c *child) memory() (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, 0, fmt.Errorf("%w: reading the relay's memory: %w", ErrBench, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = v << 10
		case "VmRSS:":
			rss = v << 10
		}
	}
	return hwm, rss, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times; 100 on every Linux port Go
// supports.
const clockTicks = 100

// cpu reads the child's user+system CPU time in seconds.
func (c *child) cpu() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%w: reading the relay's CPU time: %w", ErrBench, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: unexpected /proc stat format", ErrBench)
	}
	f := strings.Fields(s[i+1:])
	// After the command name: state(3) ... utime(14) stime(15), 1-based over the whole line.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: unexpected /proc stat format", ErrBench)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: unexpected /proc stat format", ErrBench)
	}
	return float64(ut+st) / clockTicks, nil
}
