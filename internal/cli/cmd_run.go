package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "run", Summary: "run the relay daemon (deliver queued changes until stopped)", Run: runRun})
}

// relayFlags registers the delivery flags shared by run, demo and bench.
func relayFlags(fs *flag.FlagSet, c *daemon.Config) *string {
	fs.IntVar(&c.Relay.Concurrency, "concurrency", 16, "maximum requests in flight (records of one customer are never sent concurrently)")
	fs.IntVar(&c.Relay.MessagesPerRequest, "messages-per-request", 1, "messages packed into one POST (1 = the appendix's one POST per record)")
	fs.IntVar(&c.Relay.MoveBatch, "move-batch", 1000, "pending rows moved to progress per transaction")
	fs.IntVar(&c.Relay.Window, "window", 0, "rows held in memory at most (default 4 x --move-batch)")
	fs.Int64Var(&c.Relay.WindowBytes, "window-bytes", 64<<20, "memory held by rows in the window at most, payloads included")
	fs.IntVar(&c.Relay.MaxPayloadBytes, "max-payload-bytes", 16<<20, "largest JSON payload sent; a larger row is dead-lettered")
	fs.DurationVar(&c.Relay.SweepInterval, "sweep-interval", 30*time.Second, "safety-net wake-up interval")
	fs.StringVar(&c.Relay.OnFailure, "on-failure", relay.OnFailureKey, "what a failing record blocks: key (only its customer/transaction) or stop (the whole job, as the appendix)")
	fs.BoolVar(&c.Relay.SkipDeadLetters, "skip-dead-letters", false, "let later records of a key pass a dead-lettered one (default: they are held behind it)")
	fs.IntVar(&c.Relay.MaxAttempts, "max-attempts", 0, "dead-letter a record after this many retryable failures (0 = retry for ever)")
	fs.IntVar(&c.Relay.PermanentAttempts, "permanent-attempts", 3, "attempts a record gets when the receiver refuses it (other 4xx)")
	fs.DurationVar(&c.Relay.BackoffMin, "backoff-min", time.Second, "first retry delay")
	fs.DurationVar(&c.Relay.BackoffMax, "backoff-max", 5*time.Minute, "retry delay cap")
	fs.Float64Var(&c.Relay.RateLimit, "rate-limit", 0, "messages per second at most (0 = no fixed limit)")
	fs.BoolVar(&c.Relay.Coalesce, "coalesce", false, "collapse queued UPDATEs of one customer into the latest snapshot")
	fs.DurationVar(&c.Relay.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a stop waits for requests in flight")
	fs.BoolVar(&c.Poll, "poll", false, "run without logical replication: wake only on the sweep")
	fs.StringVar(&c.CAFile, "ca-file", "", "extra PEM CA bundle trusted for the receiver and token endpoint")
	fs.StringVar(&c.CredentialsPath, "credentials", "", "credential store path (default ${XDG_CONFIG_HOME:-$HOME/.config}/cdc-relay/credentials.json)")
	fs.BoolVar(&c.AllowInsecureHTTP, "allow-insecure-http", false, "permit http:// URLs (local testing only)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 10*time.Second, "timeout of each request")
	return fs.String("delivered-status", "200", "comma-separated HTTP statuses that count as delivered")
}

func parseStatuses(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("%w: --delivered-status %q: give HTTP status codes such as 200,202", ErrUsage, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func runRun(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "run")
	db := databaseFlag(fs, env)
	var cfg daemon.Config
	delivered := relayFlags(fs, &cfg)
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:9187", "address for /metrics, /livez and /readyz (off to disable)")
	logger := logFlags(fs, env)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireDatabase(*db); err != nil {
		return err
	}
	var err error
	if cfg.Relay.Delivered, err = parseStatuses(*delivered); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg.DatabaseURL, cfg.Getenv, cfg.Logger = *db, env.Getenv, log
	if cfg.AllowInsecureHTTP {
		log.Warn("--allow-insecure-http: http:// URLs are permitted; tokens and customer data may cross the network in clear text")
	}
	log.Info("cdc-relay starting")
	if err := daemon.Run(ctx, cfg); err != nil {
		log.Error("cdc-relay stopped", zap.Error(err))
		return err
	}
	log.Info("cdc-relay stopped cleanly")
	return nil
}
