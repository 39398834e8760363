package bench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/bench"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// TestBenchResync runs the resync scenario with tiny sizes and checks that it produced its
// figures and targets. Timings are machine-dependent: nothing asserts on them.
func TestBenchResync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{
		AdminURL: pgtest.AdminURL(),
		Sizes: bench.Sizes{Customers: 50, SingleBacklog: 300,
			ResyncCustomers: 3000, ResyncMark: 300, ResyncTPSDuration: 3 * time.Second},
		Quick: true, Concurrency: 4, MoveBatch: 200,
		Scenarios: []string{bench.ScenarioSingle, bench.ScenarioResync},
		RelayExe:  os.Args[0], RelayEnv: []string{childEnv},
		Progress: testWriter{t},
	})
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	r := rep.Resync
	if r == nil || r.Customers != 3000 || r.Rate <= 0 || r.PeakRSS <= 0 || r.RSSAtMark <= 0 || r.RSSAtEnd <= 0 ||
		r.TPSWithout <= 0 || r.TPSDuring <= 0 || r.TPSRatio <= 0 {
		t.Fatalf("resync figures missing: %+v", r)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	t.Log(b.String())
	for _, want := range []string{"Resync: every customer", "resync: rate / one-per-POST drain rate", "resync: customer_update TPS during / without", "resync: RSS at 3000 rows / RSS at 300 rows"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
