// Package bench is `cdc-relay bench`: it measures the relay end to end against a real PostgreSQL
// server (a throwaway cluster with fsync on, or an existing server) and the reference HTTPS
// receiver with OAuth2, and compares every figure with its target.
//
// Scenarios:
//   - latency: a steady rate of committed customer changes; commit → receiver-200 latency
//     percentiles, with the relay in-process (daemon.Run with the replication doorbell);
//   - throughput, one message per POST and batched: a backlog queued while the relay is stopped,
//     drained by the relay running as a child process (so its RSS and CPU are its own), beside
//     two baselines measured in the same run: the SQL-only limit (the relay's move and
//     acknowledge statements, no HTTP) and the HTTP-only limit (the real sender and the same
//     receiver, no database), and the rate they predict together, 1 / (1/sql + 1/http);
//   - idle: the relay's CPU time, the transactions it commits and the replication slot's lag
//     over a quiet period;
//   - trigger cost: internal/triggerbench's table of capture-trigger overhead;
//   - resync: a resync of every customer, its rate and the relay's memory, and the CE workload's
//     TPS during it (resync.go).
//
// Every scenario runs in its own database cloned from a template, so one scenario's queue bloat
// never slows another.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/triggerbench"
)

// Scenario names, for Options.Scenarios.
const (
	ScenarioLatency  = "latency"
	ScenarioSingle   = "single"  // throughput, one message per POST
	ScenarioBatched  = "batched" // throughput, many messages per POST
	ScenarioIdle     = "idle"
	ScenarioRemote   = "remote" // a receiver across the internet: 100 ms a request
	ScenarioTriggers = "triggers"
	ScenarioResync   = "resync"
)

// Scenarios lists every scenario in run order.
var Scenarios = []string{ScenarioLatency, ScenarioSingle, ScenarioBatched, ScenarioRemote, ScenarioIdle, ScenarioTriggers, ScenarioResync}

// ErrBench marks a bench run that could not produce its figures (not a missed target).
var ErrBench = errors.New("bench failed")

// Sizes are the workload sizes of a run.
type Sizes struct {
	// LatencyRates are the committed changes per second of the latency runs, each lasting
	// LatencyDuration.
	LatencyRates    []int
	LatencyDuration time.Duration
	// Customers is how many customers the latency writers update round-robin.
	Customers int
	// SingleBacklog and BatchedBacklog are the rows queued for the throughput runs.
	SingleBacklog, BatchedBacklog int
	// RSSMark is the number of delivered rows after which the batched run samples the relay's
	// RSS (capped at half the backlog).
	RSSMark int
	// RemoteBacklog is the rows each remote run drains.
	RemoteBacklog int
	// IdleDuration is how long the idle scenario watches a quiet relay.
	IdleDuration time.Duration
	// TriggerQuick and TriggerDuration tune internal/triggerbench (Quick data set; pgbench run
	// length, whole seconds, 0 = its default).
	TriggerQuick    bool
	TriggerDuration time.Duration
	// TriggerRounds repeats each trigger variant, interleaved (median reported).
	TriggerRounds int
	// TriggerWorkloads and TriggerVariants limit the trigger cost to these (nil: every one).
	TriggerWorkloads, TriggerVariants []string
	// ResyncCustomers are resynced (0 skips the scenario), with the relay's RSS read after
	// ResyncMark deliveries; ResyncTPSDuration is each pgbench run beside it.
	ResyncCustomers, ResyncMark int
	ResyncTPSDuration           time.Duration
}

// FullSizes are the sizes of a full run (under 10 minutes on a 2-core machine).
func FullSizes() Sizes {
	return Sizes{
		LatencyRates: []int{500, 50}, LatencyDuration: 20 * time.Second, Customers: 2000,
		SingleBacklog: 100_000, BatchedBacklog: 1_000_000, RSSMark: 100_000, RemoteBacklog: 20_000,
		IdleDuration: 30 * time.Second, TriggerDuration: 3 * time.Second, TriggerRounds: 3,
		ResyncCustomers: 1_000_000, ResyncMark: 100_000, ResyncTPSDuration: 10 * time.Second,
	}
}

// QuickSizes are the sizes of `bench --quick` (under a minute).
func QuickSizes() Sizes {
	return Sizes{
		LatencyRates: []int{500, 50}, LatencyDuration: 3 * time.Second, Customers: 2000,
		SingleBacklog: 5_000, BatchedBacklog: 20_000, RSSMark: 100_000, RemoteBacklog: 4_000,
		IdleDuration: 3 * time.Second, TriggerQuick: true, TriggerDuration: time.Second,
		ResyncCustomers: 20_000, ResyncMark: 2_000, ResyncTPSDuration: 2 * time.Second,
	}
}

// Options configure Run.
type Options struct {
	// AdminURL is a superuser URL (postgres://...) of an existing server with wal_level=logical;
	// Run creates its databases there and drops them afterwards. Empty starts a throwaway
	// cluster with fsync on.
	AdminURL string
	// Sizes of the workloads; the zero value means FullSizes.
	Sizes Sizes
	// Quick is recorded in the report (Sizes decide the work).
	Quick bool
	// Concurrency fixes the relay's requests in flight; 0 (default) leaves the relay's own
	// default, adaptive. The HTTP-only baseline uses BaselineWorkers.
	Concurrency int
	// BatchMessages is the messages per POST of the batched run (default 100).
	BatchMessages int
	// MoveBatch is the relay's rows per move transaction, also used by the SQL-only baseline
	// (default 1000, the relay's default).
	MoveBatch int
	// HandInserted queues the throughput backlogs as hand-inserted rows (captured = false), which
	// the relay checks strictly against the payload schema. Default: rows marked as the capture
	// triggers write them (captured = true), the production path.
	HandInserted bool
	// Scenarios to run (default all, see Scenarios).
	Scenarios []string
	// RelayExe and RelayArgs start the relay child process: RelayExe RelayArgs... run --flags.
	// Default: this executable (os.Executable), no extra arguments. RelayEnv is appended to the
	// environment of the child.
	RelayExe  string
	RelayArgs []string
	RelayEnv  []string
	// Breakdown traces every change of the latency runs through the relay (relay.Config.Trace)
	// and reports where its time went (LatencyResult.Stages).
	Breakdown bool
	// Progress receives one line per step (nil discards them).
	Progress io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Sizes.LatencyDuration == 0 && o.Sizes.SingleBacklog == 0 && o.Sizes.BatchedBacklog == 0 {
		o.Sizes = FullSizes()
	}
	if o.Sizes.Customers <= 0 {
		o.Sizes.Customers = 2000
	}
	if o.Concurrency < 0 {
		o.Concurrency = 0
	}
	if o.BatchMessages <= 0 {
		o.BatchMessages = 100
	}
	if o.MoveBatch <= 0 {
		o.MoveBatch = 1000
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = Scenarios
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return o, fmt.Errorf("%w: unknown scenario %q (use %v)", ErrBench, s, Scenarios)
		}
	}
	if o.RelayExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("%w: finding this executable to start the relay: %w", ErrBench, err)
		}
		o.RelayExe = exe
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o, nil
}

// Run runs the selected scenarios and returns the report. It stops at the first scenario that
// cannot produce figures; the report then holds what was measured before.
func Run(ctx context.Context, opts Options) (*Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	started := time.Now()
	rep := &Report{
		Quick: o.Quick, Cores: runtime.NumCPU(), Concurrency: o.Concurrency,
		BatchMessages: o.BatchMessages, MoveBatch: o.MoveBatch,
	}
	admin := o.AdminURL
	if admin == "" {
		o.logf("starting a throwaway PostgreSQL cluster (fsync on)")
		c, err := pgcluster.Start(ctx, pgcluster.Options{Fsync: true})
		if err != nil {
			return rep, fmt.Errorf("%w: starting PostgreSQL: %w", ErrBench, err)
		}
		defer c.Stop()
		admin = c.URL("postgres")
		rep.Server = "throwaway cluster, fsync on"
	} else {
		rep.Server = "existing server"
	}
	env, err := newEnv(ctx, o, admin)
	if err != nil {
		return rep, err
	}
	defer env.close()
	rep.Server += ", " + env.serverVersion

	finish := func(err error) (*Report, error) {
		rep.Elapsed = time.Since(started).Seconds()
		rep.Targets = targets(rep)
		return rep, err
	}
	want := func(s string) bool { return slices.Contains(o.Scenarios, s) }
	if want(ScenarioLatency) {
		for _, r := range o.Sizes.LatencyRates {
			o.logf("latency: %d changes/s for %s", r, o.Sizes.LatencyDuration)
			res, err := env.latency(ctx, r, o.Sizes.LatencyDuration, "")
			if err != nil {
				return finish(err)
			}
			rep.Latency = append(rep.Latency, res)
		}
	}
	if want(ScenarioSingle) {
		o.logf("throughput, one message per POST: backlog of %d", o.Sizes.SingleBacklog)
		res, err := env.throughput(ctx, "one-per-post", o.Sizes.SingleBacklog, 1, 0)
		if err != nil {
			return finish(err)
		}
		rep.Throughput = append(rep.Throughput, res)
		if want(ScenarioLatency) {
			// Right after a drain: autovacuum works through the drained queues meanwhile.
			rate := slices.Min(o.Sizes.LatencyRates)
			o.logf("latency after the drain: %d changes/s for %s", rate, o.Sizes.LatencyDuration)
			res, err := env.latency(ctx, rate, o.Sizes.LatencyDuration, "after drain")
			if err != nil {
				return finish(err)
			}
			rep.Latency = append(rep.Latency, res)
		}
	}
	if want(ScenarioBatched) {
		o.logf("throughput, %d messages per POST: backlog of %d", o.BatchMessages, o.Sizes.BatchedBacklog)
		mark := min(o.Sizes.RSSMark, o.Sizes.BatchedBacklog/2)
		res, err := env.throughput(ctx, "batched", o.Sizes.BatchedBacklog, o.BatchMessages, mark)
		if err != nil {
			return finish(err)
		}
		rep.Throughput = append(rep.Throughput, res)
	}
	if want(ScenarioRemote) && o.Sizes.RemoteBacklog > 0 {
		for _, rc := range remoteCases {
			o.logf("remote: %s a request, %d in flight at most (0: no cap), HTTP/2 offered: %v, backlog of %d", rc.latency, rc.maxInflight, rc.http2, o.Sizes.RemoteBacklog)
			res, err := env.remote(ctx, rc.latency, rc.maxInflight, rc.http2, o.Sizes.RemoteBacklog)
			if err != nil {
				return finish(err)
			}
			rep.Remote = append(rep.Remote, res)
		}
	}
	if want(ScenarioIdle) {
		o.logf("idle: %s", o.Sizes.IdleDuration)
		res, err := env.idle(ctx, o.Sizes.IdleDuration)
		if err != nil {
			return finish(err)
		}
		rep.Idle = &res
	}
	if want(ScenarioTriggers) {
		o.logf("trigger cost (internal/triggerbench)")
		tr, err := triggerbench.Run(ctx, triggerbench.Options{
			AdminURL: admin, Quick: o.Sizes.TriggerQuick, Duration: o.Sizes.TriggerDuration, Rounds: o.Sizes.TriggerRounds,
			Workloads: o.Sizes.TriggerWorkloads, Variants: o.Sizes.TriggerVariants,
		})
		if err != nil {
			return finish(fmt.Errorf("%w: trigger cost: %w", ErrBench, err))
		}
		rep.Triggers = &TriggerReport{Table: tr.String(), Results: tr.Results,
			Customers: tr.Customers, BulkRows: tr.BulkRows, Seconds: tr.Duration.Seconds(), Clients: tr.Clients}
	}
	if want(ScenarioResync) && o.Sizes.ResyncCustomers > 0 {
		o.logf("resync: %d customers", o.Sizes.ResyncCustomers)
		res, err := env.resync(ctx, o.Sizes.ResyncCustomers, min(o.Sizes.ResyncMark, o.Sizes.ResyncCustomers/2), o.Sizes.ResyncTPSDuration)
		if err != nil {
			return finish(err)
		}
		rep.Resync = &res
	}
	return finish(nil)
}

// BaselineWorkers is how many requests the HTTP-only baseline keeps in flight: the fixed
// concurrency, or 16 (the relay's starting point) when the relay adapts.
func (o Options) BaselineWorkers() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return 16
}

// remoteCases are the remote scenario's receivers: a partner 100 ms away accepting 300 requests
// at once, over HTTP/1.1 and over HTTP/2, and one 200 ms away with no cap.
var remoteCases = []struct {
	latency     time.Duration
	maxInflight int
	http2       bool
}{{100 * time.Millisecond, 300, false}, {100 * time.Millisecond, 300, true}, {200 * time.Millisecond, 0, false}}

func (o Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Progress, "bench: "+format+"\n", args...)
}
