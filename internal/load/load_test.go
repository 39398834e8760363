package load

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newCEDB returns a database with cdc-relay installed, capture on, and n customers (ids 1..n,
// each with an address) created while capture was off.
func newCEDB(t *testing.T, n int) (string, []int64) {
	t.Helper()
	url := pgtest.NewDB(t)
	pgtest.Exec(t, url, `INSERT INTO customer (customer_id, first_name, last_name) SELECT g, 'F' || g, 'L' || g FROM generate_series(1, $1::int) g`, n)
	pgtest.Exec(t, url, `INSERT INTO customer_address (customer_id, city) SELECT g, 'City0' FROM generate_series(1, $1::int) g`, n)
	pgtest.Exec(t, url, `SELECT setval('customer_id_seq', $1::int)`, n)
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	return url, ids
}

func query[T any](t *testing.T, url, sql string, args ...any) []T {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	rows, err := c.Query(ctx, sql, args...)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	require.NoError(t, err)
	return out
}

// The CE mix creates its starting customers, then runs every kind of operation it draws.
func TestCEMix(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	g := New(Config{DatabaseURL: url, Customers: 20, Rate: Unlimited, Ops: 300, Seed: 1})
	require.NoError(t, g.Run(context.Background()))
	st := g.Stats()
	require.EqualValues(t, 320, st.Total(), "20 starting customers and 300 operations: %v", st.Committed)
	require.Zero(t, st.Failures())
	for _, op := range []string{OpCreate, OpUpdate, OpCard, OpSegment, OpTransaction} {
		require.Positive(t, st.Committed[op], "%s never ran: %v", op, st.Committed)
	}
	n := query[int64](t, url, `SELECT count(*) FROM customer`)[0]
	require.Equal(t, st.Committed[OpCreate]-st.Committed[OpMerge]-st.Committed[OpDelete], n, "a merge replaces two customers by one")
	posted := query[int64](t, url, `SELECT count(*) FROM retail_transaction`)[0]
	require.Equal(t, st.Committed[OpTransaction], posted)
}

// A run with a Duration ends by itself without an error, at about the Rate.
func TestDurationAndRate(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	g := New(Config{DatabaseURL: url, Customers: 5, Rate: 100, Duration: time.Second})
	start := time.Now()
	require.NoError(t, g.Run(context.Background()))
	require.Less(t, time.Since(start), 10*time.Second)
	steady := g.Total() - 5
	require.Positive(t, steady)
	require.LessOrEqual(t, steady, int64(101), "at most one operation per tick")
}

// A paced run with Ops hands every tick to exactly one worker, in schedule order, and Touch
// changes customer At(tick), reporting its queue row.
func TestPacedTouches(t *testing.T) {
	t.Parallel()
	url, ids := newCEDB(t, 7)
	var mu sync.Mutex
	got := map[int64]Commit{}
	g := New(Config{DatabaseURL: url, Mix: Touches(), Rate: 400, Workers: 3, IDs: ids, Ops: 60, OnCommit: func(c Commit) {
		mu.Lock()
		defer mu.Unlock()
		assert.NotContains(t, got, c.Tick)
		got[c.Tick] = c
	}})
	require.NoError(t, g.Open(context.Background()))
	warm, err := Touch(context.Background(), g.Conn(0), 1, 0)
	require.NoError(t, err)
	require.Len(t, warm.Rows, 1)
	require.NoError(t, g.Run(context.Background()))
	require.Len(t, got, 60)
	require.GreaterOrEqual(t, g.Elapsed(), 59*time.Second/400, "tick 60 is due 59/400 s after the start")
	for tick := int64(1); tick <= 60; tick++ {
		c := got[tick]
		require.NoError(t, c.Err)
		require.False(t, c.Sent.After(c.Returned))
		require.Len(t, c.Rows, 1, "tick %d", tick)
		require.Equal(t, strconv.FormatInt(ids[tick%7], 10), c.Rows[0].Key, "tick %d", tick)
	}
	queued := query[int64](t, url, `SELECT id FROM data_sync_cust_pending_queue ORDER BY id`)
	require.Len(t, queued, 61)
	require.Equal(t, warm.Rows[0].ID, queued[0])
}

// CapturedRenames reports exactly the queue rows its transactions committed; Done stops it.
func TestCapturedRenames(t *testing.T) {
	t.Parallel()
	url, ids := newCEDB(t, 30)
	var mu sync.Mutex
	var rows []QueueRow
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(rows) }
	g := New(Config{DatabaseURL: url, Mix: CapturedRenames(4), Rate: Unlimited, Workers: 2, IDs: ids, Start: 5,
		Done: func() bool { return count() >= 100 }, OnCommit: func(c Commit) {
			assert.NoError(t, c.Err)
			assert.Len(t, c.Rows, 4)
			keys := map[string]bool{}
			for _, r := range c.Rows {
				keys[r.Key] = true
			}
			assert.Len(t, keys, 4, "distinct customers per transaction")
			mu.Lock()
			rows = append(rows, c.Rows...)
			mu.Unlock()
		}})
	require.NoError(t, g.Run(context.Background()))
	require.GreaterOrEqual(t, count(), 100)
	require.Less(t, count(), 100+2*4, "each worker stops once Done holds")
	var want []int64
	for _, r := range rows {
		want = append(want, r.ID)
	}
	slices.Sort(want)
	require.Equal(t, want, query[int64](t, url, `SELECT id FROM data_sync_cust_pending_queue ORDER BY id`))
}

// Without KeepGoing the first failure ends the run with it; with KeepGoing it is counted.
func TestFailures(t *testing.T) {
	t.Parallel()
	url, ids := newCEDB(t, 5)
	// Capture off: the renames queue nothing, so CapturedRenames fails its check.
	pgtest.Exec(t, url, `UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`)
	g := New(Config{DatabaseURL: url, Mix: CapturedRenames(2), Rate: Unlimited, IDs: ids})
	require.ErrorContains(t, g.Run(context.Background()), "expected 2 queue rows in the transaction, found 0")
	require.EqualValues(t, 1, g.Stats().Aborted["other"])

	g = New(Config{DatabaseURL: url, Mix: CapturedRenames(2), Rate: Unlimited, IDs: ids, Ops: 5, KeepGoing: true})
	require.NoError(t, g.Run(context.Background()))
	require.EqualValues(t, 5, g.Stats().Aborts())
	require.Zero(t, g.Stats().Total())
}

// The Interleaved mix runs concurrently; every delete it reports committed is gone.
func TestInterleaved(t *testing.T) {
	t.Parallel()
	url, ids := newCEDB(t, 20)
	pgtest.Exec(t, url, `INSERT INTO segment (segment_name) SELECT 'segment ' || g FROM generate_series(1, 6) g`)
	var mu sync.Mutex
	deleted := map[int64]bool{}
	g := New(Config{DatabaseURL: url, Mix: Interleaved(true), Rate: Unlimited, Workers: 3, IDs: ids, Ops: 300, Seed: 7,
		KeepGoing: true, OnCommit: func(c Commit) {
			if c.Err == nil {
				mu.Lock()
				for _, id := range c.Deleted {
					deleted[id] = true
				}
				mu.Unlock()
			}
		}})
	require.NoError(t, g.Run(context.Background()))
	st := g.Stats()
	require.EqualValues(t, 300, st.Total()+st.Aborts(), "committed %v, aborted %v", st.Committed, st.Aborted)
	require.Positive(t, st.Committed[OpInterleaved])
	require.Positive(t, st.Tally[TallyEarlyCaptures]+st.Tally[TallySavepointsRolledBack])
	t.Logf("%v %v %v", st.Committed, st.Aborted, st.Tally)
	require.Positive(t, len(deleted))
	for id := range deleted {
		require.Empty(t, query[int64](t, url, `SELECT customer_id FROM customer WHERE customer_id = $1`, id), "customer %d", id)
	}
}

// pick draws by weight and, when the drawn operation is not allowed, runs the next allowed
// one, wrapping around.
func TestPick(t *testing.T) {
	t.Parallel()
	count := func(mix Mix, live, initial int) map[string]int {
		g := New(Config{Mix: mix, IDs: make([]int64, live)})
		g.customers.initial = initial
		s := &Session{Rand: rand.New(rand.NewPCG(1, 2)), g: g}
		got := map[string]int{}
		for range 10000 {
			got[g.pick(s).Name]++
		}
		return got
	}
	require.Equal(t, map[string]int{OpCreate: 10000}, count(CE(), 3, 3), "below 4 customers only creates")
	ce := count(CE(), 50, 50)
	require.InDelta(t, 3500, ce[OpUpdate], 300)
	require.InDelta(t, 1000, ce[OpCreate], 200)
	// At its starting size the Interleaved set does not grow: a create drawn becomes interleaved.
	il := count(Interleaved(true), 20, 20)
	require.Zero(t, il[OpCreate])
	require.InDelta(t, 400, il[OpDelete], 150)
	// At half its starting size it only grows: deletes and merges drawn become creates.
	il = count(Interleaved(true), 10, 20)
	require.Zero(t, il[OpDelete]+il[OpMerge])
	require.InDelta(t, 1200, il[OpCreate], 250)
}
