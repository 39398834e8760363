package tests

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/relay"
)

// readme returns the README and the lines of the section under heading (up to the next "## ").
func readme(t *testing.T, heading string) (all string, section []string) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	all = string(b)
	in := false
	for _, l := range strings.Split(all, "\n") {
		if strings.HasPrefix(l, "## ") {
			in = l == "## "+heading
			continue
		}
		if in {
			section = append(section, l)
		}
	}
	require.NotEmpty(t, section, "README has no section %q", heading)
	return all, section
}

// TestSettingsAreDefinedOnce: relay.SettingDefs is the one table of settings. The install (its
// validation trigger and the rows it stores) and the README's table must agree with it.
func TestSettingsAreDefinedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Pool(t, pgtest.NewDB(t))
	want := map[string]string{}
	var names []string
	for _, d := range relay.SettingDefs {
		want[d.Name] = d.Default
		names = append(names, d.Name)
	}

	// The rows a fresh install stores, with their defaults.
	rows, err := db.Query(ctx, `SELECT name, coalesce(value, '') FROM data_sync_config`)
	require.NoError(t, err)
	installed := map[string]string{}
	for rows.Next() {
		var n, v string
		require.NoError(t, rows.Scan(&n, &v))
		installed[n] = v
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, installed, "install's default rows differ from relay.SettingDefs")

	// The names the validation trigger knows.
	var src string
	require.NoError(t, db.QueryRow(ctx, `SELECT prosrc FROM pg_proc WHERE proname = 'data_sync_config_validate'`).Scan(&src))
	m := regexp.MustCompile(`(?s)known text\[\] := ARRAY\[(.*?)\];`).FindStringSubmatch(src)
	require.NotNil(t, m, "data_sync_config_validate no longer lists its known names as expected")
	known := regexp.MustCompile(`'([A-Za-z]+)'`).FindAllStringSubmatch(m[1], -1)
	var knownNames []string
	for _, k := range known {
		knownNames = append(knownNames, k[1])
	}
	require.ElementsMatch(t, names, knownNames, "data_sync_config_validate knows other names than relay.SettingDefs")

	// The README's table: name and default of each row.
	_, conf := readme(t, "Configuration")
	row := regexp.MustCompile("^\\| `(DataSync[A-Za-z]+)` \\| ([^|]+) \\|")
	documented := map[string]string{}
	for _, l := range conf {
		if r := row.FindStringSubmatch(l); r != nil {
			d := strings.Trim(strings.TrimSpace(r[2]), "`")
			if d == "–" {
				d = ""
			}
			documented[r[1]] = d
		}
	}
	require.Equal(t, want, documented, "the README's settings table differs from relay.SettingDefs")
}

// TestREADMEListsEveryRunFlag: the README's table of `cdc-relay run` flags names exactly the
// flags run accepts.
func TestREADMEListsEveryRunFlag(t *testing.T) {
	t.Parallel()
	code, out := runCLI(t, "run", "-h")
	require.Equal(t, 0, code, out)
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`).FindAllStringSubmatch(out, -1) {
		flags = append(flags, m[1])
	}
	require.NotEmpty(t, flags)

	_, conf := readme(t, "Configuration")
	var documented []string
	inTable := false
	for _, l := range conf {
		if strings.HasPrefix(l, "| flag |") {
			inTable = true
			continue
		}
		if inTable && !strings.HasPrefix(l, "|") {
			break
		}
		if inTable {
			first := strings.SplitN(strings.TrimPrefix(l, "|"), "|", 2)[0]
			for _, m := range regexp.MustCompile("`--([a-z][a-z0-9-]*)`").FindAllStringSubmatch(first, -1) {
				documented = append(documented, m[1])
			}
		}
	}
	slices.Sort(flags)
	slices.Sort(documented)
	require.Equal(t, flags, documented, "the README's run flags table differs from `cdc-relay run -h`")
}

// TestREADMEListsEveryMetric: the metrics the README lists are exactly cdc-relay's own: those
// metrics.New registers (what the daemon serves besides the Go runtime and process metrics).
func TestREADMEListsEveryMetric(t *testing.T) {
	t.Parallel()
	rec := &recordingRegisterer{Registerer: prometheus.NewRegistry()}
	metrics.New(rec)
	// Desc has no accessors: its String() names the metric and its variable labels.
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	labels := regexp.MustCompile(`variableLabels: \{([a-z_,]*)\}`)
	var registered []string
	for _, c := range rec.registered {
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			require.NotNil(t, m, "cannot read the name of %s", d)
			l := labels.FindStringSubmatch(d.String())
			require.NotNil(t, l, "cannot read the labels of %s", d)
			name := m[1]
			if l[1] != "" {
				name += "{" + l[1] + "}"
			}
			registered = append(registered, name)
		}
	}
	all, _ := readme(t, "Operations")
	// Each metric as the README writes it, with its labels in braces when it has any.
	documented := regexp.MustCompile(`cdc_relay_[a-z_]+(?:\{[a-z_,]+\})?`).FindAllString(all, -1)
	slices.Sort(documented)
	documented = slices.Compact(documented)
	slices.Sort(registered)
	require.Equal(t, registered, documented, "the README's metrics (with their labels) differ from those metrics.New registers")
}

// recordingRegisterer keeps the collectors its registry accepted (a vector without series yet
// is absent from a Gather, not from its Describe).
type recordingRegisterer struct {
	prometheus.Registerer
	registered []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	if err == nil {
		r.registered = append(r.registered, c)
	}
	return err
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// TestREADMEResyncTableIsTrue: each row of the README's resync table gives a command and its psql
// equivalent; both, run on databases set up alike, leave the same request (or, for --status
// and --cancel, both run).
func TestREADMEResyncTableIsTrue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, ops := readme(t, "Operations")
	rowRE := regexp.MustCompile("^\\s*\\| `([^`]+)` \\| `([^`]+)` \\|$")
	var rows [][2]string
	for _, l := range ops {
		if m := rowRE.FindStringSubmatch(l); m != nil {
			rows = append(rows, [2]string{m[1], m[2]})
		}
	}
	require.GreaterOrEqual(t, len(rows), 10, "the README's resync table was not found")
	setup := `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
		INSERT INTO segment (segment_id, segment_name) VALUES (7, 'seven');
		INSERT INTO customer (customer_id) VALUES (42), (43);
		INSERT INTO customer_segment (customer_id, segment_id) VALUES (42, 7);
		INSERT INTO retail_transaction (retail_transaction_id, customer_id) VALUES ('T-1', 42), ('T-2', 43);`
	const request = `SELECT object, action, select_all, customer_ids::text, transaction_ids::text, segment_id,
		changed_since, since_date, rate, state FROM data_sync_resync ORDER BY id DESC LIMIT 1`
	type req struct {
		object, action          string
		all                     bool
		customers, transactions *string
		segment                 *int64
		changedSince            *time.Time
		sinceDate               *time.Time
		rate                    *int
		state                   string
	}
	read := func(url string) req {
		c, err := pgx.Connect(ctx, url)
		require.NoError(t, err)
		defer c.Close(ctx)
		var r req
		require.NoError(t, c.QueryRow(ctx, request).Scan(&r.object, &r.action, &r.all, &r.customers, &r.transactions,
			&r.segment, &r.changedSince, &r.sinceDate, &r.rate, &r.state))
		return r
	}
	for _, row := range rows {
		cmd, sql := row[0], strings.Replace(row[1], "…", "INSERT INTO data_sync_resync", 1)
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			viaCLI, viaSQL := pgtest.NewDB(t), pgtest.NewDB(t)
			pgtest.Exec(t, viaCLI, setup)
			pgtest.Exec(t, viaSQL, setup)
			if cmd == "--cancel 3" { // a request 3 to cancel, in both
				for _, u := range []string{viaCLI, viaSQL} {
					pgtest.Exec(t, u, `INSERT INTO data_sync_resync (id, object, select_all) OVERRIDING SYSTEM VALUE VALUES (3, 'customer', true)`)
				}
			}
			code, out := runCLI(t, append(append([]string{"resync"}, strings.Fields(cmd)...), "--database-url", viaCLI)...)
			require.Equal(t, 0, code, out)
			pgtest.Exec(t, viaSQL, sql)
			if cmd == "--status" {
				return
			}
			require.Equal(t, read(viaCLI), read(viaSQL), "cdc-relay resync %s and %s leave different requests", cmd, sql)
		})
	}
}
