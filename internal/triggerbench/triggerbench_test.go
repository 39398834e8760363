package triggerbench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
