// Package status gathers what an operator asks first: how much is queued, how old the oldest
// undelivered change is, what is failing and why, whether Data Sync is on and whether the
// replication slot retains WAL. `cdc-relay status` prints it and /metrics exports it.
package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/relay"
)

// Queue is one row of the data_sync_status view.
type Queue struct {
	Queue            string     `json:"queue"`
	Stage            string     `json:"stage"`
	Rows             int64      `json:"rows"`
	OldestCreatedAt  *time.Time `json:"oldest_created_at,omitempty"`
	OldestAgeSeconds *float64   `json:"oldest_age_seconds,omitempty"`
	FailingRows      int64      `json:"failing_rows"`
	LastError        *string    `json:"last_error,omitempty"`
}

// Failing is a progress row whose last attempt failed.
type Failing struct {
	Queue       string     `json:"queue"`
	ID          int64      `json:"id"`
	UniqueID    *string    `json:"unique_id"`
	Action      string     `json:"action"`
	Attempts    int        `json:"attempts"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   *string    `json:"last_error,omitempty"`
	NextAttempt *time.Time `json:"next_attempt_at,omitempty"`
}

// Report is everything status knows.
type Report struct {
	Enabled  bool           `json:"data_sync_enabled"`
	Settings relay.Settings `json:"settings"`
	Queues   []Queue        `json:"queues"`
	Failing  []Failing      `json:"failing"`
	Slots    []cdc.SlotInfo `json:"replication_slots"`
	WALLevel string         `json:"wal_level"`
	Leader   Leader         `json:"leader"`
}

// Leader is the data_sync_leader row: which relay delivers, and the endpoint as it sees it.
type Leader struct {
	Holder               *string    `json:"holder"` // "host pid N"; nil when no relay leads
	Since                *time.Time `json:"since"`
	LeaseUntil           *time.Time `json:"lease_until"`
	Epoch                int64      `json:"epoch"`
	EndpointFailingSince *time.Time `json:"endpoint_failing_since"`
	EndpointError        *string    `json:"endpoint_error"`
}

// Collect reads the report; failing lists at most maxFailing rows per queue.
func Collect(ctx context.Context, db *pgxpool.Pool, maxFailing int) (Report, error) {
	var r Report
	s, err := relay.LoadSettings(ctx, db)
	if err != nil {
		return r, err
	}
	r.Settings, r.Enabled = s, s.Enabled
	if r.Queues, err = Queues(ctx, db); err != nil {
		return r, err
	}
	for _, q := range relay.Queues() {
		fr, err := db.Query(ctx, `SELECT id, unique_id, action, attempts, last_status, last_error, next_attempt_at
			FROM `+q.Progress+` WHERE attempts > 0 ORDER BY id LIMIT $1`, maxFailing)
		if err != nil {
			return r, fmt.Errorf("reading failing rows: %w", err)
		}
		for fr.Next() {
			f := Failing{Queue: q.Name}
			if err := fr.Scan(&f.ID, &f.UniqueID, &f.Action, &f.Attempts, &f.LastStatus, &f.LastError, &f.NextAttempt); err != nil {
				fr.Close()
				return r, fmt.Errorf("reading failing rows: %w", err)
			}
			r.Failing = append(r.Failing, f)
		}
		if err := fr.Err(); err != nil {
			return r, fmt.Errorf("reading failing rows: %w", err)
		}
	}
	if err := db.QueryRow(ctx, `SELECT holder, since, lease_until, epoch, endpoint_failing_since, endpoint_error
		FROM data_sync_leader WHERE id = 1`).Scan(&r.Leader.Holder, &r.Leader.Since, &r.Leader.LeaseUntil, &r.Leader.Epoch,
		&r.Leader.EndpointFailingSince, &r.Leader.EndpointError); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("reading data_sync_leader: %w", err)
	}
	if err := db.QueryRow(ctx, "SHOW wal_level").Scan(&r.WALLevel); err != nil {
		return r, fmt.Errorf("reading wal_level: %w", err)
	}
	r.Slots, err = cdc.SlotLag(ctx, db, cdc.DefaultSlotPrefix)
	if err != nil {
		return r, err
	}
	return r, nil
}

// Queues reads the data_sync_status view: one statement.
func Queues(ctx context.Context, db relay.Querier) ([]Queue, error) {
	rows, err := db.Query(ctx, `SELECT queue, stage, rows, oldest_created_at, oldest_age_seconds, failing_rows, last_error
		FROM data_sync_status`)
	if err != nil {
		return nil, fmt.Errorf("reading data_sync_status: %w", err)
	}
	defer rows.Close()
	var out []Queue
	for rows.Next() {
		var q Queue
		if err := rows.Scan(&q.Queue, &q.Stage, &q.Rows, &q.OldestCreatedAt, &q.OldestAgeSeconds, &q.FailingRows, &q.LastError); err != nil {
			return nil, fmt.Errorf("reading data_sync_status: %w", err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading data_sync_status: %w", err)
	}
	return out, nil
}

// Export sets the queue gauges m from the queue rows.
func Export(m *metrics.Queue, queues []Queue) {
	oldest := map[string]float64{}
	for _, q := range queues {
		m.Rows.WithLabelValues(q.Queue + "_" + q.Stage).Set(float64(q.Rows))
		if q.Stage != "failed" && q.OldestAgeSeconds != nil && *q.OldestAgeSeconds > oldest[q.Queue] {
			oldest[q.Queue] = *q.OldestAgeSeconds
		}
	}
	for _, name := range []string{"cust", "trn"} {
		m.OldestUndeliveredSeconds.WithLabelValues(name).Set(oldest[name])
	}
}
