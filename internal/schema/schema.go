// Package schema installs, upgrades and uninstalls cdc-relay's database objects from the SQL
// embedded by package sql.
//
// Versioned migrations run once each, in order, every one in its own transaction, and are
// recorded in data_sync_schema_version. Repeatable scripts (functions, triggers, publications,
// views) are re-applied only when their text changed, so a second install changes nothing. An
// advisory lock keeps two installs from interleaving.
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

// Options tunes Install.
type Options struct {
	// AllowNonLogical installs even when wal_level is not logical (the relay then needs
	// --poll to run). Off by default, so a misconfigured server is caught at install time.
	AllowNonLogical bool
}

// Report says what an Install or Uninstall did.
type Report struct {
	Applied []string // script names applied (empty when nothing changed)
}

// Script is one embedded SQL file.
type Script struct {
	Name     string // e.g. "migrations/0002_data_sync.sql"
	Kind     string // "migration" or "repeatable"
	SQL      string
	Checksum string
}

// Scripts returns the embedded migrations then repeatable scripts, each group in name order.
func Scripts() ([]Script, error) {
	var out []Script
	for _, kind := range []string{"migrations", "repeatable"} {
		names, err := fs.Glob(cdcsql.Files, kind+"/*.sql")
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			b, err := fs.ReadFile(cdcsql.Files, n)
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

// Install applies every migration not yet applied and every repeatable script whose text changed.
func Install(ctx context.Context, conn *pgx.Conn, opts Options) (Report, error) {
	var rep Report
	if !opts.AllowNonLogical {
		if err := CheckWALLevel(ctx, conn); err != nil {
			return rep, err
		}
	}
	scripts, err := Scripts()
	if err != nil {
		return rep, fmt.Errorf("reading embedded SQL: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(installLockKey)); err != nil {
		return rep, fmt.Errorf("taking the install lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(installLockKey))

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
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, s.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO data_sync_schema_version (name, kind, checksum) VALUES ($1, $2, $3)
				ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`, s.Name, s.Kind, s.Checksum)
			return err
		}); err != nil {
			return rep, wrapInstallErr("applying "+s.Name, err)
		}
		rep.Applied = append(rep.Applied, s.Name)
	}
	return rep, nil
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
