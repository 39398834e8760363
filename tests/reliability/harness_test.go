// Package reliability holds cdc-relay's fault-injection suite and its bad-input and security
// tests. Every test builds the real binary and runs `cdc-relay run` as a child process against a
// throwaway PostgreSQL cluster and the in-process reference receiver (real HTTPS, real OAuth2).
//
// The quick bad-input tests run with `go test ./tests/reliability/`. The slow fault suite
// (SIGKILLs, database restarts, receiver and token endpoint faults, WAL safety, backlog) needs
// the build tag: `go test -tags fault -timeout 20m ./tests/reliability/`.
//
// CDC_FAULT_SCALE (default 1) scales the sizes: at 1 the crash test commits 20,000 changes
// across 2,000 customers and the backlog holds 200,000 rows. The number of SIGKILLs (20) does not
// scale. CDC_FAULT_REPORT, when set, names the file the JSON summary is written to, and
// CDC_RELAY_BIN a prebuilt binary to test instead of building ./cmd/cdc-relay.
package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/load"
	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// clientID and clientSecret are the OAuth2 client the tests register. The secret is
// distinctive so a scan of everything the daemon printed can prove it never leaked.
const (
	clientID     = "cdc-relay-fault-suite"
	clientSecret = "S3CRET-never-log-me-7f2c9d41b8e6a0"
)

// cluster is the suite's own throwaway PostgreSQL cluster (the database restart tests stop and
// start it), and tmplDB the database with cdc-relay installed that each test clones.
var (
	cluster *pgcluster.Cluster
	tmplDB  = "relay_fault_tmpl"
	dbSeq   atomic.Int64
)

// TestMain starts the cluster, installs cdc-relay into a template database, runs the tests and
// prints the summary table.
func TestMain(m *testing.M) { os.Exit(mainRun(m)) }

func mainRun(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability: starting PostgreSQL:", err)
		return 1
	}
	defer c.Stop()
	cluster = c
	u, err := c.CreateDatabase(ctx, tmplDB, "")
	if err == nil {
		var conn *pgx.Conn
		if conn, err = pgx.Connect(ctx, u); err == nil {
			_, err = schema.Install(ctx, conn, schema.Options{})
			conn.Close(ctx)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability: preparing the template database:", err)
		return 1
	}
	code := m.Run()
	writeSummary()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}

// newDB clones the template into a fresh database for one test, dropped when it ends.
func newDB(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("relay_fault_%d", dbSeq.Add(1))
	u, err := cluster.CreateDatabase(ctx, name, tmplDB)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.DropDatabase(context.Background(), name) })
	return u
}

// scale is CDC_FAULT_SCALE (default 1), read once.
var scale = envScale("CDC_FAULT_SCALE")

// envScale returns the environment variable name as a positive number, or 1 when it is unset
// or not one.
func envScale(name string) float64 {
	if s := os.Getenv(name); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
			return f
		}
	}
	return 1
}

// outage is how long the receiver stays down in TestReceiverFaults: CDC_FAULT_OUTAGE (a Go
// duration), default 12s so the suite fits CI; the issue's minute is CDC_FAULT_OUTAGE=1m.
func outage() time.Duration {
	if v := os.Getenv("CDC_FAULT_OUTAGE"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return 12 * time.Second
}

// scaled returns n × CDC_FAULT_SCALE, at least lo.
func scaled(n, lo int) int { return max(lo, int(float64(n)*scale)) }

// ---------------------------------------------------------------------------------------------
// Summary

// summaryRow is one test's figures in the final table.
type summaryRow struct {
	Test             string `json:"test"`
	ChangesCommitted int    `json:"changes_committed"`
	Delivered        int    `json:"delivered"`
	Lost             int    `json:"lost"`
	Duplicates       int    `json:"duplicates"`
	KillsSurvived    int    `json:"kills_survived"`
	RestartsSurvived int    `json:"restarts_survived"`
	FaultsInjected   int    `json:"faults_injected"`
	BadInputsTried   int    `json:"bad_inputs_tried"`
	MaxRSSKiB        int64  `json:"max_rss_kib"`
	Notes            string `json:"notes,omitempty"`
}

var (
	summaryMu sync.Mutex
	summary   []summaryRow
)

// report adds a row to the summary table.
func report(t *testing.T, r summaryRow) {
	t.Helper()
	r.Test = t.Name()
	summaryMu.Lock()
	summary = append(summary, r)
	summaryMu.Unlock()
	b, _ := json.Marshal(r)
	t.Logf("summary: %s", b)
}

// writeSummary prints the table and writes it as JSON to $CDC_FAULT_REPORT (or a file in the
// temporary directory), printing the path.
func writeSummary() {
	summaryMu.Lock()
	defer summaryMu.Unlock()
	if len(summary) == 0 {
		return
	}
	var tot summaryRow
	tot.Test = "TOTAL"
	for _, r := range summary {
		tot.ChangesCommitted += r.ChangesCommitted
		tot.Delivered += r.Delivered
		tot.Lost += r.Lost
		tot.Duplicates += r.Duplicates
		tot.KillsSurvived += r.KillsSurvived
		tot.RestartsSurvived += r.RestartsSurvived
		tot.FaultsInjected += r.FaultsInjected
		tot.BadInputsTried += r.BadInputsTried
		tot.MaxRSSKiB = max(tot.MaxRSSKiB, r.MaxRSSKiB)
	}
	rows := append(slices.Clone(summary), tot)
	var b strings.Builder
	fmt.Fprintf(&b, "\ncdc-relay fault suite summary (CDC_FAULT_SCALE=%g)\n", scale)
	fmt.Fprintf(&b, "%-42s %9s %9s %5s %6s %6s %8s %7s %7s %9s\n", "test", "committed", "delivered", "lost", "dups", "kills", "restarts", "faults", "badin", "maxRSSKiB")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-42s %9d %9d %5d %6d %6d %8d %7d %7d %9d\n", trunc(r.Test, 42), r.ChangesCommitted, r.Delivered, r.Lost,
			r.Duplicates, r.KillsSurvived, r.RestartsSurvived, r.FaultsInjected, r.BadInputsTried, r.MaxRSSKiB)
	}
	secretScanBytes.mu.Lock()
	scanned := secretScanBytes.n
	secretScanBytes.mu.Unlock()
	fmt.Fprintf(&b, "secret scan: %d bytes of relay output checked for the client secret, \"Bearer \" and access tokens\n", scanned)
	path := os.Getenv("CDC_FAULT_REPORT")
	if path == "" {
		path = filepath.Join(os.TempDir(), fmt.Sprintf("cdc-relay-fault-summary-%d.json", os.Getpid()))
	}
	out, _ := json.MarshalIndent(map[string]any{"scale": scale, "rows": rows, "secret_scan_bytes": scanned}, "", "  ")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		fmt.Fprintf(&b, "writing summary %s: %v\n", path, err)
	} else {
		fmt.Fprintf(&b, "JSON summary written to %s\n", path)
	}
	fmt.Print(b.String())
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ---------------------------------------------------------------------------------------------
// Binary

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// relayBinary builds ./cmd/cdc-relay once per test run and returns its path. CDC_RELAY_BIN,
// when set, names a prebuilt binary to test instead.
func relayBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if b := os.Getenv("CDC_RELAY_BIN"); b != "" {
			binPath = b
			return
		}
		binDir, binErr = os.MkdirTemp("", "cdc-relay-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "cdc-relay")
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/cdc-relay")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// ---------------------------------------------------------------------------------------------
// Environment: database, receiver, credentials

// env is one test's world: its database, the reference receiver with a recorder, a CA file,
// a credential store, and every line the relays it started printed.
type env struct {
	t        *testing.T
	dbURL    string
	rcv      *receiver.Server
	rec      *recorder
	dir      string
	caFile   string
	credFile string

	logMu   sync.Mutex
	allLogs bytes.Buffer // everything every relay of this env printed, for the secret scan
}

// envOptions tunes newEnv.
type envOptions struct {
	// receiverConfig is applied on top of the defaults (client credentials, recorder).
	receiverConfig func(*receiver.Config)
	// onMessage, when set, is called with every message the receiver accepts (samples
	// included), after the env's recorder.
	onMessage func(receiver.Received)
	// noConfig leaves data_sync_config as installed (Data Sync disabled, no URLs).
	noConfig bool
}

// newEnv prepares a database with cdc-relay installed, a running reference receiver, a CA
// file, a credential store (0600), and, unless noConfig, Data Sync enabled towards the receiver.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, dbURL: newDB(t), rec: newRecorder(), dir: t.TempDir()}
	cfg := receiver.Config{ClientID: clientID, ClientSecret: clientSecret, OnMessage: e.rec.add}
	if o.onMessage != nil {
		cfg.OnMessage = func(m receiver.Received) {
			e.rec.add(m)
			o.onMessage(m)
		}
	}
	if o.receiverConfig != nil {
		o.receiverConfig(&cfg)
	}
	rcv, err := receiver.New(cfg)
	require.NoError(t, err)
	require.NoError(t, rcv.Start())
	t.Cleanup(func() { rcv.Close() })
	e.rcv = rcv
	e.caFile = filepath.Join(e.dir, "ca.pem")
	require.NoError(t, rcv.WriteCAFile(e.caFile))
	e.credFile = filepath.Join(e.dir, "config", "cdc-relay", "credentials.json")
	require.NoError(t, credentials.Save(e.credFile, credentials.DefaultMapName, credentials.DefaultKeyName,
		credentials.Credential{ClientID: clientID, ClientSecret: clientSecret}))
	if !o.noConfig {
		e.configure(rcv.APIURL(), rcv.TokenURL())
	}
	t.Cleanup(func() { e.scanSecrets() })
	return e
}

// configure points Data Sync at the given URLs and enables it.
func (e *env) configure(apiURL, tokenURL string) {
	e.t.Helper()
	e.exec(`UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncApiUrl'`, apiURL)
	e.exec(`UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncTokenUrl'`, tokenURL)
	e.exec(`UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
}

// exec runs one statement on the test database.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	pgtest.Exec(e.t, e.dbURL, sql, args...)
}

// conn opens a connection to the test database, closed when the test ends.
func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(context.Background(), e.dbURL)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// queryInt returns a single integer from the test database (fresh connection each time, so it
// works across database restarts).
func (e *env) queryInt(sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int64
	err = c.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// queued counts rows still in the pending and progress queues.
func (e *env) queued() (int64, error) {
	return e.queryInt(`SELECT (SELECT count(*) FROM data_sync_cust_pending_queue) + (SELECT count(*) FROM data_sync_trn_pending_queue)
	     + (SELECT count(*) FROM data_sync_cust_progress_queue) + (SELECT count(*) FROM data_sync_trn_progress_queue)`)
}

// failedRows counts dead letters (failed and held).
func (e *env) failedRows() int64 {
	n, err := e.queryInt(`SELECT (SELECT count(*) FROM data_sync_cust_failed) + (SELECT count(*) FROM data_sync_trn_failed)`)
	require.NoError(e.t, err)
	return n
}

// createCustomers inserts n customers while capture is disabled (so they queue nothing) and
// returns their ids.
func (e *env) createCustomers(n int) []int64 {
	e.t.Helper()
	ctx := context.Background()
	c := e.conn()
	var was string
	require.NoError(e.t, c.QueryRow(ctx, `SELECT value FROM data_sync_config WHERE name = 'DataSyncEnabled'`).Scan(&was))
	_, err := c.Exec(ctx, `UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`)
	require.NoError(e.t, err)
	rows, err := c.Query(ctx, `INSERT INTO customer (first_name, last_name) SELECT 'F' || g, 'L' || g FROM generate_series(1, $1) g RETURNING customer_id`, n)
	require.NoError(e.t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(e.t, err)
	_, err = c.Exec(ctx, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncEnabled'`, was)
	require.NoError(e.t, err)
	return ids
}

// appendLog keeps a relay's output for the secret scan.
func (e *env) appendLog(b []byte) {
	e.logMu.Lock()
	e.allLogs.Write(b)
	e.logMu.Unlock()
}

// scanSecrets fails the test if anything a relay printed contains the client secret, an
// access token ("Bearer ") or the Authorization header.
func (e *env) scanSecrets() {
	e.logMu.Lock()
	logs := e.allLogs.String()
	e.logMu.Unlock()
	if logs == "" {
		return
	}
	for _, bad := range []string{clientSecret, "Bearer ", "access_token\":\"", "whsec_", "PRIVATE KEY"} {
		if i := strings.Index(logs, bad); i >= 0 {
			e.t.Errorf("the relay printed %q (secret or token material) in its logs: ...%s...", bad, excerpt(logs, i))
		}
	}
	secretScanBytes.Add(int64(len(logs)))
}

var secretScanBytes syncCounter

type syncCounter struct {
	mu sync.Mutex
	n  int64
}

func (c *syncCounter) Add(d int64) { c.mu.Lock(); c.n += d; c.mu.Unlock() }

func excerpt(s string, i int) string {
	lo, hi := max(0, i-80), min(len(s), i+80)
	return s[lo:hi]
}

// ---------------------------------------------------------------------------------------------
// Recorder

// recorder keeps what the receiver accepted, in arrival order.
type recorder struct {
	mu     sync.Mutex
	order  []string       // uniqueIds in arrival order, duplicates included
	first  map[string]int // uniqueId -> index of its first arrival in order
	counts map[string]int
	notify chan struct{}
	sizes  map[string]int // payload length of each uniqueId's first arrival
}

func newRecorder() *recorder {
	return &recorder{first: map[string]int{}, counts: map[string]int{}, sizes: map[string]int{}, notify: make(chan struct{}, 1)}
}

func (r *recorder) add(m receiver.Received) {
	if m.Sample {
		return
	}
	r.mu.Lock()
	id := m.Message.UniqueID
	if _, ok := r.first[id]; !ok {
		r.first[id] = len(r.order)
		r.sizes[id] = len(m.Message.Payload)
	}
	r.order = append(r.order, id)
	r.counts[id]++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// has reports whether every id arrived at least once.
func (r *recorder) hasAll(ids []int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.first) < len(ids) {
		return false // cheap: cannot hold them all yet
	}
	for _, id := range ids {
		if _, ok := r.first[strconv.FormatInt(id, 10)]; !ok {
			return false
		}
	}
	return true
}

// missing returns the ids that never arrived.
func (r *recorder) missing(ids []int64) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, id := range ids {
		if _, ok := r.first[strconv.FormatInt(id, 10)]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// got reports whether id arrived.
func (r *recorder) got(id int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.first[strconv.FormatInt(id, 10)]
	return ok
}

// stats returns the number of distinct ids and of duplicate arrivals.
func (r *recorder) stats() (unique, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first), len(r.order) - len(r.first)
}

// change is one committed queue row: its id and its customer (or transaction) key.
type change struct {
	ID  int64
	Key string
}

// verdict checks committed changes against what arrived: none lost, and each key's first
// deliveries in queue-id order.
type verdict struct {
	Committed, Delivered, Lost, Duplicates, OrderViolations int
	LostIDs                                                 []int64
	OrderExamples                                           []string
}

func (r *recorder) verify(changes []change) verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := verdict{Committed: len(changes)}
	byKey := map[string][]change{}
	for _, c := range changes {
		idx, ok := r.first[strconv.FormatInt(c.ID, 10)]
		if !ok {
			v.Lost++
			if len(v.LostIDs) < 20 {
				v.LostIDs = append(v.LostIDs, c.ID)
			}
			continue
		}
		_ = idx
		v.Delivered++
		v.Duplicates += r.counts[strconv.FormatInt(c.ID, 10)] - 1
		byKey[c.Key] = append(byKey[c.Key], c)
	}
	for key, cs := range byKey {
		sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
		for i := 1; i < len(cs); i++ {
			a, b := r.first[strconv.FormatInt(cs[i-1].ID, 10)], r.first[strconv.FormatInt(cs[i].ID, 10)]
			if a > b {
				v.OrderViolations++
				if len(v.OrderExamples) < 10 {
					v.OrderExamples = append(v.OrderExamples, fmt.Sprintf("key %s: id %d first arrived after id %d", key, cs[i-1].ID, cs[i].ID))
				}
			}
		}
	}
	return v
}

// ---------------------------------------------------------------------------------------------
// Relay process

// relayProc is one `cdc-relay run` child process.
type relayProc struct {
	e    *env
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done

	mu     sync.Mutex
	out    bytes.Buffer
	maxRSS int64 // KiB
}

// defaultRelayArgs are the flags every fault run uses: quick sweeps and retries so recovery is
// fast, admin server off (several relays may run at once on one machine), JSON logs.
func (e *env) defaultRelayArgs() []string {
	return []string{"run", "--database-url", e.dbURL, "--ca-file", e.caFile, "--credentials", e.credFile,
		"--sweep-interval", "500ms", "--backoff-min", "20ms", "--backoff-max", "500ms",
		"--admin-addr", "off", "--log-format", "json", "--request-timeout", "5s"}
}

// startRelay starts `cdc-relay run` with the default flags plus extra (later flags win).
func (e *env) startRelay(extra ...string) *relayProc {
	return e.startRelayArgs(append(e.defaultRelayArgs(), extra...)...)
}

// startRelayArgs starts the binary with exactly args. Its environment drops any credential
// override so the credential store is what is tested.
func (e *env) startRelayArgs(args ...string) *relayProc {
	e.t.Helper()
	bin := relayBinary(e.t)
	cmd := exec.Command(bin, args...)
	var environ []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CDC_RELAY_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		environ = append(environ, kv)
	}
	cmd.Env = append(environ, "HOME="+e.dir, "XDG_CONFIG_HOME="+filepath.Join(e.dir, "config"))
	p := &relayProc{e: e, cmd: cmd, done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	require.NoError(e.t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	require.NoError(e.t, cmd.Start())
	pw.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewReader(pr)
		for {
			line, err := sc.ReadBytes('\n')
			if len(line) > 0 {
				p.mu.Lock()
				p.out.Write(line)
				p.mu.Unlock()
				e.appendLog(line)
			}
			if err != nil {
				pr.Close()
				return
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		<-readDone
		close(p.done)
	}()
	go p.sampleRSS()
	e.t.Cleanup(func() { p.kill() })
	return p
}

// sampleRSS reads VmRSS from /proc at once and then every 50 ms until the process exits.
func (p *relayProc) sampleRSS() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	path := fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
	for first := true; ; first = false {
		if !first {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					p.mu.Lock()
					p.maxRSS = max(p.maxRSS, kb)
					p.mu.Unlock()
				}
			}
		}
	}
}

// MaxRSS is the largest VmRSS seen so far, in KiB.
func (p *relayProc) MaxRSS() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxRSS
}

// output returns everything the process printed so far.
func (p *relayProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// exited reports whether the process has ended.
func (p *relayProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *relayProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits; it fails the test if the process does not end in 30 s.
func (p *relayProc) stop() {
	p.e.t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.e.t.Errorf("relay did not stop within 30 s of SIGTERM; output:\n%s", tail(p.output(), 4000))
		p.kill()
	}
}

// wait waits for the process to exit on its own (a refusal at start-up) and returns its output.
func (p *relayProc) wait(d time.Duration) string {
	p.e.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.e.t.Fatalf("relay still running after %s; expected it to refuse; output:\n%s", d, tail(p.output(), 4000))
	}
	return p.output()
}

// waitLog waits until the relay printed a line containing every one of subs.
func (p *relayProc) waitLog(d time.Duration, subs ...string) string {
	p.e.t.Helper()
	var found string
	ok := waitFor(d, func() bool {
		for _, line := range strings.Split(p.output(), "\n") {
			all := true
			for _, s := range subs {
				if !strings.Contains(line, s) {
					all = false
					break
				}
			}
			if all {
				found = line
				return true
			}
		}
		return false
	})
	if !ok {
		p.e.t.Fatalf("no log line with %q within %s; output:\n%s", subs, d, tail(p.output(), 6000))
	}
	return found
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitFor polls cond every 20 ms until it holds or d passes (a condition wait, not a sleep).
func waitFor(d time.Duration, cond func() bool) bool { return waitEvery(d, 20*time.Millisecond, cond) }

// waitEvery polls cond every interval until it holds or d passes.
func waitEvery(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// waitDrained waits until every id arrived and nothing is left in the queues.
func (e *env) waitDrained(p *relayProc, ids []int64, d time.Duration) {
	e.t.Helper()
	// Poll gently: checking 200k ids holds the recorder's lock, which the receiver needs.
	ok := waitEvery(d, 200*time.Millisecond, func() bool {
		if u, _ := e.rec.stats(); u < len(ids) {
			return false
		}
		if n, err := e.queued(); err != nil || n != 0 {
			return false
		}
		return e.rec.hasAll(ids)
	})
	if !ok {
		miss := e.rec.missing(ids)
		n, _ := e.queued()
		out := ""
		if p != nil {
			out = tail(p.output(), 6000)
		}
		e.t.Fatalf("not drained within %s: %d of %d ids missing (first %v), %d rows still queued, %d dead letters; relay output:\n%s",
			d, len(miss), len(ids), head(miss, 10), n, e.failedRows(), out)
	}
}

func head(ids []int64, n int) []int64 {
	if len(ids) > n {
		return ids[:n]
	}
	return ids
}

// ---------------------------------------------------------------------------------------------
// Writer

// writer records what load.CapturedRenames committed: each transaction renames customers
// through the capture triggers and reads back the queue rows it produced (after firing the
// deferred triggers with SET CONSTRAINTS ALL IMMEDIATE). One writer accumulates over several
// runs.
type writer struct {
	mu        sync.Mutex
	committed []change
	uncertain []change // the COMMIT failed or its outcome is unknown (database restarts)
	errors    int
}

// run commits on one session until total changes were committed or ctx ends, perTx distinct
// customers per transaction, walking customers from start (reconnecting after failures).
func (w *writer) run(ctx context.Context, url string, customers []int64, total, perTx, start int) {
	w.runWorkers(ctx, url, customers, total, perTx, start, 1)
}

// runWorkers is run with several sessions at once, each walking customers from its own start.
func (w *writer) runWorkers(ctx context.Context, url string, customers []int64, total, perTx, start, workers int) {
	g := load.New(load.Config{DatabaseURL: url, Mix: load.CapturedRenames(perTx), Rate: load.Unlimited, Workers: workers,
		IDs: customers, Start: int64(start), KeepGoing: true, OnCommit: w.record,
		Done: func() bool { return w.count() >= total }})
	err := g.Run(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errors += int(g.Stats().Failures())
	if err != nil {
		w.errors++
	}
}

// record keeps the queue rows of one COMMIT: committed, or uncertain when the COMMIT failed.
func (w *writer) record(c load.Commit) {
	got := make([]change, len(c.Rows))
	for i, r := range c.Rows {
		got[i] = change{ID: r.ID, Key: r.Key}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Err != nil {
		w.uncertain = append(w.uncertain, got...)
	} else {
		w.committed = append(w.committed, got...)
	}
}

// count returns how many changes were committed so far.
func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed)
}

// ids returns the committed queue ids.
func (w *writer) ids() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int64, len(w.committed))
	for i, c := range w.committed {
		out[i] = c.ID
	}
	return out
}

// resolveUncertain moves uncertain changes whose rows exist (queued, or already delivered)
// into committed: a COMMIT whose answer was lost may still have committed.
func (w *writer) resolveUncertain(e *env) (resolved int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.uncertain {
		n, err := e.queryInt(`SELECT count(*) FROM (SELECT id FROM data_sync_cust_pending_queue UNION ALL SELECT id FROM data_sync_cust_progress_queue
			UNION ALL SELECT id FROM data_sync_cust_failed) q WHERE id = $1`, c.ID)
		if (err == nil && n > 0) || e.rec.got(c.ID) {
			w.committed = append(w.committed, c)
			resolved++
		}
	}
	w.uncertain = nil
	return resolved
}

// ---------------------------------------------------------------------------------------------
// Certificates

// testCA is a throwaway certificate authority for TLS failure tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cdc-relay fault suite CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a leaf certificate and key for the given hosts and validity into dir and
// returns their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, hosts []string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile
}

// numCPU is reported in the summary notes.
var numCPU = runtime.NumCPU()

// auditQueues records every insert into, update of and delete from the six queue tables in
// data_sync_test_audit (with the backend, its application_name and transaction), so that a
// test can tell where a key's rows went when one never arrives (auditTrail).
func (e *env) auditQueues() {
	e.t.Helper()
	e.exec(`CREATE TABLE data_sync_test_audit (
		at timestamptz NOT NULL DEFAULT clock_timestamp(), tbl text, op text, id bigint, unique_id text,
		action text, has_json boolean, pid int NOT NULL DEFAULT pg_backend_pid(),
		xid xid8 NOT NULL DEFAULT pg_current_xact_id(), app text DEFAULT current_setting('application_name'))`)
	e.exec(`CREATE FUNCTION data_sync_test_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
		SET search_path = pg_catalog, public, pg_temp AS $$
	BEGIN
		IF TG_OP = 'DELETE' THEN
			INSERT INTO public.data_sync_test_audit (tbl, op, id, unique_id, action, has_json)
			VALUES (TG_TABLE_NAME, TG_OP, OLD.id, OLD.unique_id, OLD.action, OLD.json_object IS NOT NULL);
			RETURN OLD;
		END IF;
		INSERT INTO public.data_sync_test_audit (tbl, op, id, unique_id, action, has_json)
		VALUES (TG_TABLE_NAME, TG_OP, NEW.id, NEW.unique_id, NEW.action, NEW.json_object IS NOT NULL);
		RETURN NEW;
	END $$`)
	for _, q := range []string{"cust", "trn"} {
		for _, stage := range []string{"pending_queue", "progress_queue", "failed"} {
			e.exec(`CREATE TRIGGER data_sync_test_audit AFTER INSERT OR UPDATE OR DELETE ON data_sync_` + q + `_` + stage +
				` FOR EACH ROW EXECUTE FUNCTION data_sync_test_audit()`)
		}
	}
}

// auditTrail lists what auditQueues recorded for one key, oldest first.
func (e *env) auditTrail(key string) string {
	e.t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return "(no audit: " + err.Error() + ")"
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT format('%s %s %s id=%s action=%s json=%s pid=%s xid=%s app=%s',
		at, tbl, op, id, action, has_json, pid, xid, app) FROM data_sync_test_audit WHERE unique_id = $1 ORDER BY at`, key)
	if err != nil {
		return "(no audit: " + err.Error() + ")"
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "(no audit: " + err.Error() + ")"
	}
	return strings.Join(lines, "\n")
}
