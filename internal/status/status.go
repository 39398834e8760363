// Package status gathers what an operator asks first: how much is queued, how old the oldest
// undelivered change is, what is failing and why, whether Data Sync is on and whether the
// replication slot retains WAL. `cdc-relay status` prints it and /metrics exports it.
package status

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/relay"
)

// Report is everything status knows.
type Report struct {
	Enabled  bool                `json:"data_sync_enabled"`
	Settings relay.Settings      `json:"settings"`
	Queues   []relay.QueueStatus `json:"queues"`
	Failing  []relay.FailingRow  `json:"failing"`
	Slots    []cdc.SlotInfo      `json:"replication_slots"`
	WALLevel string              `json:"wal_level"`
	Leader   relay.LeaderStatus  `json:"leader"`
}

// Collect reads the report; failing lists at most maxFailing rows per queue.
func Collect(ctx context.Context, db *pgxpool.Pool, maxFailing int) (Report, error) {
	var r Report
	store := relay.NewStore(db)
	s, err := store.Settings(ctx)
	if err != nil {
		return r, err
	}
	r.Settings, r.Enabled = s, s.Enabled
	if r.Queues, err = store.QueueStatus(ctx); err != nil {
		return r, err
	}
	if r.Failing, err = store.FailingRows(ctx, maxFailing); err != nil {
		return r, err
	}
	if r.Leader, err = store.LeaderStatus(ctx); err != nil {
		return r, err
	}
	if r.WALLevel, err = store.WALLevel(ctx); err != nil {
		return r, err
	}
	r.Slots, err = cdc.SlotLag(ctx, db, cdc.DefaultSlotPrefix)
	if err != nil {
		return r, err
	}
	return r, nil
}

// Export sets the queue gauges m from the queue rows.
func Export(m *metrics.Queue, queues []relay.QueueStatus) {
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
