package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Store runs every statement cdc-relay sends to the Data Sync tables, named by what it does:
// the relay's moves, loads, acknowledgements, recorded failures, dead letters and holds
// (store_queue.go), its leadership and endpoint state (store_leader.go), resync requests
// (store_resync.go), and what the commands read and change: settings, dead letters and status
// (store_admin.go). All SQL is fixed text: no identifier or value is ever built from
// configuration or payload strings. A Store holds no state of its own; the relay makes one on
// its pool, and one on each connection a statement must run on (the leader's presence session,
// the session's settings connection).
type Store struct{ db DB }

// DB is what a Store runs its statements on: *pgx.Conn, *pgxpool.Pool, *pgxpool.Conn and pgx.Tx
// satisfy it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// NewStore returns a Store running its statements on db.
func NewStore(db DB) *Store { return &Store{db: db} }

// deliveryStore is the part of Store a delivery session uses: the mover's, the request
// goroutines', the acknowledger's and the endpoint row's statements. *Store implements it; the
// relay's tests wrap it to make a chosen statement fail and check that nothing is lost.
type deliveryStore interface {
	ExpandSets(ctx context.Context, q *queue, await []uint32) (running []uint32, err error)
	Move(ctx context.Context, q *queue, n int, keepOrder bool, t *Term) ([]*row, error)
	AwaitAndMove(ctx context.Context, await []uint32, q *queue, n int, keepOrder bool, t *Term) (rows []*row, running []uint32, err error)
	Load(ctx context.Context, q *queue, after int64, n int) ([]*row, error)
	HoldBehind(ctx context.Context, q *queue, t *Term) (held int64, err error)
	Recheck(ctx context.Context, q *queue, ids []int64) (found []int64, err error)
	PendingDeletes(ctx context.Context, after int64, n int) ([]pendingDelete, error)
	RecordFailure(ctx context.Context, q *queue, ids []int64, f failure) (found []int64, err error)
	DeadLetter(ctx context.Context, ids queueIDs, f failure, keepOrder bool, t *Term) (parked, held int64, err error)
	Hold(ctx context.Context, q *queue, ids, behind []int64, t *Term) (held int64, err error)
	Ack(ctx context.Context, q *queue, ids []int64) error
	ActiveResync(ctx context.Context) (req activeResync, ok bool, err error)
	ResyncStep(ctx context.Context, n int) (page resyncPage, ok bool, err error)
	SetRelayState(ctx context.Context, s relayState) error
}

var _ deliveryStore = (*Store)(nil)

// failure is a failed attempt as it is recorded on rows.
type failure struct {
	status  int       // the receiver's HTTP status; 0 for none (no response, or a row found bad)
	msg     string    // last_error
	excerpt string    // the response body's excerpt (dead letters only)
	counted int       // 1: the attempt counts against the rows; 0: it does not
	next    time.Time // when the rows may be tried again (RecordFailure only)
}

func nullStatus(s int) *int {
	if s == 0 {
		return nil
	}
	return &s
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
