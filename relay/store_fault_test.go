package relay

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/mapping"
)

var errInjected = errors.New("injected database failure")

// faultStore wraps the relay's store and makes the first call of one statement fail: before it
// runs (the database refused it, or the connection broke before it), or after it committed
// (its answer was lost: the connection broke right after COMMIT). An after-fault waits for a
// call that changed something, so that the lost answer matters.
type faultStore struct {
	deliveryStore
	op    string // "move", "ack", "fail" or "dead"
	after bool
	fired atomic.Bool
}

// inject runs a statement of kind op through run, or fails it as chosen.
func (s *faultStore) inject(op string, run func() (changed bool, err error)) error {
	if op != s.op || s.fired.Load() {
		_, err := run()
		return err
	}
	if !s.after {
		if s.fired.CompareAndSwap(false, true) {
			return errInjected
		}
		_, err := run()
		return err
	}
	changed, err := run()
	if err == nil && changed && s.fired.CompareAndSwap(false, true) {
		return errInjected
	}
	return err
}

func (s *faultStore) Move(ctx context.Context, q *queue, n int, keepOrder bool, t *Term) ([]*row, error) {
	var rows []*row
	err := s.inject("move", func() (bool, error) {
		var err error
		rows, err = s.deliveryStore.Move(ctx, q, n, keepOrder, t)
		return len(rows) > 0, err
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (s *faultStore) AwaitAndMove(ctx context.Context, await []uint32, q *queue, n int, keepOrder bool, t *Term) ([]*row, []uint32, error) {
	var rows []*row
	var running []uint32
	err := s.inject("move", func() (bool, error) {
		var err error
		rows, running, err = s.deliveryStore.AwaitAndMove(ctx, await, q, n, keepOrder, t)
		return len(rows) > 0, err
	})
	if err != nil {
		return nil, nil, err
	}
	return rows, running, nil
}

func (s *faultStore) Ack(ctx context.Context, q *queue, ids []int64) error {
	return s.inject("ack", func() (bool, error) { return true, s.deliveryStore.Ack(ctx, q, ids) })
}

func (s *faultStore) RecordFailure(ctx context.Context, q *queue, ids []int64, f failure) ([]int64, error) {
	var found []int64
	err := s.inject("fail", func() (bool, error) {
		var err error
		found, err = s.deliveryStore.RecordFailure(ctx, q, ids, f)
		return len(found) > 0, err
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

func (s *faultStore) DeadLetter(ctx context.Context, ids queueIDs, f failure, keepOrder bool, t *Term) (parked, held int64, err error) {
	err = s.inject("dead", func() (bool, error) {
		var err error
		parked, held, err = s.deliveryStore.DeadLetter(ctx, ids, f, keepOrder, t)
		return parked > 0, err
	})
	if err != nil {
		return 0, 0, err
	}
	return parked, held, nil
}

// countingPoster counts the messages delivered by queue id; answer (called one request at a
// time) chooses each request's status, 200 when it returns 0.
type countingPoster struct {
	mu        sync.Mutex
	delivered map[string]int
	answer    func(msgs []mapping.Message) int
}

func (p *countingPoster) Post(_ context.Context, body []byte) (Response, error) {
	env, err := mapping.DecodeEnvelope(body)
	if err != nil {
		return Response{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.answer(env.Messages); st != 0 {
		return Response{Status: st}, nil
	}
	for _, m := range env.Messages {
		p.delivered[m.UniqueID]++
	}
	return Response{Status: 200}, nil
}

// messages is how many messages were delivered in all.
func (p *countingPoster) messages() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.delivered {
		n += c
	}
	return n
}

func (p *countingPoster) count(id int64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delivered[strconv.FormatInt(id, 10)]
}

// TestDatabaseFailureAtAStatementLosesNothing makes one statement of the delivery fail once,
// before it ran or after it committed, and checks that the relay recovers and nothing is lost:
// every queued row is delivered or dead-lettered, none both, the queues end empty, the rows of
// a dead-lettered key stay held behind it, and a repeated acknowledgement sends nothing twice.
func TestDatabaseFailureAtAStatementLosesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		op    string
		after bool
		// exactlyOnce: the fault cannot make a row be sent twice (the session goes on).
		exactlyOnce bool
	}{
		{"ack fails", "ack", false, true},
		{"ack's answer lost after it committed", "ack", true, true},
		{"move's answer lost after it committed", "move", true, false},
		{"recording a failure fails", "fail", false, false},
		{"recorded failure's answer lost", "fail", true, false},
		{"dead letter fails", "dead", false, false},
		{"dead letter's answer lost after it committed", "dead", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.NewDB(t)
			db := pgtest.Pool(t, url)
			pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
				UPDATE data_sync_config SET value = 'https://127.0.0.1:1/datasync' WHERE name = 'DataSyncApiUrl';
				UPDATE data_sync_config SET value = 'https://127.0.0.1:1/token' WHERE name = 'DataSyncTokenUrl';`)
			// Key 13 is refused (400): its first row is dead-lettered and its later rows held.
			// The other keys are delivered; the first request of one is answered 503 (a failure
			// to record, then a retry).
			var live, poisoned []int64
			for i := range 24 {
				key := strconv.Itoa(1 + i%6)
				if i%6 == 5 {
					key = "13"
				}
				var id int64
				require.NoError(t, db.QueryRow(context.Background(),
					`INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ($1, 'DELETE') RETURNING id`, key).Scan(&id))
				if key == "13" {
					poisoned = append(poisoned, id)
				} else {
					live = append(live, id)
				}
			}
			retried := false
			p := &countingPoster{delivered: map[string]int{}, answer: func(msgs []mapping.Message) int {
				switch {
				case msgs[0].Payload == "13":
					return 400
				case !retried:
					retried = true
					return 503
				}
				return 0
			}}
			r, err := New(Config{MoveBatch: 5, PermanentAttempts: 1, SweepInterval: 50 * time.Millisecond,
				BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: zaptest.NewLogger(t)}, db,
				func(context.Context, Settings) (Poster, func(), error) { return p, func() {}, nil }, nil)
			require.NoError(t, err)
			fs := &faultStore{deliveryStore: r.store, op: tc.op, after: tc.after}
			r.store = fs
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()

			count := func(sql string, args ...any) int {
				var n int
				require.NoError(t, db.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
				return n
			}
			require.Eventually(t, func() bool {
				for _, id := range live {
					if p.count(id) == 0 {
						return false
					}
				}
				return count(`SELECT count(*) FROM data_sync_cust_pending_queue`)+
					count(`SELECT count(*) FROM data_sync_cust_progress_queue`) == 0
			}, 60*time.Second, 10*time.Millisecond, "rows left undelivered")
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("the relay did not stop")
			}

			require.True(t, fs.fired.Load(), "the fault was never injected")
			for _, id := range live {
				if tc.exactlyOnce {
					require.Equal(t, 1, p.count(id), "row %d", id)
				}
			}
			require.Zero(t, count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = ANY($1)`, live),
				"a delivered row was dead-lettered")
			for _, id := range poisoned {
				require.Zero(t, p.count(id), "row %d of the refused key was delivered", id)
			}
			require.Equal(t, 1, count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed'`, poisoned[0]))
			require.Equal(t, len(poisoned)-1, count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = ANY($1) AND reason = 'held'
				AND last_error = 'held behind dead letter ' || $2::bigint`, poisoned[1:], poisoned[0]))
		})
	}
}
