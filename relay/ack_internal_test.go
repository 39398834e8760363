package relay

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// ackRecorder is a deliveryStore that records each acknowledgement's ids (the acknowledger
// calls nothing else).
type ackRecorder struct {
	deliveryStore
	mu      sync.Mutex
	batches [][]int64
}

func (s *ackRecorder) Ack(_ context.Context, _ *queue, ids []int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, append([]int64(nil), ids...))
	return nil
}

func (s *ackRecorder) taken() [][]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]int64(nil), s.batches...)
}

// A few delivered ids wait (up to the acknowledger's pause) for those delivered meanwhile and
// go in one DELETE, sent as soon as the batch holds ackGather ids; ackGather ids or more go at
// once. (Acknowledging each handful as it came made a fast one-message-per-POST drain send a
// DELETE per few rows.)
func TestAcknowledgementsOfAFewRowsAreGathered(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func() (*dispatcher, *ackRecorder, chan error) {
		store := &ackRecorder{}
		d := &dispatcher{r: &Relay{store: store, log: zaptest.NewLogger(t)}, acks: newAckQueue(4000)}
		d.acks.pause = time.Hour // whatever the machine's speed, the test's adds come within it
		done := make(chan error, 1)
		go func() { done <- d.acknowledger(ctx) }()
		return d, store, done
	}
	ids := func(from, n int) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(from + i)
		}
		return out
	}

	d, store, done := start()
	d.acks.add(queueIDs{ids(1, 3)})
	// The acknowledger took the three ids and waits for more.
	require.Eventually(t, func() bool {
		d.acks.mu.Lock()
		defer d.acks.mu.Unlock()
		return d.acks.inFlight == 3
	}, 30*time.Second, time.Millisecond)
	d.acks.add(queueIDs{ids(4, 2), ids(1000, 1)})
	require.Empty(t, store.taken(), "6 ids were acknowledged before the pause ended")
	d.acks.add(queueIDs{ids(6, ackGather)})
	require.Eventually(t, func() bool { return len(store.taken()) >= 2 }, 30*time.Second, time.Millisecond)
	got := store.taken()
	require.Len(t, got, 2, "one DELETE per queue family")
	require.Equal(t, ids(1, 5+ackGather), got[0])
	require.Equal(t, ids(1000, 1), got[1])
	d.acks.close()
	require.NoError(t, <-done)

	// ackGather ids at once go without a pause, and a close ends one.
	d, store, done = start()
	d.acks.add(queueIDs{ids(1, ackGather)})
	require.Eventually(t, func() bool { return len(store.taken()) == 1 }, 30*time.Second, time.Millisecond)
	d.acks.add(queueIDs{ids(100, 1)})
	d.acks.close()
	require.NoError(t, <-done)
	require.Equal(t, [][]int64{ids(1, ackGather), ids(100, 1)}, store.taken())
}

// A small window gathers at most a quarter of itself: the ids waiting count against the window,
// and a gather it could never reach would hold up every acknowledgement for the whole pause.
func TestASmallWindowGathersFewerAcknowledgements(t *testing.T) {
	t.Parallel()
	require.Equal(t, ackGather, newAckQueue(4000).gather)
	require.Equal(t, 25, newAckQueue(100).gather)
	require.Equal(t, 1, newAckQueue(2).gather)
}
