package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/load"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/internal/schema"
	"github.com/cdc-relay/cdc-relay/internal/status"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "demo", Summary: "see it work: throwaway PostgreSQL + reference receiver + CE activity + the relay", Run: runDemo})
	register(&Command{Name: "load", Summary: "write realistic CE activity (customers, cards, segments, transactions) for staging", Run: runLoad})
}

func runDemo(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "demo")
	duration := fs.Duration("duration", 0, "stop after this long (default: until Ctrl-C)")
	rate := fs.Float64("rate", 50, "CE operations per second")
	customers := fs.Int("customers", 200, "customers created at start")
	recvLatency := fs.Duration("receiver-latency", 0, "the reference receiver answers each POST after this long (a partner across the internet: 100ms)")
	recvInflight := fs.Int("receiver-max-inflight", 0, "the reference receiver answers POSTs beyond this many at once 429 (0: no limit)")
	var cfg daemon.Config
	delivered := relayFlags(fs, &cfg)
	logLevel := fs.String("log-level", "warn", "relay log level shown under the progress lines")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var err error
	if cfg.Relay.Delivered, err = parseStatuses(*delivered); err != nil {
		return err
	}
	log, err := newLogger(env.Stderr, "console", *logLevel)
	if err != nil {
		return err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	out := env.Stdout
	fmt.Fprintln(out, "cdc-relay demo: starting a throwaway PostgreSQL (wal_level=logical) from the local binaries...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	defer cluster.Stop()
	dbURL, err := cluster.CreateDatabase(ctx, "ce_demo", "")
	if err != nil {
		return err
	}
	conn, err := connect(ctx, dbURL)
	if err != nil {
		return err
	}
	if _, err := schema.Install(ctx, conn, schema.Options{}); err != nil {
		conn.Close(ctx)
		return err
	}
	fmt.Fprintln(out, "installed the reference CE schema, Data Sync queues, triggers and publications")

	tmp, err := os.MkdirTemp("", "cdc-relay-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	secret := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	var received atomic.Int64
	recv, err := receiver.New(receiver.Config{ClientID: "demo-client", ClientSecret: secret, Strict: true,
		OnMessage: func(r receiver.Received) {
			if !r.Sample {
				received.Add(1)
			}
		}})
	if err != nil {
		conn.Close(ctx)
		return err
	}
	if err := recv.Start(); err != nil {
		conn.Close(ctx)
		return err
	}
	defer recv.Close()
	recv.SetFaults(receiver.Faults{Delay: *recvLatency, MaxInflight: *recvInflight})
	cfg.CAFile = filepath.Join(tmp, "receiver-ca.pem")
	cfg.CredentialsPath = filepath.Join(tmp, "credentials.json")
	if err := recv.WriteCAFile(cfg.CAFile); err != nil {
		conn.Close(ctx)
		return err
	}
	if err := credentials.Save(cfg.CredentialsPath, "ce_credentials", "datasync", credentials.Credential{ClientID: "demo-client", ClientSecret: secret}); err != nil {
		conn.Close(ctx)
		return err
	}
	store := relay.NewStore(conn)
	for _, kv := range [][2]string{{"DataSyncApiUrl", recv.APIURL()}, {"DataSyncTokenUrl", recv.TokenURL()}, {"DataSyncEnabled", "true"}} {
		if _, err = store.SetSetting(ctx, kv[0], kv[1]); err != nil {
			break
		}
	}
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("configuring Data Sync: %w", err)
	}
	fmt.Fprintf(out, "reference receiver on %s (OAuth2 token endpoint %s, TLS 1.2+, self-signed CA trusted via --ca-file)\n", recv.APIURL(), recv.TokenURL())
	fmt.Fprintln(out, "credentials saved; DataSyncEnabled = true; relay running; writing CE activity (Ctrl-C to stop)")

	cfg.DatabaseURL, cfg.Logger, cfg.AdminAddr = dbURL, log, "off"
	cfg.Registry = metrics.NewRegistry() // the progress lines read the relay's metrics from it
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	gen := load.New(load.Config{DatabaseURL: dbURL, Rate: *rate, Customers: *customers})

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	g, gctx := errgroup.WithContext(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- daemon.Run(relayCtx, cfg) }()
	g.Go(func() error { return gen.Run(gctx) })
	g.Go(func() error {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last, ticks int64
		for {
			select {
			case <-gctx.Done():
				return nil
			case err := <-relayDone:
				relayDone <- err
				return fmt.Errorf("relay stopped: %w", err)
			case <-tick.C:
			}
			progress(out, cfg.Registry, pool, gen, received.Load(), received.Load()-last)
			last = received.Load()
			if ticks++; ticks >= demoResyncAfter {
				demoResync(gctx, out, relay.NewStore(pool), ticks == demoResyncAfter) // cmd_resync.go
			}
		}
	})
	loadErr := g.Wait()
	// Let the relay drain what was written, then stop it.
	fmt.Fprintln(out, "stopping the load; letting the relay drain the queues...")
	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for drainCtx.Err() == nil {
		rep, err := status.Collect(drainCtx, pool, 0)
		if err == nil && undelivered(rep) == 0 {
			break
		}
		select {
		case <-drainCtx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	progress(out, cfg.Registry, pool, gen, received.Load(), 0)
	stopRelay()
	relayErr := <-relayDone
	st := recv.Stats()
	fmt.Fprintf(out, "done: %d CE operations written, %d messages delivered (%d unique, %d duplicates), receiver rejected %d\n",
		gen.Total(), st.Messages, st.Unique, st.Duplicates, sumMap(st.Rejected))
	fmt.Fprintln(out, "removed the throwaway database, receiver and credentials")
	if loadErr != nil && !errors.Is(loadErr, context.Canceled) {
		return loadErr
	}
	if relayErr != nil {
		return relayErr
	}
	return nil
}

func sumMap(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func undelivered(rep status.Report) int64 {
	var n int64
	for _, q := range rep.Queues {
		if q.Stage != "failed" {
			n += q.Rows
		}
	}
	return n
}

// progress prints one live line: queued, delivered, rate and commit-to-delivery latency (read
// from reg, the relay's metrics).
func progress(out interface{ Write([]byte) (int, error) }, reg prometheus.Gatherer, pool *pgxpool.Pool, gen *load.Generator, delivered, perSec int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	queued := int64(-1)
	if rep, err := status.Collect(ctx, pool, 0); err == nil {
		queued = undelivered(rep)
	}
	p50, p99 := latencyQuantiles(reg)
	fmt.Fprintf(out, "ops written %6d | queued %5d | delivered %6d | %5d msg/s | commit->200 p50 %s p99 %s | in flight <= %s\n",
		gen.Total(), queued, delivered, perSec, p50, p99, concurrencyLimit(reg))
}

// concurrencyLimit reads the relay's current limit on requests in flight.
func concurrencyLimit(reg prometheus.Gatherer) string {
	fams, err := reg.Gather()
	if err != nil {
		return "-"
	}
	for _, f := range fams {
		if f.GetName() == "cdc_relay_concurrency_limit" && len(f.GetMetric()) > 0 {
			return strconv.Itoa(int(f.GetMetric()[0].GetGauge().GetValue()))
		}
	}
	return "-"
}

// latencyQuantiles reads the relay's commit-to-delivery histogram.
func latencyQuantiles(reg prometheus.Gatherer) (p50, p99 string) {
	fams, err := reg.Gather()
	if err != nil {
		return "-", "-"
	}
	for _, f := range fams {
		if f.GetName() != "cdc_relay_commit_to_delivery_seconds" || len(f.GetMetric()) == 0 {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		return quantile(h, 0.5), quantile(h, 0.99)
	}
	return "-", "-"
}

func quantile(h *dto.Histogram, q float64) string {
	total := h.GetSampleCount()
	if total == 0 {
		return "-"
	}
	buckets := h.GetBucket()
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	want := uint64(q * float64(total))
	for _, b := range buckets {
		if b.GetCumulativeCount() >= want {
			return "<" + time.Duration(b.GetUpperBound()*float64(time.Second)).Round(10*time.Microsecond).String()
		}
	}
	return ">" + time.Duration(buckets[len(buckets)-1].GetUpperBound()*float64(time.Second)).String()
}

func runLoad(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "load")
	db := databaseFlag(fs, env)
	var cfg load.Config
	fs.Float64Var(&cfg.Rate, "rate", 50, "CE operations per second")
	fs.IntVar(&cfg.Customers, "customers", 100, "customers created before the steady load")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireDatabase(*db); err != nil {
		return err
	}
	// Its sessions pin the relay's search_path, as the other commands' do, under a name of
	// their own: a DBA looking for the relay in pg_stat_activity must not find the load.
	cfg.DatabaseURL = *db
	cfg.ConfigureConn = func(cc *pgx.ConnConfig) {
		relay.ConfigureConn(cc)
		cc.RuntimeParams["application_name"] = "cdc-relay load"
	}
	gen := load.New(cfg)
	err := gen.Run(ctx)
	st := gen.Stats()
	fmt.Fprintf(env.Stdout, "wrote %d CE operations: %d creates, %d updates, %d cards, %d segment changes, %d transactions, %d merges, %d deletes\n",
		st.Total(), st.Committed[load.OpCreate], st.Committed[load.OpUpdate], st.Committed[load.OpCard], st.Committed[load.OpSegment],
		st.Committed[load.OpTransaction], st.Committed[load.OpMerge], st.Committed[load.OpDelete])
	return err
}
