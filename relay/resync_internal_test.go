package relay

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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

// Pages are sized so their move takes about resyncMoveBudget at the cost measured.
func TestResyncPageSize(t *testing.T) {
	t.Parallel()
	s := newResyncer(Config{MoveBatch: 1000}.WithDefaults())
	require.Equal(t, resyncFirstPage, s.pageSize(5000))
	require.Equal(t, 10, s.pageSize(10))
	s.queued[1] = struct{}{}
	s.tag([]*row{{id: 1}}, 500*time.Microsecond)
	require.Equal(t, 20, s.pageSize(5000))
	s.queued[2] = struct{}{}
	s.tag([]*row{{id: 2}}, 10*time.Second)
	require.Equal(t, resyncMinPage, s.pageSize(5000))
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
