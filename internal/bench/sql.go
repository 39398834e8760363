package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdc-relay/cdc-relay/relay"
)

// MoveSQL and AckSQL are the relay's own move and acknowledge statements for the customer
// queue, so the SQL-only baseline measures exactly what the relay runs.
var MoveSQL, AckSQL = relay.CustomerMoveAckSQL()

// Moved is one row returned by MoveSQL, read the way the relay reads it.
type Moved struct {
	ID        int64
	ObjName   string
	Key       *string
	Action    string
	Payload   []byte
	CreatedAt time.Time
	Attempts  int
	Next      *time.Time
	Captured  bool
}

// Move moves up to n customer pending rows to progress with MoveSQL (order kept, fenced with
// the leadership epoch given) and returns them.
func Move(ctx context.Context, db *pgxpool.Pool, epoch int64, n int) ([]Moved, error) {
	rows, err := db.Query(ctx, MoveSQL, n, true, epoch, nil)
	if err != nil {
		return nil, fmt.Errorf("moving pending rows to progress: %w", err)
	}
	defer rows.Close()
	var out []Moved
	for rows.Next() {
		var m Moved
		if err := rows.Scan(&m.ID, &m.ObjName, &m.Key, &m.Action, &m.Payload, &m.CreatedAt, &m.Attempts, &m.Next, &m.Captured); err != nil {
			return nil, fmt.Errorf("reading moved rows: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("moving pending rows to progress: %w", err)
	}
	return out, nil
}

// Ack deletes delivered rows from the customer progress queue with AckSQL.
func Ack(ctx context.Context, db *pgxpool.Pool, ids []int64) error {
	if _, err := db.Exec(ctx, AckSQL, ids); err != nil {
		return fmt.Errorf("acknowledging %d rows: %w", len(ids), err)
	}
	return nil
}

// DrainSQL empties the customer pending queue the way the relay's database side does, without
// HTTP: one mover moving batch rows per transaction, and an acknowledger deleting whatever was
// moved while its previous DELETE ran (at most 5,000 ids), up to window rows in between. It
// returns the rows moved and acknowledged and the time taken.
func DrainSQL(ctx context.Context, db *pgxpool.Pool, batch, window int) (int, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// No relay runs: the baseline's moves pass the fence with the current epoch.
	var epoch int64
	if err := db.QueryRow(ctx, `SELECT epoch FROM data_sync_leader WHERE id = 1`).Scan(&epoch); err != nil {
		return 0, 0, fmt.Errorf("reading the leadership epoch: %w", err)
	}
	ch := make(chan []int64, max(1, window/batch))
	moveErr := make(chan error, 1)
	start := time.Now()
	go func() {
		defer close(ch)
		for {
			rows, err := Move(ctx, db, epoch, batch)
			if err != nil {
				moveErr <- err
				return
			}
			if len(rows) == 0 {
				moveErr <- nil
				return
			}
			ids := make([]int64, len(rows))
			for i, r := range rows {
				ids[i] = r.ID
			}
			select {
			case ch <- ids:
			case <-ctx.Done():
				moveErr <- ctx.Err()
				return
			}
		}
	}()
	total := 0
	for ids := range ch {
	more:
		for len(ids) < 5000 {
			select {
			case x, ok := <-ch:
				if !ok {
					break more
				}
				ids = append(ids, x...)
			default:
				break more
			}
		}
		if err := Ack(ctx, db, ids); err != nil {
			return total, time.Since(start), err
		}
		total += len(ids)
	}
	if err := <-moveErr; err != nil {
		return total, time.Since(start), err
	}
	return total, time.Since(start), nil
}

// fillBacklog queues n customer UPDATE rows with valid snapshots (customer ids first..first+n-1)
// directly into the pending queue, in statements of 100,000 rows, then vacuums the queue as
// autovacuum would have.
func (e *env) fillBacklog(ctx context.Context, conn *pgx.Conn, first, n int) error {
	const chunk = 100_000
	for lo := first; lo < first+n; lo += chunk {
		hi := min(lo+chunk, first+n) - 1
		if _, err := conn.Exec(ctx, `INSERT INTO data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured)
			SELECT 'Customer', g::text, 'UPDATE', ($1::text || g::text || $2::text)::json, $5
			FROM generate_series($3::bigint, $4::bigint) g`, e.jsonPrefix, e.jsonSuffix, lo, hi, !e.o.HandInserted); err != nil {
			return fmt.Errorf("%w: queueing the backlog: %w", ErrBench, err)
		}
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE data_sync_cust_pending_queue"); err != nil {
		return fmt.Errorf("%w: vacuuming the backlog: %w", ErrBench, err)
	}
	return nil
}
