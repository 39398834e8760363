package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/internal/schema"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "install", Summary: "create or upgrade the queues, triggers and publications (idempotent)", Run: runInstall})
	register(&Command{Name: "uninstall", Summary: "remove triggers and publications (queued rows are kept unless --drop-queues)", Run: runUninstall})
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return conn, nil
}

// connectDB checks that a database URL was given and connects to it: the start of every
// command that works on the CE database with one connection.
func connectDB(ctx context.Context, url string) (*pgx.Conn, error) {
	if err := requireDatabase(url); err != nil {
		return nil, err
	}
	return connect(ctx, url)
}

// poolDB is connectDB for commands that need a pool; its sessions pin the relay's search_path
// (relay.ConfigureConn), as they only read and change existing objects.
func poolDB(ctx context.Context, url string) (*pgxpool.Pool, error) {
	if err := requireDatabase(url); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing --database-url: %w", err)
	}
	relay.ConfigureConn(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return pool, nil
}

func runInstall(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "install")
	db := databaseFlag(fs, env)
	allow := fs.Bool("allow-non-logical", false, "install even though wal_level is not logical (run the relay with --poll)")
	lockTimeout := fs.Duration("lock-timeout", 2*time.Second, "longest wait for a table lock before a script is rolled back and retried, so the CE application's writes never queue behind install for longer")
	lockAttempts := fs.Int("lock-attempts", 30, "attempts per script while a CE table stays locked by another transaction (backoff 1s doubling to 30s)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := schema.Install(ctx, conn, schema.Options{
		AllowNonLogical: *allow, LockTimeout: *lockTimeout, LockAttempts: *lockAttempts,
		OnLockRetry: func(script string, attempt int, wait time.Duration, err error) {
			fmt.Fprintf(env.Stderr, "%s: a table is locked by another transaction (attempt %d of %d); retrying in %s\n",
				script, attempt, *lockAttempts, wait.Round(time.Millisecond))
		},
	})
	if err != nil {
		return err
	}
	if len(rep.Applied) == 0 && len(rep.Retired) == 0 {
		fmt.Fprintln(env.Stdout, "cdc-relay is installed and up to date: nothing to change")
		return nil
	}
	for _, s := range rep.Applied {
		fmt.Fprintln(env.Stdout, "applied", s)
	}
	for _, s := range rep.Retired {
		// The name is a row of the database, not one of ours.
		fmt.Fprintln(env.Stdout, "forgot", safetext.Clean(s), "(no longer shipped: its objects now come from the current scripts)")
	}
	if len(rep.Applied) == 0 {
		return nil
	}
	fmt.Fprintln(env.Stdout, "installed. Next: cdc-relay config set DataSyncApiUrl https://...; config set DataSyncTokenUrl https://...; credentials set; config set DataSyncEnabled true")
	return nil
}

func runUninstall(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "uninstall")
	db := databaseFlag(fs, env)
	drop := fs.Bool("drop-queues", false, "also drop the queue, dead-letter and config tables and every queued row")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := schema.Uninstall(ctx, conn, schema.UninstallOptions{DropQueues: *drop}); err != nil {
		return err
	}
	if *drop {
		fmt.Fprintln(env.Stdout, "uninstalled: triggers, publications and Data Sync tables dropped")
	} else {
		fmt.Fprintln(env.Stdout, "uninstalled: triggers and publications dropped; queued rows kept (cdc-relay install brings capture back)")
	}
	return nil
}
