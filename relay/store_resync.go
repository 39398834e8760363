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

// The relay's statements on resync requests (resync.go) and those of cdc-relay resync, status
// and demo.

const (
	resyncActiveSQL = `SELECT id, coalesce(rate, 0) FROM data_sync_resync
WHERE state IN ('pending', 'running') ORDER BY id LIMIT 1`
	resyncStepSQL = `SELECT request_id, queued_now, selected_total, coalesce(estimated, 0),
    coalesce(rows_per_second, 0), request_state, coalesce(queued_ids, '{}'), pg_current_xact_id()::xid
FROM data_sync_resync_step($1)`
)

// activeResync is the resync request the relay works on.
type activeResync struct {
	id   int64
	rate int // rows per second at most; 0: no cap
}

// ActiveResync returns the oldest pending or running resync request; ok is false when there is
// none.
func (s *Store) ActiveResync(ctx context.Context) (req activeResync, ok bool, err error) {
	err = s.db.QueryRow(ctx, resyncActiveSQL).Scan(&req.id, &req.rate)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return req, false, nil
	case err != nil:
		return req, false, fmt.Errorf("looking for resync requests: %w", err)
	}
	return req, true, nil
}

// resyncPage is what one data_sync_resync_step queued.
type resyncPage struct {
	id                  int64 // the request
	queued              int   // rows queued now
	selected, estimated int64 // keys handled so far, of about estimated
	rate                int   // the request's rows per second at most (0: no cap)
	state               string
	ids                 []int64 // the pending ids of the rows queued
	xid                 uint32  // the step's transaction, which rings the doorbell for them
}

// ResyncStep queues the next page, up to n rows, of the active resync request
// (data_sync_resync_step); ok is false when no request was left to step (cancelled or finished
// elsewhere).
func (s *Store) ResyncStep(ctx context.Context, n int) (p resyncPage, ok bool, err error) {
	err = s.db.QueryRow(ctx, resyncStepSQL, n).Scan(&p.id, &p.queued, &p.selected, &p.estimated, &p.rate, &p.state, &p.ids,
		&p.xid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return p, false, nil
	case err != nil:
		return p, false, fmt.Errorf("queueing the next page: %w", err)
	}
	return p, true, nil
}

// ResyncRequest is one request to insert into data_sync_resync: an object and exactly one
// selection (checked by the table's validate trigger).
type ResyncRequest struct {
	Object         string // "customer" or "transaction"
	Action         string // "UPDATE" or "CREATE"
	All            bool
	CustomerIDs    []int64
	TransactionIDs []string
	SegmentID      *int64
	ChangedSince   *time.Time
	SinceDate      *time.Time
	Rate           *int // rows per second at most; nil: no cap
}

// StartResync stores a resync request for the running relay and returns its id and the number
// of keys it is estimated to select.
func (s *Store) StartResync(ctx context.Context, req ResyncRequest) (id, estimate int64, err error) {
	err = s.db.QueryRow(ctx, `INSERT INTO data_sync_resync (object, action, select_all, customer_ids, transaction_ids,
		segment_id, changed_since, since_date, rate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING id, estimated_total`,
		req.Object, req.Action, req.All, req.CustomerIDs, req.TransactionIDs, req.SegmentID, req.ChangedSince,
		req.SinceDate, req.Rate).Scan(&id, &estimate)
	if err != nil {
		return 0, 0, resyncError("starting the resync", err)
	}
	return id, estimate, nil
}

// ResyncStatus is one row of data_sync_resync_status.
type ResyncStatus struct {
	ID          int64
	Object      string
	Action      string
	Selection   string
	State       string
	Selected    int64
	Queued      int64
	Estimate    *int64
	Percent     *float64
	RateLimit   *int
	RowsPerSec  *float64
	SecondsLeft *float64
	LastError   *string
}

// ResyncSet chooses the resync requests ResyncRequests lists.
type ResyncSet int

// The sets of resync requests.
const (
	AllResyncs    ResyncSet = iota
	ActiveResyncs           // pending or running
	RecentResyncs           // active, or finished within the last second (the demo's progress lines)
)

var resyncSetWhere = map[ResyncSet]string{
	AllResyncs:    `true`,
	ActiveResyncs: `state IN ('pending', 'running')`,
	RecentResyncs: `state IN ('pending', 'running') OR finished_at > now() - interval '1 second'`,
}

// ResyncRequests returns the resync requests of set, in id order.
func (s *Store) ResyncRequests(ctx context.Context, set ResyncSet) ([]ResyncStatus, error) {
	rows, err := s.db.Query(ctx, `SELECT id, object, action, selection, state, selected, queued, estimated_total,
		percent::float8, rate_limit, rows_per_second::float8, seconds_left::float8, last_error
		FROM data_sync_resync_status WHERE `+resyncSetWhere[set]+` ORDER BY id`)
	if err != nil {
		return nil, resyncError("reading resync requests", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ResyncStatus])
	if err != nil {
		return nil, resyncError("reading resync requests", err)
	}
	return list, nil
}

// CancelResync cancels resync request id if it is pending or running. state is the request's
// state afterwards, nil when there is no such request.
func (s *Store) CancelResync(ctx context.Context, id int64) (cancelled bool, state *string, err error) {
	err = s.db.QueryRow(ctx, `WITH c AS (
		UPDATE data_sync_resync SET state = 'cancelled', finished_at = now()
		WHERE id = $1 AND state IN ('pending', 'running') RETURNING id)
		SELECT EXISTS (SELECT 1 FROM c), (SELECT r.state FROM data_sync_resync r WHERE r.id = $1)`, id).Scan(&cancelled, &state)
	if err != nil {
		return false, nil, resyncError("cancelling the resync", err)
	}
	return cancelled, state, nil
}

// resyncError turns a database error about resync requests into the message a user can act on.
func resyncError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "42P01":
			return fmt.Errorf("%s: data_sync_resync does not exist: run cdc-relay install (this version) first", op)
		case pgErr.Code == "42501":
			return fmt.Errorf("%s: %s: run resync as the owner of the Data Sync tables (the relay's role may not start one)", op, safetext.Clean(pgErr.Message))
		case pgErr.Hint != "":
			return fmt.Errorf("%s: %s: %s", op, safetext.Clean(pgErr.Message), safetext.Clean(pgErr.Hint))
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
