package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
)

// The statements on settings, dead letters and status: the relay reads its settings with them,
// and the commands (config, dead-letters, requeue, status) and the metrics gauges run them.

// settingsSQL reads data_sync_config. settingsAndResyncSQL adds one row of NULLs when a resync
// request is pending or running: the relay's sweep learns of a request whose doorbell ring was
// lost in the statement it sends anyway (data_sync_config.name is never NULL).
const (
	settingsSQL          = "SELECT name, coalesce(value, '') FROM data_sync_config"
	settingsAndResyncSQL = settingsSQL + `
UNION ALL SELECT NULL, NULL WHERE EXISTS (SELECT FROM data_sync_resync WHERE state IN ('pending', 'running'))`
)

// Settings reads data_sync_config.
func (s *Store) Settings(ctx context.Context) (Settings, error) {
	st, _, err := s.readSettings(ctx, settingsSQL)
	return st, err
}

// SettingsAndResync reads data_sync_config and whether a resync request is pending or running,
// in one statement.
func (s *Store) SettingsAndResync(ctx context.Context) (Settings, bool, error) {
	return s.readSettings(ctx, settingsAndResyncSQL)
}

func (s *Store) readSettings(ctx context.Context, sql string) (st Settings, resync bool, err error) {
	rows, err := s.db.Query(ctx, sql)
	if err != nil {
		return Settings{}, false, fmt.Errorf("reading data_sync_config (run cdc-relay install first?): %w", err)
	}
	defer rows.Close()
	st = DefaultSettings()
	for rows.Next() {
		var name, value *string
		if err := rows.Scan(&name, &value); err != nil {
			return Settings{}, false, fmt.Errorf("reading data_sync_config: %w", err)
		}
		if name == nil {
			resync = true
			continue
		}
		if d, ok := LookupSetting(*name); ok && *value != "" {
			d.apply(&st, *value)
		}
	}
	if err := rows.Err(); err != nil {
		return Settings{}, false, fmt.Errorf("reading data_sync_config: %w", err)
	}
	return st, resync, nil
}

// SettingValue is one row of data_sync_config as the config command shows it.
type SettingValue struct {
	Name  string
	Value string // "(not set)" for none
}

// SettingValues reads data_sync_config in the order of SettingDefs (unknown names last, by name).
func (s *Store) SettingValues(ctx context.Context) ([]SettingValue, error) {
	order := make([]string, len(SettingDefs))
	for i, d := range SettingDefs {
		order[i] = d.Name
	}
	rows, err := s.db.Query(ctx, `SELECT name, coalesce(value, '(not set)') FROM data_sync_config
		ORDER BY array_position($1::text[], name), name`, order)
	if err != nil {
		return nil, fmt.Errorf("reading data_sync_config (run cdc-relay install first?): %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[SettingValue])
	if err != nil {
		return nil, fmt.Errorf("reading data_sync_config: %w", err)
	}
	return list, nil
}

// SetSetting stores a Data Sync setting and returns what was stored: the database validates and
// canonicalises the name and value (data_sync_config_validate), and a value it refuses comes
// back as its message and the hint naming the values it accepts.
func (s *Store) SetSetting(ctx context.Context, name, value string) (SettingValue, error) {
	var v SettingValue
	err := s.db.QueryRow(ctx, `INSERT INTO data_sync_config (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value
			RETURNING name, coalesce(value, '(not set)')`, name, value).Scan(&v.Name, &v.Value)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Hint != "" {
			return v, fmt.Errorf("%s: %s", safetext.Clean(pgErr.Message), safetext.Clean(pgErr.Hint))
		}
		return v, fmt.Errorf("setting %s: %w", safetext.Clean(name), err)
	}
	return v, nil
}

// DeadLetter is one row of a dead-letter table (data_sync_cust_failed, data_sync_trn_failed).
type DeadLetter struct {
	Queue    string // "cust" or "trn"
	ID       int64
	UniqueID string // "null" when the row has none
	Action   string
	Reason   string // "failed", or "held" behind an earlier dead letter of its key
	Attempts int
	Status   string // the last HTTP status, "-" when none
	FailedAt time.Time
	Error    string
}

// DeadLetters lists up to limit dead letters of each queue family, in id order.
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	for _, q := range queues {
		rows, err := s.db.Query(ctx, `SELECT id, coalesce(unique_id, 'null'), coalesce(action, ''), reason, attempts,
			coalesce(last_status::text, '-'), failed_at, coalesce(last_error, '') FROM `+q.failed+` ORDER BY id LIMIT $1`, limit)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", q.failed, err)
		}
		out, err = pgx.AppendRows(out, rows, func(row pgx.CollectableRow) (DeadLetter, error) {
			d := DeadLetter{Queue: q.name}
			err := row.Scan(&d.ID, &d.UniqueID, &d.Action, &d.Reason, &d.Attempts, &d.Status, &d.FailedAt, &d.Error)
			return d, err
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", q.failed, err)
		}
	}
	return out, nil
}

// RequeueSelection chooses the dead letters Requeue puts back; set exactly one field.
type RequeueSelection struct {
	All         bool
	ID          int64  // this dead letter (and the rows held behind it)
	Customer    string // every dead letter of this customer id
	Transaction string // every dead letter of this retail transaction id
}

// Requeue puts the chosen dead letters, and the rows held behind each, back in the pending
// queues, in one transaction, and returns how many rows it moved. The rows are chosen here and
// moved by data_sync_requeue (SECURITY DEFINER), so this runs as the relay's least-privileged
// role too.
func (s *Store) Requeue(ctx context.Context, sel RequeueSelection) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		for _, q := range queues {
			var where string
			var arg any
			switch {
			case sel.All:
				where, arg = "$1::bool", true
			case sel.ID != 0:
				where, arg = "id = $1", sel.ID
			case sel.Customer != "":
				if q.name != "cust" {
					continue
				}
				where, arg = "unique_id = $1", sel.Customer
			case sel.Transaction != "":
				if q.name != "trn" {
					continue
				}
				where, arg = "unique_id = $1", sel.Transaction
			default:
				return errors.New("requeueing: no dead letters chosen")
			}
			var moved int64
			if err := tx.QueryRow(ctx, `SELECT data_sync_requeue($2, ARRAY(SELECT id FROM `+q.failed+` WHERE `+where+`))`,
				arg, q.name).Scan(&moved); err != nil {
				return fmt.Errorf("requeueing from %s: %w", q.failed, err)
			}
			n += moved
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// QueueStatus is one row of the data_sync_status view.
type QueueStatus struct {
	Queue            string     `json:"queue"`
	Stage            string     `json:"stage"`
	Rows             int64      `json:"rows"`
	OldestCreatedAt  *time.Time `json:"oldest_created_at,omitempty"`
	OldestAgeSeconds *float64   `json:"oldest_age_seconds,omitempty"`
	FailingRows      int64      `json:"failing_rows"`
	LastError        *string    `json:"last_error,omitempty"`
}

// QueueStatus reads the data_sync_status view: one statement.
func (s *Store) QueueStatus(ctx context.Context) ([]QueueStatus, error) {
	rows, err := s.db.Query(ctx, `SELECT queue, stage, rows, oldest_created_at, oldest_age_seconds, failing_rows, last_error
		FROM data_sync_status`)
	if err != nil {
		return nil, fmt.Errorf("reading data_sync_status: %w", err)
	}
	list, err := pgx.AppendRows([]QueueStatus(nil), rows, pgx.RowToStructByPos[QueueStatus])
	if err != nil {
		return nil, fmt.Errorf("reading data_sync_status: %w", err)
	}
	return list, nil
}

// FailingRow is a progress row whose last attempt failed.
type FailingRow struct {
	Queue       string     `json:"queue"`
	ID          int64      `json:"id"`
	UniqueID    *string    `json:"unique_id"`
	Action      string     `json:"action"`
	Attempts    int        `json:"attempts"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   *string    `json:"last_error,omitempty"`
	NextAttempt *time.Time `json:"next_attempt_at,omitempty"`
}

// FailingRows lists up to limit failing progress rows of each queue family, in id order.
func (s *Store) FailingRows(ctx context.Context, limit int) ([]FailingRow, error) {
	var out []FailingRow
	for _, q := range queues {
		rows, err := s.db.Query(ctx, `SELECT id, unique_id, action, attempts, last_status, last_error, next_attempt_at
			FROM `+q.progress+` WHERE attempts > 0 ORDER BY id LIMIT $1`, limit)
		if err != nil {
			return nil, fmt.Errorf("reading failing rows: %w", err)
		}
		out, err = pgx.AppendRows(out, rows, func(row pgx.CollectableRow) (FailingRow, error) {
			f := FailingRow{Queue: q.name}
			err := row.Scan(&f.ID, &f.UniqueID, &f.Action, &f.Attempts, &f.LastStatus, &f.LastError, &f.NextAttempt)
			return f, err
		})
		if err != nil {
			return nil, fmt.Errorf("reading failing rows: %w", err)
		}
	}
	return out, nil
}

// LeaderStatus is the data_sync_leader row: which relay delivers, and the endpoint as it sees it.
type LeaderStatus struct {
	Holder               *string    `json:"holder"` // "host pid N"; nil when no relay leads
	Since                *time.Time `json:"since"`
	LeaseUntil           *time.Time `json:"lease_until"`
	Epoch                int64      `json:"epoch"`
	EndpointFailingSince *time.Time `json:"endpoint_failing_since"`
	EndpointError        *string    `json:"endpoint_error"`
	// The leader's limit on requests in flight (nil before a leader recorded one), its bound
	// and whether it adapts (or is fixed by --concurrency).
	ConcurrencyLimit    *int  `json:"concurrency_limit"`
	ConcurrencyMax      *int  `json:"concurrency_max"`
	ConcurrencyAdaptive *bool `json:"concurrency_adaptive"`
}

// LeaderStatus reads the data_sync_leader row (zero when it has none).
func (s *Store) LeaderStatus(ctx context.Context) (LeaderStatus, error) {
	var l LeaderStatus
	if err := s.db.QueryRow(ctx, `SELECT holder, since, lease_until, epoch, endpoint_failing_since, endpoint_error,
		concurrency_limit, concurrency_max, concurrency_adaptive
		FROM data_sync_leader WHERE id = 1`).Scan(&l.Holder, &l.Since, &l.LeaseUntil, &l.Epoch,
		&l.EndpointFailingSince, &l.EndpointError, &l.ConcurrencyLimit, &l.ConcurrencyMax,
		&l.ConcurrencyAdaptive); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return l, fmt.Errorf("reading data_sync_leader: %w", err)
	}
	return l, nil
}

// WALLevel reads the server's wal_level.
func (s *Store) WALLevel(ctx context.Context) (string, error) {
	var level string
	if err := s.db.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return "", fmt.Errorf("reading wal_level: %w", err)
	}
	return level, nil
}
