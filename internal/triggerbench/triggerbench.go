// Package triggerbench measures what the capture triggers cost the CE workload: pgbench TPS of
// the same statements with capture on (JSON built by the trigger, or key only in 'move' mode),
// with Data Sync disabled, with the triggers uninstalled, and a "floor" where the statement
// inserts an equivalent queue row itself, without any trigger.
//
// Every (workload, variant) pair runs in its own fresh database, so queue growth and table
// bloat of one run never slow another.
//
// The pgbench scripts (Script) are this measurement's harness, not a second generator of CE
// activity (that is internal/load): pgbench runs them without a Go client in the way, and their
// statements stay fixed so that the figures compare across variants and across runs.
package triggerbench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// Variants, in report order.
const (
	VariantCapture = "capture" // DataSyncEnabled true, DataSyncSnapshotMode capture
	VariantMove    = "move"    // DataSyncEnabled true, DataSyncSnapshotMode move
	VariantOff     = "off"     // DataSyncEnabled false
	VariantAbsent  = "absent"  // capture triggers uninstalled
	VariantFloor   = "floor"   // no triggers; the script inserts the queue row itself
	// VariantBulkMove is capture mode with DataSyncBulkSnapshotMode move; measured for
	// bulk_segment only, the one workload with statements touching more than 64 customers.
	VariantBulkMove = "bulk-move"
)

// Variants lists every variant Run measures.
var Variants = []string{VariantCapture, VariantBulkMove, VariantMove, VariantOff, VariantAbsent, VariantFloor}

// applies tells whether variant v means something for workload wl.
func applies(wl, v string) bool { return v != VariantBulkMove || wl == "bulk_segment" }

// Workloads lists every workload Run measures.
var Workloads = []string{"customer_update", "card_segment", "posted_transaction", "bulk_segment"}

// ErrNoPgbench is returned when the pgbench binary cannot be found.
var ErrNoPgbench = errors.New("pgbench not found: install the PostgreSQL client tools (apt-get install -y postgresql-client) or set Options.Pgbench")

// Options tunes Run.
type Options struct {
	// AdminURL is a superuser URL of an existing server; each run creates and drops its own
	// database there. Empty starts a throwaway cluster with fsync on.
	AdminURL string
	// Duration of each pgbench run (default 10s; 1s in Quick mode).
	Duration time.Duration
	// Clients is pgbench's -c (default 4).
	Clients int
	// Quick uses a small data set (2,000 customers, bulk statements of 1,000) for smoke tests.
	Quick bool
	// Pgbench is the pgbench binary (default: PATH, then /usr/bin/pgbench).
	Pgbench string
	// Workloads limits the run to these workloads (default: every one of Workloads).
	Workloads []string
	// Variants limits the run to these variants (default: every one of Variants); "absent",
	// the ratios' denominator, is always measured.
	Variants []string
	// Rounds repeats every variant this many times, interleaved (each round in a rotated
	// order), and reports the median TPS and the median of the per-round ratios, so a noisy
	// neighbour on a shared machine skews one sample rather than one variant (default 1).
	Rounds int
}

// Result is one measured (workload, variant) pair.
type Result struct {
	Workload string
	Variant  string
	TPS      float64
	// Ratio is TPS divided by the workload's "absent" TPS.
	Ratio float64
}

// Report holds every result, workloads in Workloads order and variants in Variants order.
type Report struct {
	Results   []Result
	Customers int
	BulkRows  int
	Duration  time.Duration
	Clients   int
	Rounds    int
}

// median returns the middle value (the mean of the two middle values for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// Get returns the result of one pair.
func (r Report) Get(workload, variant string) (Result, bool) {
	for _, x := range r.Results {
		if x.Workload == workload && x.Variant == variant {
			return x, true
		}
	}
	return Result{}, false
}

// String formats the report as a table of TPS and ratio to "absent".
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "customers=%d bulk_rows=%d duration=%s clients=%d rounds=%d (median of interleaved rounds)\n", r.Customers, r.BulkRows, r.Duration, r.Clients, r.Rounds)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "workload\t")
	for _, v := range Variants {
		fmt.Fprintf(w, "%s\t", v)
	}
	fmt.Fprintln(w)
	for _, wl := range Workloads {
		if _, ok := r.Get(wl, VariantAbsent); !ok {
			continue
		}
		fmt.Fprintf(w, "%s\t", wl)
		for _, v := range Variants {
			if x, ok := r.Get(wl, v); ok {
				fmt.Fprintf(w, "%.1f (%.2f)\t", x.TPS, x.Ratio)
			} else {
				fmt.Fprint(w, "-\t")
			}
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return b.String()
}

// Run measures every workload under every variant.
func Run(ctx context.Context, opts Options) (Report, error) {
	if opts.Duration <= 0 {
		opts.Duration = 10 * time.Second
		if opts.Quick {
			opts.Duration = time.Second
		}
	}
	if opts.Clients <= 0 {
		opts.Clients = 4
	}
	pgbench, err := findPgbench(opts.Pgbench)
	if err != nil {
		return Report{}, err
	}
	customers, bulk := 20000, 10000
	if opts.Quick {
		customers, bulk = 2000, 1000
	}
	// bulk_segment gives every client its own customers (see Script), so the data set holds at
	// least one bulk range per client.
	if n := opts.Clients * bulk; n > customers {
		customers = n
	}
	workloads := Workloads
	if len(opts.Workloads) > 0 {
		workloads = opts.Workloads
	}
	rep := Report{Customers: customers, BulkRows: bulk, Duration: opts.Duration, Clients: opts.Clients}
	admin := opts.AdminURL
	if admin == "" {
		c, err := pgcluster.Start(ctx, pgcluster.Options{Fsync: true})
		if err != nil {
			return rep, fmt.Errorf("starting a throwaway PostgreSQL cluster: %w", err)
		}
		defer c.Stop()
		admin = c.URL("postgres")
	}
	dir, err := os.MkdirTemp("", "triggerbench-")
	if err != nil {
		return rep, fmt.Errorf("creating a directory for pgbench scripts: %w", err)
	}
	defer os.RemoveAll(dir)
	// The data set is loaded once into a template; every run copies it (CREATE DATABASE ...
	// TEMPLATE) and sets its variant.
	tpl := fmt.Sprintf("tb_%d_template", os.Getpid())
	tplURL, dropTpl, err := createDB(ctx, admin, tpl, "")
	if err != nil {
		return rep, err
	}
	defer dropTpl()
	if err := seed(ctx, tplURL, customers); err != nil {
		return rep, err
	}
	rounds := max(1, opts.Rounds)
	variants := Variants
	if len(opts.Variants) > 0 {
		variants = []string{VariantAbsent}
		for _, v := range opts.Variants {
			if v != VariantAbsent {
				variants = append(variants, v)
			}
		}
	}
	for _, wl := range workloads {
		tps := map[string][]float64{}
		ratios := map[string][]float64{}
		for round := 0; round < rounds; round++ {
			got := map[string]float64{}
			for i := range variants {
				v := variants[(i+round)%len(variants)]
				if !applies(wl, v) {
					continue
				}
				t, err := runOne(ctx, admin, tpl, pgbench, dir, wl, v, customers, bulk, opts)
				if err != nil {
					return rep, fmt.Errorf("workload %s, variant %s: %w", wl, v, err)
				}
				got[v] = t
				tps[v] = append(tps[v], t)
			}
			for _, v := range variants {
				if _, ok := got[v]; ok && got[VariantAbsent] > 0 {
					ratios[v] = append(ratios[v], got[v]/got[VariantAbsent])
				}
			}
		}
		for _, v := range variants {
			if !applies(wl, v) {
				continue
			}
			rep.Results = append(rep.Results, Result{Workload: wl, Variant: v, TPS: median(tps[v]), Ratio: median(ratios[v])})
		}
	}
	rep.Rounds = rounds
	return rep, nil
}

func findPgbench(p string) (string, error) {
	if p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/pgbench"); err == nil {
		return "/usr/bin/pgbench", nil
	}
	// Beside the server binaries (Debian's /usr/lib/postgresql/N/bin), where initdb is.
	if dir, err := pgcluster.BinDir(); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "pgbench")); err == nil {
			return filepath.Join(dir, "pgbench"), nil
		}
	}
	return "", ErrNoPgbench
}

func dbURL(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("parsing admin URL: give a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// createDB creates a fresh database called name (dropping a leftover one first), a copy of the
// database template unless that is empty, and returns its URL and a function that drops it.
func createDB(ctx context.Context, admin, name, template string) (string, func(), error) {
	aconn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connecting as admin: %w", err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	drop := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		aconn.Exec(dctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
		aconn.Close(dctx)
	}
	if _, err := aconn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		drop()
		return "", nil, fmt.Errorf("dropping database %s: %w", name, err)
	}
	create := "CREATE DATABASE " + ident
	if template != "" {
		create += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := aconn.Exec(ctx, create); err != nil {
		drop()
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	url, err := dbURL(admin, name)
	if err != nil {
		drop()
		return "", nil, err
	}
	return url, drop, nil
}

func runOne(ctx context.Context, admin, tpl, pgbench, dir, wl, variant string, customers, bulk int, opts Options) (float64, error) {
	runURL, drop, err := createDB(ctx, admin, fmt.Sprintf("tb_%d_%s_%s", os.Getpid(), wl, variant), tpl)
	if err != nil {
		return 0, err
	}
	defer drop()
	if err := prepare(ctx, runURL, variant); err != nil {
		return 0, err
	}
	script := filepath.Join(dir, wl+"_"+variant+".sql")
	if err := os.WriteFile(script, []byte(Script(wl, variant == VariantFloor, customers, bulk, opts.Clients)), 0o644); err != nil {
		return 0, fmt.Errorf("writing pgbench script: %w", err)
	}
	return RunPgbench(ctx, pgbench, runURL, script, opts.Clients, opts.Duration)
}

// FindPgbench returns the pgbench binary: p when set, else from PATH, /usr/bin or beside the
// server binaries (ErrNoPgbench when there is none).
func FindPgbench(p string) (string, error) { return findPgbench(p) }

// RunPgbench runs the pgbench script file against url with clients clients for d (whole
// seconds, at least one) and returns its TPS.
func RunPgbench(ctx context.Context, pgbench, url, script string, clients int, d time.Duration) (float64, error) {
	jobs := min(clients, 2)
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, pgbench, "-n", "-f", script, "-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(jobs), "-T", strconv.Itoa(secs), url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	return ParseTPS(string(out))
}

var tpsRE = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)

// ParseTPS returns the "tps = N" figure of pgbench's output.
func ParseTPS(out string) (float64, error) {
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no \"tps = \" line in pgbench output:\n%s", out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing tps %q: %w", m[1], err)
	}
	return v, nil
}

// seed installs cdc-relay (Data Sync disabled) and loads the data set.
func seed(ctx context.Context, url string, customers int) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := schema.Install(ctx, conn, schema.Options{}); err != nil {
		return fmt.Errorf("installing: %w", err)
	}
	seed := fmt.Sprintf(`
		INSERT INTO customer (customer_id, first_name, last_name) SELECT g, 'First' || g, 'Last' || g FROM generate_series(1, %[1]d) g;
		INSERT INTO customer_phone (customer_id, phone_number) SELECT g, '555-' || g FROM generate_series(1, %[1]d) g;
		INSERT INTO customer_email (customer_id, email_address) SELECT g, 'c' || g || '@example.com' FROM generate_series(1, %[1]d) g;
		INSERT INTO customer_address (customer_id, address_line1, city) SELECT g, g || ' Main St', 'Springfield' FROM generate_series(1, %[1]d) g;
		INSERT INTO card (card_number, customer_id, status) SELECT 'C' || g, g, 'ACTIVE' FROM generate_series(1, %[1]d) g;
		INSERT INTO segment (segment_id, segment_name) VALUES (1, 'All'), (2, 'Toggled');
		SELECT setval('segment_id_seq', 100);
		INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 1 FROM generate_series(1, %[1]d) g;
		INSERT INTO customer_segment (customer_id, segment_id) SELECT g, 2 FROM generate_series(1, %[1]d, 2) g;
		INSERT INTO retail_transaction (retail_transaction_id, customer_id, business_date, begin_datetime, end_datetime, total) SELECT 'S' || g, g, current_date - (g %% 400), now(), now(), 10 FROM generate_series(1, %[1]d) g;
		INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_type_code, quantity, extended_amount) SELECT 'S' || g, 1, 'Sale', 1, 10 FROM generate_series(1, %[1]d) g;
		CREATE SEQUENCE bench_trn_seq;
		VACUUM ANALYZE;`, customers)
	for _, stmt := range strings.Split(seed, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("loading data: %w", err)
		}
	}
	return nil
}

// prepare sets the variant's configuration on a copy of the seeded database.
func prepare(ctx context.Context, url, variant string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	switch variant {
	case VariantCapture, VariantMove, VariantBulkMove:
		mode := "capture"
		if variant == VariantMove {
			mode = "move"
		}
		if variant == VariantBulkMove {
			if _, err := conn.Exec(ctx, `UPDATE data_sync_config SET value = 'move' WHERE name = 'DataSyncBulkSnapshotMode'`); err != nil {
				return fmt.Errorf("setting the bulk snapshot mode: %w", err)
			}
		}
		if _, err := conn.Exec(ctx, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`); err != nil {
			return fmt.Errorf("enabling Data Sync: %w", err)
		}
		if _, err := conn.Exec(ctx, `UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncSnapshotMode'`, mode); err != nil {
			return fmt.Errorf("setting snapshot mode: %w", err)
		}
	case VariantAbsent, VariantFloor:
		if _, err := schema.Uninstall(ctx, conn, schema.UninstallOptions{}); err != nil {
			return fmt.Errorf("uninstalling the triggers: %w", err)
		}
	}
	// Every variant starts right after a checkpoint, so each pays the same full-page writes
	// instead of whichever run a checkpoint happens to land in.
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpointing before the run: %w", err)
	}
	return nil
}

// Script returns the pgbench script of a workload; floor adds the queue row(s) a trigger would
// have written, by hand. Every variant but floor runs the identical statements.
//
// Every customer starts with one posted transaction. Tables that are empty when the data set
// is analyzed make the foreign-key checks keep a sequential scan in their cached plans, and the
// workload then slows down as the table fills: posted_transaction into an empty
// retail_transaction fell from 4,600 to 1,050 TPS within 8 s.
//
// card_segment toggles a customer's membership of segment 2, which half the customers start
// in: with segment 2 empty when the data set is analyzed, the planner deletes through the
// segment_id index and every variant slows down as the segment fills (measured: 4,700 to 1,100
// TPS within 10 s), which made the ratios depend on how fast each variant filled it.
//
// bulk_segment adds bulk customers to a new segment in one statement. Each pgbench client uses
// its own range of customers (client c: customers c*bulk+1 .. (c+1)*bulk, needing
// customers >= clients*bulk), as separate segment jobs would: with shared ranges, four clients
// key-share-lock the same 10,000 customer rows for their foreign keys at once. (Measured: the
// separate ranges alone did not remove the capture variant's collapse to 0.4 TPS; the
// set-based builder did.)
func Script(workload string, floor bool, customers, bulk, clients int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\\set id random(1, %d)\n", customers)
	switch workload {
	case "customer_update":
		b.WriteString("BEGIN;\nUPDATE customer SET first_name = 'F' || :id, last_name = 'L' || random() WHERE customer_id = :id;\n")
		if floor {
			b.WriteString("INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) SELECT :id::text, 'UPDATE', json_build_object('customerID', :id::text, 'name', first_name) FROM customer WHERE customer_id = :id;\n")
		}
		b.WriteString("COMMIT;\n")
	case "card_segment":
		b.WriteString("BEGIN;\nUPDATE card SET expiration_date = current_date + (random() * 1000)::int WHERE card_number = 'C' || :id;\n")
		b.WriteString("DELETE FROM customer_segment WHERE customer_id = :id AND segment_id = 2;\n")
		b.WriteString("INSERT INTO customer_segment (customer_id, segment_id) VALUES (:id, 2);\n")
		if floor {
			b.WriteString("INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) SELECT :id::text, 'UPDATE', json_build_object('customerID', :id::text, 'name', first_name) FROM customer WHERE customer_id = :id;\n")
		}
		b.WriteString("COMMIT;\n")
	case "posted_transaction":
		b.WriteString("BEGIN;\n")
		b.WriteString("INSERT INTO retail_transaction (retail_transaction_id, customer_id, begin_datetime, end_datetime, operator_id, retail_location_id, subtotal, tax_total, total, transaction_sequence, workstation_id) VALUES ('B' || nextval('bench_trn_seq'), :id, now(), now(), '101', '99901', 20, 1.5, 21.5, currval('bench_trn_seq'), 2);\n")
		b.WriteString("INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_type_code, quantity, extended_amount, begin_date_timestamp, end_date_timestamp) VALUES ('B' || currval('bench_trn_seq'), 1, 'Sale', 2, 20, now(), now()), ('B' || currval('bench_trn_seq'), 2, 'Tender', 1, 21.5, now(), now()), ('B' || currval('bench_trn_seq'), 3, 'Tax', 1, 1.5, now(), now());\n")
		if floor {
			b.WriteString("INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object) VALUES ('B' || currval('bench_trn_seq'), 'CREATE', json_build_object('retailTransactionId', 'B' || currval('bench_trn_seq')));\n")
			b.WriteString("INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES (:id::text, 'UPDATE', json_build_object('customerID', :id::text));\n")
		}
		b.WriteString("COMMIT;\n")
	case "bulk_segment":
		if clients < 1 {
			clients = 1
		}
		fmt.Fprintf(&b, "\\set lo (:client_id %% %d) * %d + 1\n", clients, bulk)
		b.WriteString("BEGIN;\nINSERT INTO segment (segment_name) VALUES ('bulk') ;\n")
		fmt.Fprintf(&b, "INSERT INTO customer_segment (customer_id, segment_id) SELECT customer_id, currval('segment_id_seq') FROM customer WHERE customer_id BETWEEN :lo AND :lo + %d;\n", bulk-1)
		if floor {
			fmt.Fprintf(&b, "INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) SELECT customer_id::text, 'UPDATE', json_build_object('customerID', customer_id::text, 'name', first_name) FROM customer WHERE customer_id BETWEEN :lo AND :lo + %d;\n", bulk-1)
		}
		b.WriteString("COMMIT;\n")
	}
	return b.String()
}
