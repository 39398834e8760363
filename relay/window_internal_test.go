package relay

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A customer's DELETE row the window learns of (from the doorbell or a look at pending) before
// its earlier rows reach the window (a move that read them before the delete committed hands
// them over after it) still marks those rows to be re-checked when they arrive; the DELETE row's
// own arrival ends that, and a later row of the customer is not marked.
func TestRowsArrivingAfterTheirDeleteIsKnownAreRechecked(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, coalesce := range []bool{false, true} {
		w := newWindow(coalesce)
		w.add(&row{q: queues[0], id: 40, key: "18", action: "UPDATE"}, now)
		w.markDeleted(pendingDelete{id: 100, key: "18"}, now)
		late := &row{q: queues[0], id: 50, key: "18", action: "UPDATE"}
		w.add(late, now)
		other := &row{q: queues[0], id: 60, key: "19", action: "UPDATE"}
		w.add(other, now)
		rows := w.keys[keyName(late)].rows
		require.True(t, rows[len(rows)-1].recheck, "coalesce %v: a row handed over after its customer's delete is known", coalesce)
		require.False(t, other.recheck, "another customer's row")
		del := &row{q: queues[0], id: 100, key: "18", action: "DELETE"}
		w.add(del, now)
		after := &row{q: queues[0], id: 150, key: "18", action: "CREATE"}
		w.add(after, now)
		require.False(t, after.recheck, "coalesce %v: a row after the DELETE row", coalesce)
		require.Empty(t, w.deleted)
	}
}
