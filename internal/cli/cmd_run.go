package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/sender"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "run", Summary: "run the relay daemon (deliver queued changes until stopped)", Run: runRun})
}

// relayFlags registers the delivery flags shared by run, demo and bench. Their defaults are
// relay.Config's (WithDefaults) and sender's, so they are defined in one place.
func relayFlags(fs *flag.FlagSet, c *daemon.Config) *string {
	d := relay.Config{}.WithDefaults()
	fs.IntVar(&c.Relay.Concurrency, "concurrency", d.Concurrency, "fixed number of requests in flight; 0 adapts to the receiver up to --max-concurrency (records of one customer are never sent concurrently)")
	fs.IntVar(&c.Relay.MaxConcurrency, "max-concurrency", d.MaxConcurrency, "upper bound of the adaptive concurrency")
	fs.IntVar(&c.Relay.MessagesPerRequest, "messages-per-request", d.MessagesPerRequest, "messages packed into one POST (1 = the appendix's one POST per record)")
	fs.IntVar(&c.Relay.MoveBatch, "move-batch", d.MoveBatch, "pending rows moved to progress per transaction")
	fs.IntVar(&c.Relay.Window, "window", 0, "rows held in memory at most (default 4 x --move-batch)")
	fs.Int64Var(&c.Relay.WindowBytes, "window-bytes", d.WindowBytes, "memory held by rows in the window at most, payloads included")
	fs.IntVar(&c.Relay.MaxPayloadBytes, "max-payload-bytes", d.MaxPayloadBytes, "largest JSON payload sent; a larger row is dead-lettered")
	fs.DurationVar(&c.Relay.SweepInterval, "sweep-interval", d.SweepInterval, "safety-net wake-up interval")
	fs.StringVar(&c.Relay.OnFailure, "on-failure", d.OnFailure, "what a failing record blocks: key (only its customer/transaction) or stop (the whole job, as the appendix)")
	fs.BoolVar(&c.Relay.SkipDeadLetters, "skip-dead-letters", d.SkipDeadLetters, "let later records of a key pass a dead-lettered one (default: they are held behind it)")
	fs.IntVar(&c.Relay.MaxAttempts, "max-attempts", d.MaxAttempts, "dead-letter a record after this many retryable failures (0 = retry for ever)")
	fs.IntVar(&c.Relay.PermanentAttempts, "permanent-attempts", d.PermanentAttempts, "attempts a record gets when the receiver refuses it (other 4xx)")
	fs.DurationVar(&c.Relay.BackoffMin, "backoff-min", d.BackoffMin, "first retry delay")
	fs.DurationVar(&c.Relay.BackoffMax, "backoff-max", d.BackoffMax, "retry delay cap")
	fs.Float64Var(&c.Relay.RateLimit, "rate-limit", d.RateLimit, "messages per second at most (0 = no fixed limit)")
	fs.BoolVar(&c.Relay.Coalesce, "coalesce", d.Coalesce, "collapse queued UPDATEs of one customer into the latest snapshot")
	fs.DurationVar(&c.Relay.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "how long a stop waits for requests in flight")
	fs.BoolVar(&c.Poll, "poll", false, "run without logical replication: wake only on the sweep")
	fs.StringVar(&c.CAFile, "ca-file", "", "extra PEM CA bundle trusted for the receiver and token endpoint")
	fs.StringVar(&c.ClientCertFile, "client-cert", "", "PEM client certificate for mTLS, read again when it changes (default $CDC_RELAY_CLIENT_CERT_FILE, else the stored one)")
	fs.StringVar(&c.ClientKeyFile, "client-key", "", "PEM private key of --client-cert (default $CDC_RELAY_CLIENT_KEY_FILE)")
	fs.StringVar(&c.CredentialsPath, "credentials", "", "credential store path (default ${XDG_CONFIG_HOME:-$HOME/.config}/cdc-relay/credentials.json)")
	fs.BoolVar(&c.AllowInsecureHTTP, "allow-insecure-http", false, "permit http:// URLs (local testing only)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", sender.DefaultRequestTimeout, "timeout of each request")
	return fs.String("delivered-status", joinStatuses(d.Delivered), "comma-separated HTTP statuses that count as delivered")
}

func joinStatuses(s []int) string {
	parts := make([]string, len(s))
	for i, n := range s {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
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
	fs.StringVar(&cfg.AdminAddr, "admin-addr", daemon.DefaultAdminAddr, "address for /metrics, /livez and /readyz (off to disable)")
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
