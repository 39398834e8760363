package triggerbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
)

func TestRunQuick(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Quick: true, Duration: time.Second, Clients: 2})
	require.NoError(t, err)
	for _, wl := range Workloads {
		for _, v := range Variants {
			if !applies(wl, v) {
				_, ok := rep.Get(wl, v)
				require.False(t, ok, "%s/%s measured", wl, v)
				continue
			}
			r, ok := rep.Get(wl, v)
			require.True(t, ok, "missing %s/%s", wl, v)
			require.Greater(t, r.TPS, 0.0, "%s/%s", wl, v)
			require.Greater(t, r.Ratio, 0.0, "%s/%s", wl, v)
		}
	}
	t.Log("\n" + rep.String())
}

// TestCaptureStatementsKeepTheirPlans guards the capture functions against statements that
// PostgreSQL plans again on every call. A PL/pgSQL statement keeps a cached generic plan only
// while that plan looks no dearer than a plan for the actual parameters; a condition the planner
// can fold away for the parameters (a size test beside an EXISTS) makes it re-plan every time,
// which cost 12 us a call in the set routing and would cost about 1 ms in the JSON builder.
// Every workload runs in each capture variant with pg_stat_statements tracking nested
// statements, and no nested statement may have been planned on most of its calls.
func TestCaptureStatementsKeepTheirPlans(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pgbench, err := findPgbench("")
	require.NoError(t, err)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"shared_preload_libraries":          "'pg_stat_statements'",
		"pg_stat_statements.track":          "all",
		"pg_stat_statements.track_planning": "on",
	}})
	require.NoError(t, err, "starting a cluster with pg_stat_statements (part of the postgresql package)")
	defer c.Stop()
	const customers, bulk, txns = 2000, 100, 200 // bulk > 64: bulk statements take the set path
	dir := t.TempDir()
	for _, wl := range Workloads {
		for _, v := range []string{VariantCapture, VariantBulkMove, VariantMove} {
			if !applies(wl, v) {
				continue
			}
			t.Run(wl+"/"+v, func(t *testing.T) {
				url, drop, err := createDB(ctx, c.URL("postgres"), "plans_"+wl+"_"+v, "")
				require.NoError(t, err)
				t.Cleanup(drop)
				require.NoError(t, seed(ctx, url, customers))
				require.NoError(t, prepare(ctx, url, v))
				conn, err := pgx.Connect(ctx, url)
				require.NoError(t, err)
				t.Cleanup(func() { conn.Close(context.Background()) })
				_, err = conn.Exec(ctx, "CREATE EXTENSION pg_stat_statements")
				require.NoError(t, err)
				_, err = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
				require.NoError(t, err)
				script := filepath.Join(dir, wl+"_"+v+".sql")
				require.NoError(t, os.WriteFile(script, []byte(Script(wl, false, customers, bulk, 1)), 0o644))
				n := txns
				if wl == "bulk_segment" {
					n = 40
				}
				out, err := exec.CommandContext(ctx, pgbench, "-n", "-f", script, "-c", "1", "-t", strconv.Itoa(n), url).CombinedOutput()
				require.NoError(t, err, "%s", out)
				// Deferred triggers run at COMMIT, outside any statement, so pg_stat_statements
				// counts their statements as top-level: the script's own statements (planned on
				// every call, as pgbench sends them unprepared) are told apart by the text
				// before their first literal or variable, which must be long enough not to
				// match a trigger's statement too.
				var sent []string
				for _, line := range strings.Split(Script(wl, false, customers, bulk, 1), "\n") {
					if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, `\`) {
						p := strings.TrimRight(line[:strings.IndexAny(line+";", "':;0123456789")], " ")
						require.True(t, p == "BEGIN" || p == "COMMIT" || len(p) >= 24, "script line %q gives the prefix %q", line, p)
						sent = append(sent, p)
					}
				}
				rows, err := conn.Query(ctx, `SELECT regexp_replace(query, '\s+', ' ', 'g'), calls, plans FROM pg_stat_statements`)
				require.NoError(t, err)
				ours := 0
				for rows.Next() {
					var q string
					var calls, plans int64
					require.NoError(t, rows.Scan(&q, &calls, &plans))
					if calls < int64(n)/2 || slices.ContainsFunc(sent, func(p string) bool { return strings.HasPrefix(q, p) }) {
						continue
					}
					if strings.Contains(q, "FROM public.data_sync_customers_json($1)") {
						continue // EXECUTEd on purpose: planned for each bulk statement's actual set
					}
					if strings.Contains(q, "data_sync_") {
						ours++
					}
					require.LessOrEqual(t, plans*2, calls, "planned %d times in %d calls: %.200s", plans, calls, q)
				}
				require.NoError(t, rows.Err())
				require.Positive(t, ours, "no capture statement ran on at least half of the transactions")
			})
		}
	}
}

func TestParseTPSRejectsGarbage(t *testing.T) {
	t.Parallel()
	_, err := ParseTPS("pgbench: error: connection failed")
	require.ErrorContains(t, err, "no \"tps = \" line")
	v, err := ParseTPS("number of failed transactions: 0\ntps = 123.45 (without initial connection time)\n")
	require.NoError(t, err)
	require.InDelta(t, 123.45, v, 1e-9)
}

func TestMissingPgbench(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Options{Quick: true, AdminURL: "postgres://x@127.0.0.1:1/x", Pgbench: "/nonexistent/pgbench"})
	require.Error(t, err)
}

// BenchmarkTriggers runs the full measurement once and prints the table; it runs only with
// -bench. TRIGGERBENCH_SECONDS sets each pgbench run's duration (default 8) and
// TRIGGERBENCH_WORKLOADS and TRIGGERBENCH_VARIANTS comma-separated subsets of Workloads and
// Variants, TRIGGERBENCH_ROUNDS the interleaved rounds:
//
//	TRIGGERBENCH_SECONDS=8 go test -run '^$' -bench Triggers -benchtime 1x ./internal/triggerbench
func BenchmarkTriggers(b *testing.B) {
	secs := 8
	if v := os.Getenv("TRIGGERBENCH_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err, "TRIGGERBENCH_SECONDS")
		secs = n
	}
	opts := Options{Duration: time.Duration(secs) * time.Second, Clients: 4}
	if v := os.Getenv("TRIGGERBENCH_WORKLOADS"); v != "" {
		opts.Workloads = strings.Split(v, ",")
	}
	if v := os.Getenv("TRIGGERBENCH_VARIANTS"); v != "" {
		opts.Variants = strings.Split(v, ",")
	}
	if v := os.Getenv("TRIGGERBENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err, "TRIGGERBENCH_ROUNDS")
		opts.Rounds = n
	}
	for b.Loop() {
		rep, err := Run(context.Background(), opts)
		require.NoError(b, err)
		fmt.Println(rep.String())
	}
}
