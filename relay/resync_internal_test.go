package relay

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// Rows a resync queued go after live changes in the window: a live row of another key is sent
// first even when its id is higher; within a key, id order holds whatever the origin.
func TestWindowSendsLiveChangesBeforeResyncRows(t *testing.T) {
	t.Parallel()
	now := time.Now()
	w := newWindow(false)
	s := newResyncer(Config{MoveBatch: 100}.WithDefaults())
	var rows []*row
	for i := int64(1); i <= 5; i++ {
		rows = append(rows, &row{q: queues[0], id: i, key: strconv.FormatInt(i, 10), action: "UPDATE"})
		s.queued[i] = struct{}{}
	}
	rows = append(rows, &row{q: queues[0], id: 9, key: "3", action: "UPDATE"})   // live, behind resync row 3 of its key
	rows = append(rows, &row{q: queues[0], id: 10, key: "42", action: "UPDATE"}) // live
	s.tag(rows, time.Millisecond)
	for _, r := range rows {
		w.add(r, now)
	}
	var order []int64
	for {
		req := w.take(1, now)
		if req == nil {
			break
		}
		order = append(order, req.rows[0].id)
		w.release(req, true, now)
	}
	require.Equal(t, []int64{10, 1, 2, 3, 9, 4, 5}, order)
	require.Empty(t, s.queued, "tagged rows are forgotten")
}

// Pages are sized so the rows of their move take about resyncMoveBudget at the cost measured
// (the median of the latest moves): what a move costs besides its rows (measured on moves of
// nothing) is not charged to them, and a page is at most twice the last one.
func TestResyncPageSize(t *testing.T) {
	t.Parallel()
	s := newResyncer(Config{MoveBatch: 1000}.WithDefaults())
	require.Equal(t, resyncFirstPage, s.pageSize(5000, resyncMoveBudget))
	require.Equal(t, 10, s.pageSize(10, resyncMoveBudget))
	s.tag(nil, 2*time.Millisecond) // a move of nothing: 2 ms a statement
	s.queued[1] = struct{}{}
	s.tag([]*row{{id: 1}}, 2500*time.Microsecond)
	require.Equal(t, 20, s.pageSize(5000, resyncMoveBudget), "0.5 ms a row besides the statement's 2 ms")
	s.lastN, s.perRow = 500, 100*time.Microsecond
	require.Equal(t, 100, s.pageSize(5000, resyncMoveBudget))
	require.Equal(t, 20, s.pageSize(5000, resyncLiveBudget), "while live changes flow")
	s.lastN = 8
	require.Equal(t, 16, s.pageSize(5000, resyncMoveBudget), "at most twice the last page")
	s.queued[2], s.queued[3], s.queued[4] = struct{}{}, struct{}{}, struct{}{}
	s.tag([]*row{{id: 2}}, 10*time.Second)
	require.Equal(t, resyncMinPage, s.pageSize(5000, resyncMoveBudget), "the median of 0.5 ms and 10 s")
	s.tag([]*row{{id: 3}}, 2500*time.Microsecond)
	s.tag([]*row{{id: 4}}, 2500*time.Microsecond)
	require.Equal(t, 500*time.Microsecond, s.perRow, "one slow move among a few does not count")
	s.lastN = 600
	s.perRow = time.Microsecond
	require.Equal(t, 1000, s.pageSize(5000, resyncMoveBudget), "within the move batch")
	require.Equal(t, 300, s.pageSize(300, resyncMoveBudget), "within room")
}

// A live change in a move paces the resync's pages for resyncLiveQuiet; the resync's own rows
// do not.
func TestResyncPacedByLiveChangesOnly(t *testing.T) {
	t.Parallel()
	s := newResyncer(Config{MoveBatch: 100, Metrics: metrics.NewRelay(nil), Logger: zaptest.NewLogger(t)}.WithDefaults())
	s.queued[1], s.queued[2] = struct{}{}, struct{}{}
	s.tag([]*row{{id: 1}, {id: 2}}, time.Millisecond)
	require.True(t, s.lastLive.IsZero(), "the resync's own rows are no live change")
	s.tag([]*row{{id: 3}}, time.Millisecond)
	require.WithinDuration(t, time.Now(), s.lastLive, time.Second)

	st := &pageStore{}
	s.id, s.lastPage = 1, time.Now()
	m := moved{}
	require.NoError(t, s.step(context.Background(), st, &m, 100))
	require.Zero(t, st.steps, "paced: a live change was just moved")
	require.WithinDuration(t, s.lastPage.Add(resyncLivePace), m.wake, 0)
	s.lastPage = time.Now().Add(-resyncLivePace)
	m = moved{rows: []*row{{id: 4}}}
	began := time.Now()
	require.NoError(t, s.step(context.Background(), st, &m, 100))
	require.Zero(t, st.steps, "the live changes of this move go to the window before a page is queued")
	require.WithinRange(t, m.wake, began, time.Now())
	m = moved{}
	require.NoError(t, s.step(context.Background(), st, &m, 100))
	require.Equal(t, 1, st.steps, "the page comes with the next move")
	s.lastPage = time.Now().Add(-2 * resyncLivePace)
	m = moved{rows: []*row{{id: 5}}}
	require.NoError(t, s.step(context.Background(), st, &m, 100))
	require.Equal(t, 2, st.steps, "moves that keep carrying live changes do not starve the resync")
	s.lastLive = time.Now().Add(-resyncLiveQuiet)
	require.NoError(t, s.step(context.Background(), st, &m, 100))
	require.Equal(t, 3, st.steps, "not paced once live changes stopped")
}

// pageStore answers the resync's statements for step tests.
type pageStore struct {
	deliveryStore
	steps int
}

func (s *pageStore) ResyncStep(ctx context.Context, n int) (resyncPage, bool, error) {
	s.steps++
	return resyncPage{id: 1, state: "running"}, true, nil
}

// The ring of a step's own commit is not waited for; any other is, and so is a repeated one.
func TestMoveSkipsAwaitingOwnSteps(t *testing.T) {
	t.Parallel()
	s := newResyncer(Config{MoveBatch: 100}.WithDefaults())
	require.Equal(t, []uint32{7}, s.others([]uint32{7}))
	s.own = []uint32{5, 6}
	require.Equal(t, []uint32{7, 8}, s.others([]uint32{5, 7, 8}))
	require.Equal(t, []uint32{5}, s.others([]uint32{5}), "each own ring is skipped once")
	require.Empty(t, s.others([]uint32{6}))
	require.Empty(t, s.own)
}

// With coalescing, a live UPDATE absorbed into a resync row of its key keeps live priority.
func TestCoalescedLiveChangeKeepsPriority(t *testing.T) {
	t.Parallel()
	now := time.Now()
	w := newWindow(true)
	w.add(&row{q: queues[0], id: 1, key: "1", action: "UPDATE", resync: true}, now)
	w.add(&row{q: queues[0], id: 2, key: "2", action: "UPDATE", resync: true}, now)
	w.add(&row{q: queues[0], id: 3, key: "2", action: "UPDATE"}, now) // live, absorbed into row 2
	req := w.take(1, now)
	require.Equal(t, int64(3), req.rows[0].id)
	require.False(t, req.rows[0].resync)
}

// lookupStore counts the mover's statements that matter to the resync look-up.
type lookupStore struct {
	deliveryStore
	moves, lookups atomic.Int64
}

func (s *lookupStore) Move(ctx context.Context, q *queue, n int, keepOrder bool, t *Term) ([]*row, error) {
	defer s.moves.Add(1)
	return s.deliveryStore.Move(ctx, q, n, keepOrder, t)
}

func (s *lookupStore) AwaitAndMove(ctx context.Context, await []uint32, q *queue, n int, keepOrder bool, t *Term) ([]*row, []uint32, error) {
	defer s.moves.Add(1)
	return s.deliveryStore.AwaitAndMove(ctx, await, q, n, keepOrder, t)
}

func (s *lookupStore) ActiveResync(ctx context.Context) (activeResync, bool, error) {
	defer s.lookups.Add(1)
	return s.deliveryStore.ActiveResync(ctx)
}

// runLookupRelay runs a relay with the doorbell b and sweeps every sweep on a database holding
// the customers, Data Sync enabled and every message accepted, until the test ends; st counts
// its moves and resync look-ups.
func runLookupRelay(t *testing.T, sweep time.Duration, b *Bell, customers ...int64) (url string, db *pgxpool.Pool, p *countingPoster, r *Relay, st *lookupStore) {
	url = pgtest.NewDB(t)
	db = pgtest.Pool(t, url)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/datasync' WHERE name = 'DataSyncApiUrl';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/token' WHERE name = 'DataSyncTokenUrl'`)
	_, err := db.Exec(context.Background(), `INSERT INTO customer (customer_id) SELECT unnest($1::bigint[])`, customers)
	require.NoError(t, err)
	p = &countingPoster{delivered: map[string]int{}, answer: func([]mapping.Message) int { return 0 }}
	r, err = New(Config{SweepInterval: sweep, Logger: zaptest.NewLogger(t)}, db,
		func(context.Context, Settings) (Poster, func(), error) { return p, func() {}, nil }, b)
	require.NoError(t, err)
	st = &lookupStore{deliveryStore: r.store}
	r.store = st
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return url, db, p, r, st
}

// With a doorbell, an idle relay looks for resync requests only when the doorbell says one was
// inserted (or a sweep's settings read sees one): a ring for other changes moves pending
// without a look-up, and a ring for a request starts it at once.
func TestDoorbellStartsAResyncAtOnce(t *testing.T) {
	t.Parallel()
	b := NewBell()
	url, db, p, _, st := runLookupRelay(t, time.Hour, b, 501, 502)

	// The session's first moves look once and find nothing.
	began := time.Now()
	require.Eventually(t, func() bool { return st.lookups.Load() >= 1 }, 30*time.Second, 5*time.Millisecond)
	lookups := st.lookups.Load()
	t.Logf("first look-up %s after start", time.Since(began).Round(time.Millisecond))

	// A request inserted, but the ring says nothing of it: pending is moved, nobody looks.
	pgtest.Exec(t, url, `INSERT INTO data_sync_resync (object, customer_ids) VALUES ('customer', '{501,502}')`)
	moves := st.moves.Load()
	b.Ring()
	require.Eventually(t, func() bool { return st.moves.Load() >= moves+2 }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, lookups, st.lookups.Load(), "a ring without a resync request looked for one")

	// The ring of the request: the relay looks now and delivers both customers, well before it
	// would have looked by itself (at its next sweep, an hour away).
	rang := time.Now()
	b.RingResync()
	require.Eventually(t, func() bool {
		var state string
		err := db.QueryRow(context.Background(), `SELECT state FROM data_sync_resync`).Scan(&state)
		return err == nil && state == "done"
	}, 30*time.Second, 5*time.Millisecond, "the resync did not start on the doorbell's word")
	t.Logf("resync done %s after the ring", time.Since(rang).Round(time.Millisecond))
	require.Greater(t, st.lookups.Load(), lookups)
	require.Eventually(t, func() bool { return p.messages() == 2 }, 30*time.Second, 5*time.Millisecond)
}

// A resync request whose doorbell ring was lost (inserted while nothing rang for it) is found by
// the next sweep's settings read, which says whether a request is pending or running in the
// statement a sweep sends anyway: no look-up of its own between sweeps.
func TestASweepFindsAResyncWhoseRingWasLost(t *testing.T) {
	t.Parallel()
	url, db, p, r, st := runLookupRelay(t, 300*time.Millisecond, NewBell(), 601, 602)

	// The session's first move looks once and finds nothing; sweeps without a request look
	// no more.
	require.Eventually(t, func() bool { return st.lookups.Load() >= 1 }, 30*time.Second, 5*time.Millisecond)
	sweeps := func() float64 { return testutil.ToFloat64(r.cfg.Metrics.WakeUps.WithLabelValues("sweep")) }
	s0, lookups := sweeps(), st.lookups.Load()
	require.Eventually(t, func() bool { return sweeps() >= s0+3 }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, lookups, st.lookups.Load(), "sweeps without a resync request looked for one")

	// The request rings nothing here (the test's doorbell is silent): a sweep finds it.
	pgtest.Exec(t, url, `INSERT INTO data_sync_resync (object, customer_ids) VALUES ('customer', '{601,602}')`)
	require.Eventually(t, func() bool {
		var state string
		err := db.QueryRow(context.Background(), `SELECT state FROM data_sync_resync`).Scan(&state)
		return err == nil && state == "done"
	}, 30*time.Second, 5*time.Millisecond, "no sweep found the resync request")
	require.Greater(t, st.lookups.Load(), lookups)
	require.Eventually(t, func() bool { return p.messages() == 2 }, 30*time.Second, 5*time.Millisecond)
}
