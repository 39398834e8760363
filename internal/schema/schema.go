// Package schema installs, upgrades and uninstalls cdc-relay's database objects from the SQL
// embedded by package sql.
//
// Versioned migrations run once each, in order, every one in its own transaction, and are
// recorded in data_sync_schema_version. Repeatable scripts (functions, triggers, publications,
// views) are re-applied only when their text changed, so a second install changes nothing. An
// advisory lock keeps two installs from interleaving. The row of a repeatable script that this
// version no longer ships (one renamed or split) is removed once every current script is
// applied.
package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	cdcsql "github.com/cdc-relay/cdc-relay/sql"
)

// ErrWALLevel is returned when the server's wal_level is not logical, which the relay's
// replication wake-up needs.
var ErrWALLevel = errors.New("wal_level is not logical")

// ErrPrivileges is returned when the installing role may not create the objects.
var ErrPrivileges = errors.New("insufficient privileges")

// installLockKey is the advisory lock that serialises installs and uninstalls.
const installLockKey = 7_240_113_001

// ErrForeignOwner is returned when a Data Sync object already exists and belongs to another
// role than the installing one: adopting it would let that role run code as the owner (a
// trigger on a queue table fires inside the capture functions, which run as the owner).
var ErrForeignOwner = errors.New("a Data Sync object belongs to another role")

// ErrBusy is returned when a script kept waiting for a lock (a CE table held by a long
// transaction) through every attempt.
var ErrBusy = errors.New("a table stayed locked by another transaction")

// Options tunes Install. The zero value is the documented default.
type Options struct {
	// AllowNonLogical installs even when wal_level is not logical (the relay then needs
	// --poll to run). Off by default, so a misconfigured server is caught at install time.
	AllowNonLogical bool
	// LockTimeout bounds each wait for a table lock (CREATE TRIGGER and ALTER TABLE on the CE
	// tables, which conflict with the CE application's writes). A script that waits longer is
	// rolled back and tried again after a backoff, so the application's writes never queue
	// behind an install waiting for a long transaction for more than this. Default 2s.
	LockTimeout time.Duration
	// LockAttempts is how many times a script is tried before Install gives up with ErrBusy.
	// Default 30.
	LockAttempts int
	// LockBackoff is the wait after the first lock timeout; it doubles after each further one,
	// up to 30s. Default 1s.
	LockBackoff time.Duration
	// OnLockRetry, when set, is called before each wait (the command prints it).
	OnLockRetry func(script string, attempt int, wait time.Duration, err error)
}

func (o *Options) defaults() {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.LockAttempts <= 0 {
		o.LockAttempts = 30
	}
	if o.LockBackoff <= 0 {
		o.LockBackoff = time.Second
	}
}

// maxLockBackoff caps the wait between two attempts of a script.
const maxLockBackoff = 30 * time.Second

// Report says what an Install or Uninstall did.
type Report struct {
	Applied []string // script names applied (empty when nothing changed)
	// Retired names the data_sync_schema_version rows Install removed: repeatable scripts an
	// earlier version applied and this one no longer ships (their objects now come from the
	// scripts applied). Empty for Uninstall.
	Retired []string
}

// Script is one embedded SQL file.
type Script struct {
	Name     string // e.g. "migrations/0002_data_sync.sql"
	Kind     string // "migration" or "repeatable"
	SQL      string
	Checksum string
}

// Scripts returns the embedded migrations then repeatable scripts, each group in name order.
func Scripts() ([]Script, error) { return scripts(cdcsql.Files) }

// scripts reads the migrations and repeatable scripts of fsys, laid out as package sql's Files.
func scripts(fsys fs.FS) ([]Script, error) {
	var out []Script
	for _, kind := range []string{"migrations", "repeatable"} {
		names, err := fs.Glob(fsys, kind+"/*.sql")
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			b, err := fs.ReadFile(fsys, n)
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(b)
			k := "migration"
			if kind == "repeatable" {
				k = "repeatable"
			}
			out = append(out, Script{Name: n, Kind: k, SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
		}
	}
	return out, nil
}

// WALLevel returns the server's wal_level.
func WALLevel(ctx context.Context, conn *pgx.Conn) (string, error) {
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return "", fmt.Errorf("reading wal_level: %w", err)
	}
	return level, nil
}

// CheckWALLevel returns an error wrapping ErrWALLevel, naming the fix, unless wal_level is logical.
func CheckWALLevel(ctx context.Context, conn *pgx.Conn) error {
	level, err := WALLevel(ctx, conn)
	if err != nil {
		return err
	}
	if level != "logical" {
		return fmt.Errorf("%w (it is %q): run ALTER SYSTEM SET wal_level = logical; as a superuser and restart PostgreSQL, or pass --poll to run without replication wake-ups (latency then equals the sweep interval)", ErrWALLevel, level)
	}
	return nil
}

// Install applies every migration not yet applied and every repeatable script whose text
// changed, then removes the rows of repeatable scripts no longer shipped.
func Install(ctx context.Context, conn *pgx.Conn, opts Options) (Report, error) {
	return install(ctx, conn, opts, cdcsql.Files)
}

// install is Install with the scripts of fsys, so tests can install another version's scripts.
func install(ctx context.Context, conn *pgx.Conn, opts Options, fsys fs.FS) (Report, error) {
	var rep Report
	opts.defaults()
	if !opts.AllowNonLogical {
		if err := CheckWALLevel(ctx, conn); err != nil {
			return rep, err
		}
	}
	scripts, err := scripts(fsys)
	if err != nil {
		return rep, fmt.Errorf("reading embedded SQL: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(installLockKey)); err != nil {
		return rep, fmt.Errorf("taking the install lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(installLockKey))

	if err := checkOwners(ctx, conn); err != nil {
		return rep, err
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS data_sync_schema_version (
		name text PRIMARY KEY, kind text NOT NULL, checksum text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return rep, wrapInstallErr("creating data_sync_schema_version", err)
	}
	applied := map[string]string{}
	rows, err := conn.Query(ctx, "SELECT name, checksum FROM data_sync_schema_version")
	if err != nil {
		return rep, fmt.Errorf("reading data_sync_schema_version: %w", err)
	}
	for rows.Next() {
		var n, c string
		if err := rows.Scan(&n, &c); err != nil {
			return rep, err
		}
		applied[n] = c
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("reading data_sync_schema_version: %w", err)
	}
	for _, s := range scripts {
		sum, done := applied[s.Name]
		if done && (s.Kind == "migration" || sum == s.Checksum) {
			continue
		}
		if err := applyScript(ctx, conn, s, opts); err != nil {
			return rep, err
		}
		rep.Applied = append(rep.Applied, s.Name)
	}
	retired, err := retire(ctx, conn, scripts)
	if err != nil {
		return rep, err
	}
	rep.Retired = retired
	return rep, nil
}

// retire removes the data_sync_schema_version rows of repeatable scripts not among scripts:
// ones an earlier version applied under a name this version no longer ships (a script renamed
// or split). It runs after every current script applied, so their objects are in place: the
// old row would only make the table disagree with the scripts shipped. Migration rows stay
// whatever the files: each records a change made to the data.
func retire(ctx context.Context, conn *pgx.Conn, scripts []Script) ([]string, error) {
	var current []string
	for _, s := range scripts {
		if s.Kind == "repeatable" {
			current = append(current, s.Name)
		}
	}
	rows, err := conn.Query(ctx, `DELETE FROM data_sync_schema_version
		WHERE kind = 'repeatable' AND NOT (name = ANY ($1)) RETURNING name`, current)
	if err != nil {
		return nil, fmt.Errorf("removing the rows of repeatable scripts no longer shipped: %w", err)
	}
	retired, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("removing the rows of repeatable scripts no longer shipped: %w", err)
	}
	sort.Strings(retired)
	return retired, nil
}

// applyScript runs one script and records it, in one transaction, with lock_timeout set: a
// script that times out waiting for a lock is rolled back and tried again after a backoff.
// The owner check runs in the same transaction, so an adopted object is never committed.
func applyScript(ctx context.Context, conn *pgx.Conn, s Script, opts Options) error {
	wait := opts.LockBackoff
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)",
				fmt.Sprintf("%dms", opts.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, s.SQL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO data_sync_schema_version (name, kind, checksum) VALUES ($1, $2, $3)
				ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`, s.Name, s.Kind, s.Checksum); err != nil {
				return err
			}
			return checkOwners(ctx, tx)
		})
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" { // lock_not_available
			if errors.Is(err, ErrForeignOwner) {
				return fmt.Errorf("applying %s: %w", s.Name, err)
			}
			return wrapInstallErr("applying "+s.Name, err)
		}
		if attempt >= opts.LockAttempts {
			return fmt.Errorf("applying %s: %w: still waiting for a lock after %d attempts of %s each (%s): find the long transaction in pg_stat_activity (or pg_locks) and run install again once it has ended: %w",
				s.Name, ErrBusy, attempt, opts.LockTimeout, pgErr.Message, err)
		}
		if opts.OnLockRetry != nil {
			opts.OnLockRetry(s.Name, attempt, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("applying %s: %w", s.Name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxLockBackoff)
	}
}

// querier is a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// checkOwners returns an error wrapping ErrForeignOwner, naming each object and its owner, when
// a Data Sync table, view, sequence, function or publication already belongs to another role
// than the installing one. Objects created with IF NOT EXISTS (data_sync_capture_hook,
// data_sync_cust_pending_set, data_sync_leader, data_sync_schema_version) and functions
// replaced by a superuser would otherwise be adopted silently.
func checkOwners(ctx context.Context, q querier) error {
	rows, err := q.Query(ctx, `
SELECT kind, name, owner FROM (
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'table' END AS kind,
           c.oid::regclass::text AS name, pg_get_userbyid(c.relowner) AS owner
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'data\_sync\_%'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'u')
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, pg_get_userbyid(p.proowner)
    FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace AND (p.proname LIKE 'data\_sync\_%' OR p.proname = 'merge_customers')
    UNION ALL
    SELECT 'publication', quote_ident(b.pubname), pg_get_userbyid(b.pubowner)
    FROM pg_publication b WHERE b.pubname LIKE 'data\_sync\_%'
) o
WHERE owner <> current_user
ORDER BY kind, name`)
	if err != nil {
		return fmt.Errorf("checking the owners of the Data Sync objects: %w", err)
	}
	var foreign []string
	for rows.Next() {
		var kind, name, owner string
		if err := rows.Scan(&kind, &name, &owner); err != nil {
			rows.Close()
			return fmt.Errorf("checking the owners of the Data Sync objects: %w", err)
		}
		foreign = append(foreign, fmt.Sprintf("%s %s is owned by %s", kind, name, owner))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("checking the owners of the Data Sync objects: %w", err)
	}
	if len(foreign) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s, not by the installing role: run install as that role if it is the owner of the CE tables; otherwise check what the object holds, then drop it (or ALTER ... OWNER TO the installing role) and run install again",
		ErrForeignOwner, strings.Join(foreign, "; "))
}

// UninstallOptions tunes Uninstall.
type UninstallOptions struct {
	// DropQueues also drops the queue, dead-letter and configuration tables and their rows.
	// Off by default: queued changes survive an uninstall and are delivered after a reinstall.
	DropQueues bool
}

// Uninstall removes triggers, functions, publications and views; with DropQueues also the
// Data Sync tables. The reference CE schema (migrations named *_ce_*) is never dropped: it holds
// the CRM's data.
func Uninstall(ctx context.Context, conn *pgx.Conn, opts UninstallOptions) (Report, error) {
	var rep Report
	names, err := fs.Glob(cdcsql.Files, "uninstall/*.sql")
	if err != nil {
		return rep, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(installLockKey)); err != nil {
		return rep, fmt.Errorf("taking the install lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(installLockKey))
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, n := range names {
			b, err := fs.ReadFile(cdcsql.Files, n)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(b)); err != nil {
				return fmt.Errorf("applying %s: %w", n, err)
			}
			rep.Applied = append(rep.Applied, n)
		}
		if _, err := tx.Exec(ctx, `DO $$ BEGIN
			IF to_regclass('data_sync_schema_version') IS NOT NULL THEN
				DELETE FROM data_sync_schema_version WHERE kind = 'repeatable';
			END IF; END $$`); err != nil {
			return err
		}
		if opts.DropQueues {
			b, err := fs.ReadFile(cdcsql.Files, "uninstall.sql")
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(b)); err != nil {
				return fmt.Errorf("dropping queues: %w", err)
			}
			rep.Applied = append(rep.Applied, "uninstall.sql")
		}
		return nil
	})
	if err != nil {
		return rep, wrapInstallErr("uninstalling", err)
	}
	return rep, nil
}

func wrapInstallErr(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42501" || strings.HasPrefix(pgErr.Message, "permission denied") || strings.HasPrefix(pgErr.Message, "must be owner")) {
		return fmt.Errorf("%s: %w: %s: run install as the owner of the CE tables (or a superuser); the relay itself can then run as the least-privileged cdc_relay role: %w", op, ErrPrivileges, pgErr.Message, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// ScriptName returns the base name of a script path, for messages.
func ScriptName(p string) string { return path.Base(p) }
