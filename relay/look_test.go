package relay_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/relay"
)

// A ring that names only the customer pending table moves only customers: every commit into a
// pending table rings with its table, so the transaction queue holds nothing new, and its
// move, a round trip on the way of every customer change, is left out. A ring naming it (or
// one naming no table, as after a connect, or the sweep) moves it.
func TestRingMovesOnlyTheQueuesItNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(relay.Config{})
	e.queueCust("1", "UPDATE")
	e.bell.Ring()
	e.waitDelivered(1)

	trn := e.queueTrn("T-1")
	cust := e.queueCust("2", "UPDATE")
	e.bell.RingTables("data_sync_cust_pending_queue")
	delivered := func(id int64) bool {
		return slices.ContainsFunc(e.poster.delivered(), func(d delivery) bool { return d.msg.UniqueID == strconv.FormatInt(id, 10) })
	}
	require.Eventually(t, func() bool { return delivered(cust) }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_trn_pending_queue`), "a customer ring moved the transaction queue")
	require.False(t, delivered(trn))

	e.bell.RingTables("data_sync_trn_pending_queue")
	e.waitDelivered(3)
}
