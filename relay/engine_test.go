package relay_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

// TestRetryAfterIsCappedAtBackoffMax: a receiver answering 503 with Retry-After: 86400 delays
// the record at most --backoff-max, in memory and on the row.
func TestRetryAfterIsCappedAtBackoffMax(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var answered atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if answered.Add(1) == 1 {
			return relay.Response{Status: 503, RetryAfter: 24 * time.Hour}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	id := e.queueCust("1", "UPDATE")
	e.start(relay.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	got := e.waitDelivered(1) // waits up to a minute: far below the day asked for
	require.Equal(t, strconv.FormatInt(id, 10), got[0].msg.UniqueID)
}

// TestStoredRetryTimeIsCappedAtStart: a row left in progress by an earlier run with
// next_attempt_at a day ahead is delivered within --backoff-max of the next start.
func TestStoredRetryTimeIsCappedAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.queueCust("1", "UPDATE")
	e.exec(`WITH m AS (DELETE FROM data_sync_cust_pending_queue RETURNING id, obj_name, unique_id, action, json_object, created_at)
		INSERT INTO data_sync_cust_progress_queue (id, obj_name, unique_id, action, json_object, created_at, attempts, next_attempt_at)
		SELECT *, 1, now() + interval '1 day' FROM m`)
	e.start(relay.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(id, 10), got[0].msg.UniqueID)
}
