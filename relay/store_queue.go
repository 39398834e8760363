package relay

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// queue names one Data Sync queue family (pending, progress, failed) and holds its statements,
// which only the Store runs.
type queue struct {
	idx      int    // position in queues
	name     string // "cust" or "trn", for logs and metrics
	pending  string
	progress string
	failed   string
	// expandSQL turns sets of customers (data_sync_cust_pending_set, written by bulk statements
	// when their snapshot is taken at move) into pending rows; empty for queues without sets.
	expandSQL string

	moveSQL, loadSQL, ackSQL, failSQL, deadSQL, holdSQL string
	checkSQL, holdBehindSQL                             string
}

// queues are the two Data Sync queue families, customers first. buildSQL selects (unique_id,
// json_object) for the keys of keys (the move's key-only rows to snapshot, see moveSQL): the
// customers of a move in one set-based call, transactions one call per key. A move with no
// key to build makes no call (a one-time filter): the set-based call costs milliseconds even
// for no customer, on the path of every change queued with its JSON.
var queues = []*queue{
	withSets(newQueue(0, "cust", "data_sync_cust_pending_queue", "data_sync_cust_progress_queue", "data_sync_cust_failed",
		`SELECT s.customer_id::text, s.json_object
    FROM data_sync_snapshot_customers(ARRAY(SELECT k.unique_id::bigint FROM keys k WHERE k.build)) s
    WHERE EXISTS (SELECT FROM keys k WHERE k.build)`,
		"m.unique_id ~ '^[0-9]{1,18}$'"),
		"SELECT data_sync_expand_customer_sets($1)"),
	newQueue(1, "trn", "data_sync_trn_pending_queue", "data_sync_trn_progress_queue", "data_sync_trn_failed",
		`SELECT u.unique_id, data_sync_snapshot_transaction(u.unique_id)
    FROM (SELECT DISTINCT k.unique_id FROM keys k WHERE k.build) u`,
		"m.unique_id IS NOT NULL"),
}

// noFlushWait is a condition that is always true and makes the statement's transaction commit
// without waiting for the WAL flush (synchronous_commit off for that transaction alone; a
// one-time filter, so also when no row matches). The move, the acknowledgement, the record of
// a failed attempt and the re-check before a retry use it: a crash that loses one of them
// loses everything after it too (WAL survives as a prefix), and leaves rows to be sent again,
// never a row lost.
const noFlushWait = `(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL`

// CustomerMoveAckSQL returns the relay's own statements for the customer queue: the move
// (parameters: batch size, keep order, the current data_sync_leader epoch, NULL; it returns
// the moved rows) and the acknowledgement (parameter: id array). The benchmark's SQL-only
// baseline runs exactly these.
func CustomerMoveAckSQL() (move, ack string) { return queues[0].moveSQL, queues[0].ackSQL }

func newQueue(idx int, name, pending, progress, failed, buildSQL, keyCheck string) *queue {
	q := &queue{idx: idx, name: name, pending: pending, progress: progress, failed: failed}
	// Move one batch from pending to progress in one transaction. The claimed ids are pinned in a
	// MATERIALIZED CTE (a plain sub-select may be re-run and claim more than $1 rows). Rows whose
	// key already has a dead letter are held behind it ($2 = keep order). The JSON is built here
	// for rows our capture triggers queued without it (snapshot at move): whatever
	// DataSyncSnapshotMode is now, since rows queued before a switch to 'capture' still need it.
	// The keys to build are pinned in keys and their JSON in built (MATERIALIZED: built once,
	// however often the planner would evaluate an expression). Rows are inserted, and so
	// returned, in id order, the order the window takes them in. A row inserted by hand without
	// JSON is not built: it is a bad row. A row whose customer or transaction no longer exists is
	// dropped: it was deleted after the row was queued, and its DELETE (queued by the delete,
	// which purged the rows it could see) says the rest.
	// The leadership fence ($3 epoch, $4 lease renewal or NULL; see leader.go) gates the DELETE
	// (a sub-select without columns of the query is a one-time filter, evaluated before any row
	// and also when pending is empty): the move commits before a takeover or fails and moves
	// nothing. The move commits without waiting for the WAL flush (synchronous_commit off for
	// this transaction alone): it is on the path of every change, and it need not be durable.
	// A crash that loses it (PostgreSQL's, before the WAL writer or any later durable commit
	// flushed it: WAL survives as a prefix) loses everything after it too, its rows'
	// acknowledgements included, and leaves its rows in pending, where the next move finds them:
	// they are sent again, in id order, as rows a relay crash leaves in progress are (at least
	// once). The rows themselves were queued by the CE's own durable commits.
	q.moveSQL = fmt.Sprintf(`
WITH ids AS MATERIALIZED (
    SELECT id FROM %[1]s ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
), fence AS MATERIALIZED (
    SELECT data_sync_leader_fence($3, $4) AND %[6]s AS ok
), moved AS (
    DELETE FROM %[1]s p USING ids WHERE (SELECT ok FROM fence) AND p.id = ids.id
    RETURNING p.id, p.obj_name, p.unique_id, p.action, p.json_object, p.created_at, p.captured
), blocked AS MATERIALIZED (
    SELECT m.id, (SELECT min(f.id) FROM %[3]s f WHERE f.unique_id = m.unique_id) AS behind
    FROM moved m
), held AS (
    INSERT INTO %[3]s (id, obj_name, unique_id, action, json_object, created_at, reason, last_error)
    SELECT m.id, m.obj_name, m.unique_id, m.action, m.json_object, m.created_at, 'held',
           'held behind dead letter ' || b.behind
    FROM moved m JOIN blocked b ON b.id = m.id
    WHERE $2 AND b.behind IS NOT NULL
    RETURNING id
), keys AS MATERIALIZED (
    SELECT m.id, m.unique_id, m.captured AND m.json_object IS NULL AND m.action <> 'DELETE' AND %[5]s AS build
    FROM moved m JOIN blocked b ON b.id = m.id
    WHERE NOT ($2 AND b.behind IS NOT NULL)
), built (unique_id, json_object) AS MATERIALIZED (
    %[4]s
)
INSERT INTO %[2]s (id, obj_name, unique_id, action, json_object, created_at, captured)
SELECT m.id, m.obj_name, m.unique_id, m.action, CASE WHEN k.build THEN j.json_object ELSE m.json_object END,
       m.created_at, m.captured OR k.build
FROM moved m JOIN keys k ON k.id = m.id
LEFT JOIN built j ON k.build AND j.unique_id = m.unique_id
WHERE NOT (k.build AND j.json_object IS NULL)
ORDER BY m.id
RETURNING id, obj_name, unique_id, action, json_object, created_at, attempts, next_attempt_at, captured`,
		pending, progress, failed, buildSQL, keyCheck, noFlushWait)
	q.loadSQL = fmt.Sprintf(`SELECT id, obj_name, unique_id, action, json_object, created_at, attempts, next_attempt_at, captured
FROM %s WHERE id > $1 ORDER BY id LIMIT $2`, progress)
	// Acknowledge delivered rows. The commit does not wait for the WAL flush (synchronous_commit
	// off for this transaction alone, set in a one-time filter): a crash can lose only the last
	// acknowledgements (WAL survives as a prefix: any later durable commit, a move's included,
	// flushes them), and their rows are then sent again, in order, as any row a crash left in
	// progress: at least once, as before. The acknowledgements no longer compete for the flush
	// with the CE's commits and the moves, which are on the path of every change.
	q.ackSQL = fmt.Sprintf(`DELETE FROM %s WHERE id = ANY($1) AND %s`, progress, noFlushWait)
	// Record a failed attempt ($5 = 1 counts it, 0 while the endpoint fails as a whole). Rows
	// not returned are gone: purged by a customer's delete while the relay held them. Like an
	// acknowledgement, it does not wait for the WAL flush: a crash that loses it loses only the
	// count of an attempt and its error text (the rows are sent again sooner), and a burst of
	// refusals (a 429 for each request over a receiver's cap) would otherwise be as many
	// flushes on the path of the deliveries.
	q.failSQL = fmt.Sprintf(`UPDATE %s SET attempts = attempts + $5, last_status = $2, last_error = $3,
    last_attempt_at = now(), next_attempt_at = $4 WHERE id = ANY($1) AND %s RETURNING id`, progress, noFlushWait)
	// Re-check rows before a retry: the rows not returned were purged (their customer was
	// deleted) and must not be sent. It writes only last_attempt_at, without waiting for the
	// flush either.
	q.checkSQL = fmt.Sprintf(`UPDATE %s SET last_attempt_at = now() WHERE id = ANY($1) AND %s RETURNING id`,
		progress, noFlushWait)
	// Dead-letter rows by id ($1), counting this attempt ($2 = 1) or not (0, rows found bad
	// before sending), and, with $6 (keep order), hold every later progress row of their keys
	// behind them: one statement, so no crash can leave a dead letter whose later rows are
	// still sendable. It returns how many rows were parked and how many held. $7, $8: the
	// leadership fence, as in the move.
	q.deadSQL = fmt.Sprintf(`WITH f AS MATERIALIZED (SELECT data_sync_leader_fence($7, $8) AS ok
), d AS (DELETE FROM %[1]s WHERE (SELECT ok FROM f) AND id = ANY($1) RETURNING *
), parked AS (
    INSERT INTO %[2]s (id, obj_name, unique_id, action, json_object, created_at, reason, attempts,
        last_status, last_error, response_excerpt)
    SELECT id, obj_name, unique_id, action, json_object, created_at, 'failed', attempts + $2, $3, $4, $5 FROM d
    RETURNING id
), h AS (
    DELETE FROM %[1]s p
    USING (SELECT unique_id, min(id) AS behind FROM d WHERE unique_id IS NOT NULL GROUP BY unique_id) k
    WHERE $6 AND p.unique_id = k.unique_id AND p.id > k.behind AND p.id <> ALL ($1)
    RETURNING p.*, k.behind
), held AS (
    %[3]s
    RETURNING id
)
SELECT (SELECT count(*) FROM parked), (SELECT count(*) FROM held)`, progress, failed, holdInto(failed, "h"))
	// Hold the given progress rows ($1) behind the dead letters given for each ($2): rows the
	// relay held in memory, or moved, after their key was dead-lettered. $3, $4: the fence.
	q.holdSQL = fmt.Sprintf(`WITH f AS MATERIALIZED (SELECT data_sync_leader_fence($3, $4) AS ok
), h AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS h(id, behind)
), d AS (
    DELETE FROM %[1]s p USING h WHERE (SELECT ok FROM f) AND p.id = h.id RETURNING p.*, h.behind
)
%[2]s`, progress, holdInto(failed, "d"))
	// At the start of a session, before progress is loaded: hold progress rows whose key has a
	// dead letter (as the move does for pending rows), so a row a crash left in progress
	// behind a dead letter is never sent past it. $1, $2: the fence.
	q.holdBehindSQL = fmt.Sprintf(`WITH fence AS MATERIALIZED (SELECT data_sync_leader_fence($1, $2) AS ok
), d AS (
    DELETE FROM %[1]s p
    USING (SELECT unique_id, min(id) AS behind FROM %[2]s WHERE unique_id IS NOT NULL GROUP BY unique_id) f
    WHERE (SELECT ok FROM fence) AND p.unique_id = f.unique_id
    RETURNING p.*, f.behind
)
%[3]s`, progress, failed, holdInto(failed, "d"))
	return q
}

// holdInto is the INSERT that parks the progress rows of relation from (with a column behind,
// the dead letter they wait for) in the dead-letter table failed, reason held.
func holdInto(failed, from string) string {
	return fmt.Sprintf(`INSERT INTO %s (id, obj_name, unique_id, action, json_object, created_at, reason, attempts,
    last_status, last_error)
SELECT id, obj_name, unique_id, action, json_object, created_at, 'held', attempts, last_status,
    'held behind dead letter ' || behind FROM %s`, failed, from)
}

func withSets(q *queue, expandSQL string) *queue {
	q.expandSQL = expandSQL
	return q
}

// expandSetsPerMove bounds the set rows one move expands (each may hold any number of customers).
const expandSetsPerMove = 100

func scanRows(q *queue, rows pgx.Rows) ([]*row, error) {
	defer rows.Close()
	var out []*row
	for rows.Next() {
		r := &row{q: q}
		var key *string
		var next *time.Time
		if err := rows.Scan(&r.id, &r.objName, &key, &r.action, &r.payload, &r.createdAt, &r.attempts, &next, &r.captured); err != nil {
			return nil, err
		}
		if key == nil {
			r.keyNull = true
		} else {
			r.key = *key
		}
		if next != nil {
			r.next = *next
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ExpandSets turns sets of customers into pending rows (expandSQL), in a transaction of its
// own: a crash between it and the move leaves them in pending, where the next move finds them.
// It first waits, in the same round trip, for the transactions await to be visible (as
// AwaitAndMove does): a set a ringing commit wrote must be expanded by this call, not left for
// the next sweep. It returns the transactions still invisible then (await itself for a queue
// family without sets, for which it does nothing).
func (s *Store) ExpandSets(ctx context.Context, q *queue, await []uint32) ([]uint32, error) {
	if q.expandSQL == "" {
		return await, nil
	}
	var running []uint32
	b := &pgx.Batch{}
	if len(await) > 0 {
		queueAwait(b, await, &running)
	}
	b.Queue(q.expandSQL, expandSetsPerMove)
	if err := s.db.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("expanding %s pending sets: %w", q.name, err)
	}
	return running, nil
}

// queueAwait queues awaitSQL for the transactions await in b; the transactions still invisible
// after it go to running.
func queueAwait(b *pgx.Batch, await []uint32, running *[]uint32) {
	ids := make([]string, len(await))
	for i, x := range await {
		ids[i] = strconv.FormatUint(uint64(x), 10)
	}
	b.Queue(awaitSQL, ids, RecheckSpan.Milliseconds()).QueryRow(func(row pgx.Row) error {
		var texts []string
		if err := row.Scan(&texts); err != nil {
			return fmt.Errorf("waiting for queued commits to be visible: %w", err)
		}
		for _, id := range texts {
			x, err := strconv.ParseUint(id, 10, 32)
			if err != nil {
				return fmt.Errorf("waiting for queued commits to be visible: transaction id %q: %w", id, err)
			}
			*running = append(*running, uint32(x))
		}
		return nil
	})
}

// Move moves up to n pending rows to progress and returns them (moveSQL), fenced by the
// leadership term t.
func (s *Store) Move(ctx context.Context, q *queue, n int, keepOrder bool, t *Term) ([]*row, error) {
	f := t.fence()
	rows, err := s.db.Query(ctx, q.moveSQL, n, keepOrder, f.epoch, f.renew)
	var out []*row
	if err == nil {
		out, err = scanRows(q, rows)
	}
	if err = f.done(err); err != nil {
		return nil, fmt.Errorf("moving %s pending rows to progress: %w", q.name, err)
	}
	return out, nil
}

// awaitSQL waits (at most its second argument, in ms) until the given transactions are visible
// to new snapshots and returns those still invisible then (35_wakeup.sql).
const awaitSQL = `SELECT data_sync_await_commit($1::text[]::xid[], $2)::text[]`

// AwaitAndMove is Move, first waiting (at most RecheckSpan) until the transactions await are
// visible to new snapshots (the doorbell can ring an instant before a commit is), so that the
// move sees what they queued. It returns those still invisible then (a commit waiting for a
// synchronous standby, say), which the relay waits for again. The wait and the move go in one
// round trip and one transaction (the wait writes nothing): a ring costs one round trip.
func (s *Store) AwaitAndMove(ctx context.Context, await []uint32, q *queue, n int, keepOrder bool, t *Term) ([]*row, []uint32, error) {
	var out []*row
	var running []uint32
	f := t.fence()
	b := &pgx.Batch{}
	queueAwait(b, await, &running)
	b.Queue(q.moveSQL, n, keepOrder, f.epoch, f.renew).Query(func(rows pgx.Rows) error {
		var err error
		out, err = scanRows(q, rows)
		return err
	})
	if err := f.done(s.db.SendBatch(ctx, b).Close()); err != nil {
		return nil, nil, fmt.Errorf("moving %s pending rows to progress: %w", q.name, err)
	}
	return out, running, nil
}

// Load reads up to n progress rows with id > after, in id order.
func (s *Store) Load(ctx context.Context, q *queue, after int64, n int) ([]*row, error) {
	rows, err := s.db.Query(ctx, q.loadSQL, after, n)
	if err != nil {
		return nil, fmt.Errorf("loading %s progress rows: %w", q.name, err)
	}
	out, err := scanRows(q, rows)
	if err != nil {
		return nil, fmt.Errorf("loading %s progress rows: %w", q.name, err)
	}
	return out, nil
}

// HoldBehind holds the progress rows whose key has a dead letter (holdBehindSQL), fenced by
// the leadership term t, and returns how many it held.
func (s *Store) HoldBehind(ctx context.Context, q *queue, t *Term) (int64, error) {
	f := t.fence()
	tag, err := s.db.Exec(ctx, q.holdBehindSQL, f.epoch, f.renew)
	if err = f.done(err); err != nil {
		return 0, fmt.Errorf("holding %s progress rows behind dead letters: %w", q.name, err)
	}
	return tag.RowsAffected(), nil
}

// pendingDelete is a customer DELETE row waiting in pending: its id and its customer.
type pendingDelete struct {
	id  int64
	key string
}

// pendingDeletesSQL reads customer DELETE rows waiting in pending, in id order from after $1, at
// most $2, on the partial index data_sync_cust_pending_deletes (only DELETE rows).
var pendingDeletesSQL = `SELECT id, unique_id FROM ` + queues[0].pending + `
WHERE action = 'DELETE' AND unique_id IS NOT NULL AND id > $1 ORDER BY id LIMIT $2`

// PendingDeletes returns up to n customer DELETE rows waiting in pending with an id above after.
func (s *Store) PendingDeletes(ctx context.Context, after int64, n int) ([]pendingDelete, error) {
	rows, err := s.db.Query(ctx, pendingDeletesSQL, after, n)
	if err != nil {
		return nil, fmt.Errorf("looking for customer deletes waiting in pending: %w", err)
	}
	dels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pendingDelete, error) {
		var d pendingDelete
		return d, r.Scan(&d.id, &d.key)
	})
	if err != nil {
		return nil, fmt.Errorf("looking for customer deletes waiting in pending: %w", err)
	}
	return dels, nil
}

// Recheck stamps last_attempt_at on the progress rows ids (checkSQL) and returns those still
// there: the others were purged (their customer was deleted).
func (s *Store) Recheck(ctx context.Context, q *queue, ids []int64) ([]int64, error) {
	found, err := s.queryIDs(ctx, q.checkSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("re-checking %s rows before a retry: %w", q.name, err)
	}
	return found, nil
}

// RecordFailure records a failed attempt on the progress rows ids (failSQL) and returns those
// still there: the others were purged (their customer was deleted).
func (s *Store) RecordFailure(ctx context.Context, q *queue, ids []int64, f failure) ([]int64, error) {
	found, err := s.queryIDs(ctx, q.failSQL, ids, nullStatus(f.status), f.msg, f.next, f.counted)
	if err != nil {
		return nil, fmt.Errorf("recording a failed delivery: %w", err)
	}
	return found, nil
}

// queryIDs runs a statement returning ids.
func (s *Store) queryIDs(ctx context.Context, sql string, args ...any) ([]int64, error) {
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// DeadLetter moves the progress rows ids to their dead-letter tables (deadSQL) and, with
// keepOrder, holds the later progress rows of each key behind them, in one transaction fenced
// by the leadership term t. It returns how many rows it parked and how many it held.
func (s *Store) DeadLetter(ctx context.Context, ids queueIDs, f failure, keepOrder bool, t *Term) (parked, held int64, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		for i, ids := range ids {
			if len(ids) == 0 {
				continue
			}
			q := queues[i]
			var p, h int64
			fc := t.fence()
			err := tx.QueryRow(ctx, q.deadSQL, ids, f.counted, nullStatus(f.status), f.msg, nullIfEmpty(f.excerpt),
				keepOrder, fc.epoch, fc.renew).Scan(&p, &h)
			if err = fc.done(err); err != nil {
				return fmt.Errorf("moving rows to %s: %w", q.failed, err)
			}
			parked, held = parked+p, held+h
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return parked, held, nil
}

// Hold moves the progress rows ids to the dead-letter table, each held behind the dead letter
// given at the same index of behind (holdSQL), fenced by the leadership term t. Rows already
// gone from progress are skipped. It returns how many rows it held.
func (s *Store) Hold(ctx context.Context, q *queue, ids, behind []int64, t *Term) (int64, error) {
	f := t.fence()
	tag, err := s.db.Exec(ctx, q.holdSQL, ids, behind, f.epoch, f.renew)
	if err = f.done(err); err != nil {
		return 0, fmt.Errorf("holding %s rows behind a dead letter: %w", q.name, err)
	}
	return tag.RowsAffected(), nil
}

// Ack deletes delivered rows from progress (ackSQL); ids already gone are no error, so an
// acknowledgement can be repeated.
func (s *Store) Ack(ctx context.Context, q *queue, ids []int64) error {
	if _, err := s.db.Exec(ctx, q.ackSQL, ids); err != nil {
		return fmt.Errorf("deleting delivered %s rows from progress: %w", q.name, err)
	}
	return nil
}
