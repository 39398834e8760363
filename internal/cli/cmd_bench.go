package cli

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/cdc-relay/cdc-relay/internal/bench"
)

func init() {
	register(&Command{Name: "bench", Summary: "measure latency, throughput, idle cost and trigger cost against targets", Run: runBench})
}

func runBench(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "bench")
	db := fs.String("database-url", "", "superuser postgres:// URL of an existing server (wal_level=logical); bench creates and drops its own databases there (default: a throwaway cluster with fsync on)")
	quick := fs.Bool("quick", false, "small sizes: finishes in about a minute")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	var o bench.Options
	fs.IntVar(&o.Concurrency, "concurrency", 0, "fixed relay requests in flight, also the HTTP-only baseline's (0: the relay's adaptive default; the baseline then keeps 16)")
	fs.IntVar(&o.BatchMessages, "messages-per-request", 100, "messages per POST of the batched throughput run")
	fs.IntVar(&o.MoveBatch, "move-batch", 1000, "pending rows moved per transaction (relay and SQL-only baseline)")
	fs.BoolVar(&o.HandInserted, "hand-inserted", false, "queue the throughput backlogs as hand-inserted rows, which the relay checks strictly (default: as the capture triggers write them)")
	fs.BoolVar(&o.Breakdown, "breakdown", false, "trace each change of the latency runs through the relay and report where its time goes")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (the in-process relay of the latency runs, its writers and receiver) to this file, for go tool pprof")
	scenarios := fs.String("scenarios", strings.Join(bench.Scenarios, ","), "comma-separated scenarios to run")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	o.AdminURL, o.Quick, o.Progress = *db, *quick, env.Stderr
	o.Sizes = bench.FullSizes()
	if *quick {
		o.Sizes = bench.QuickSizes()
	}
	for _, s := range strings.Split(*scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Scenarios = append(o.Scenarios, s)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, o)
	if rep != nil {
		var werr error
		if *asJSON {
			werr = rep.WriteJSON(env.Stdout)
		} else {
			werr = rep.WriteTable(env.Stdout)
		}
		if err == nil && werr != nil {
			return werr
		}
	}
	if err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}
