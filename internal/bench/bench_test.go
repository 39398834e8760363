package bench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/bench"
	"github.com/cdc-relay/cdc-relay/internal/cli"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// childEnv makes this test binary act as `cdc-relay` when the bench starts the relay as a
// child process.
const childEnv = "CDC_RELAY_BENCH_TEST_CHILD=1"

func TestMain(m *testing.M) {
	if os.Getenv("CDC_RELAY_BENCH_TEST_CHILD") == "1" {
		os.Exit(cli.Main(os.Args[1:], cli.StdEnv()))
	}
	pgtest.Main(m)
}

// TestBenchEndToEnd runs every scenario with tiny sizes and checks that each produced figures.
// Timings are machine-dependent, so nothing here asserts on them or on the targets.
func TestBenchEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{
		AdminURL: pgtest.AdminURL(),
		Sizes: bench.Sizes{
			LatencyRates: []int{50}, LatencyDuration: 500 * time.Millisecond, Customers: 50,
			SingleBacklog: 300, BatchedBacklog: 2000, RSSMark: 500,
			IdleDuration: 200 * time.Millisecond, TriggerQuick: true, TriggerDuration: time.Second,
			// Every workload and variant is measured by internal/triggerbench's own test; here
			// one pair shows the bench reports it.
			TriggerWorkloads: []string{"customer_update"}, TriggerVariants: []string{"capture"},
		},
		Quick: true, Concurrency: 4, BatchMessages: 50, MoveBatch: 200,
		RelayExe: os.Args[0], RelayEnv: []string{childEnv},
		Progress: testWriter{t},
	})
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	// One run per rate, and one more right after the one-per-post drain.
	if len(rep.Latency) != 2 || rep.Latency[1].Label != "after drain" {
		t.Errorf("latency runs: %+v", rep.Latency)
	}
	for _, l := range rep.Latency {
		if l.Changes == 0 || l.Delivered != l.Changes || l.P50 <= 0 || l.CommitMS <= 0 || l.CommitAtRateMS <= 0 {
			t.Errorf("latency figures missing: %+v", l)
		}
	}
	if len(rep.Throughput) != 2 {
		t.Fatalf("throughput runs = %d, want 2", len(rep.Throughput))
	}
	for _, tr := range rep.Throughput {
		if tr.RelayRate <= 0 || tr.SQLRate <= 0 || tr.HTTPRate <= 0 || tr.Predicted <= 0 || tr.Ratio <= 0 || tr.PeakRSS <= 0 {
			t.Errorf("throughput %s figures missing: %+v", tr.Name, tr)
		}
		if tr.Duplicates != 0 {
			t.Errorf("throughput %s: %d duplicates", tr.Name, tr.Duplicates)
		}
	}
	if b := rep.Throughput[1]; b.RSSAtMark <= 0 || b.RSSMark != 500 {
		t.Errorf("batched run: no RSS at the mark: %+v", b)
	}
	if rep.Idle == nil || rep.Idle.Slots == 0 || rep.Idle.Seconds <= 0 {
		t.Fatalf("idle figures missing: %+v", rep.Idle)
	}
	if rep.Idle.Queries < rep.Idle.Sweeps {
		t.Errorf("idle: %d relay queries in %d sweeps: every sweep re-reads the settings", rep.Idle.Queries, rep.Idle.Sweeps)
	}
	if rep.Triggers == nil || len(rep.Triggers.Results) == 0 || rep.Triggers.Table == "" {
		t.Errorf("trigger cost missing: %+v", rep.Triggers)
	}
	if len(rep.Targets) == 0 {
		t.Error("no targets reported")
	}
	out := testWriter{t}
	if err := rep.WriteTable(out); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(out); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// TestBenchLatencyBreakdown: with Breakdown, every step of the latency runs has figures, the
// changes traced from end to end, and the report prints them.
func TestBenchLatencyBreakdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{
		AdminURL:  pgtest.AdminURL(),
		Sizes:     bench.Sizes{LatencyRates: []int{50}, LatencyDuration: 500 * time.Millisecond, Customers: 50},
		Scenarios: []string{bench.ScenarioLatency}, Breakdown: true, Quick: true,
		Progress: testWriter{t},
	})
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if len(rep.Latency) != 1 {
		t.Fatalf("latency runs: %+v", rep.Latency)
	}
	l := rep.Latency[0]
	if len(l.Stages) == 0 {
		t.Fatalf("no breakdown: %+v", l)
	}
	total := l.Stages[len(l.Stages)-1]
	if total.Name != "total" || total.P50 <= 0 || total.P99 < total.P50 {
		t.Errorf("total step: %+v", total)
	}
	if first := l.Stages[0]; first.P50 <= 0 {
		t.Errorf("the writer's commit took no time: %+v", first)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Latency breakdown") {
		t.Errorf("the report has no breakdown:\n%s", b.String())
	}
}
