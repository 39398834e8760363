package relay_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
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
	e.leaveInProgress()
	e.exec(`UPDATE data_sync_cust_progress_queue SET attempts = 1, next_attempt_at = now() + interval '1 day'`)
	e.start(relay.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(id, 10), got[0].msg.UniqueID)
}

// TestRowsBehindABadRowInTheSameMoveAreHeld: a row that can never be sent is dead-lettered when
// it is moved; the later rows of its key moved in the same batch are held behind it (reason
// held), never sent, while other keys flow.
func TestRowsBehindABadRowInTheSameMoveAreHeld(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var bad int64
	require.NoError(t, e.db.QueryRow(context.Background(), `INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object)
		VALUES ('13', 'UPDATE', '{"customerID": 13}') RETURNING id`).Scan(&bad))
	later1 := e.queueCust("13", "UPDATE")
	other := e.queueCust("14", "UPDATE")
	later2 := e.queueCust("13", "DELETE")
	e.start(relay.Config{})
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.Equal(t, strconv.FormatInt(other, 10), got[0].msg.UniqueID)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed'`, bad))
	require.Equal(t, 2, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = ANY($1) AND reason = 'held'
		AND last_error = 'held behind dead letter ' || $2::bigint`, []int64{later1, later2}, bad))
}

// TestRowsBehindADeadLetterHeldInMemoryAreNeverSent: the receiver refuses the head of a key
// while the key's later rows wait in memory: they leave memory unsent and end in the failed
// table with reason held.
func TestRowsBehindADeadLetterHeldInMemoryAreNeverSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	poison := e.queueCust("13", "UPDATE")
	var later []int64
	for range 5 {
		later = append(later, e.queueCust("13", "UPDATE"))
	}
	other := e.queueCust("14", "UPDATE")
	e.poster.refuse(poison, 400)
	e.start(relay.Config{PermanentAttempts: 1})
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.Equal(t, strconv.FormatInt(other, 10), got[0].msg.UniqueID)
	require.Equal(t, 5, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = ANY($1) AND reason = 'held'`, later))
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed'`, poison))
}

// TestProgressRowsBehindADeadLetterAreHeldAtStart: a crash left a row in progress behind a dead
// letter of its key (the state a crash between parking and holding left before they were one
// statement): the next start holds it instead of sending it past the dead letter.
func TestProgressRowsBehindADeadLetterAreHeldAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.queueCust("13", "UPDATE")
	left := e.queueCust("13", "UPDATE")
	other := e.queueCust("14", "UPDATE")
	e.exec(`WITH m AS (DELETE FROM data_sync_cust_pending_queue WHERE id = $1 RETURNING id, obj_name, unique_id, action, json_object, created_at)
		INSERT INTO data_sync_cust_failed (id, obj_name, unique_id, action, json_object, created_at, reason)
		SELECT *, 'failed' FROM m`, dead)
	e.leaveInProgress(left)
	e.start(relay.Config{})
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.Equal(t, strconv.FormatInt(other, 10), got[0].msg.UniqueID)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'held'`, left))
}

// TestEndpointFailingPausesAndDeadLettersNothing: every POST is answered 404 for a while. The
// relay calls it an endpoint failure (State, metric, data_sync_leader), probes one request at a
// time, dead-letters nothing although every record has failed more than --permanent-attempts
// and --max-attempts times over, and delivers everything by itself once the endpoint answers 200.
func TestEndpointFailingPausesAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var storm atomic.Bool
	storm.Store(true)
	var inflight, maxDuringStorm, stormAnswers atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		cur := inflight.Add(1)
		defer inflight.Add(-1)
		if storm.Load() {
			if stormAnswers.Add(1) > 40 && cur > maxDuringStorm.Load() {
				maxDuringStorm.Store(cur) // long after the storm was recognised
			}
			return relay.Response{Status: 404}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	for i := range 60 {
		e.queueCust(strconv.Itoa(i), "UPDATE")
	}
	m := metrics.NewRelay(nil)
	r := e.start(relay.Config{Concurrency: 8, PermanentAttempts: 1, MaxAttempts: 2,
		BackoffMin: 2 * time.Millisecond, BackoffMax: 20 * time.Millisecond, Metrics: m})
	require.Eventually(t, func() bool {
		return r.State().Phase == relay.PhaseEndpointFailing && strings.HasPrefix(r.State().String(), "endpoint failing: HTTP 404 since ")
	},
		30*time.Second, 2*time.Millisecond)
	require.Eventually(t, func() bool {
		return e.count(`SELECT count(*) FROM data_sync_leader WHERE endpoint_failing_since IS NOT NULL AND endpoint_error = 'HTTP 404'`) == 1
	}, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(m.EndpointFailing))
	require.Eventually(t, func() bool { return stormAnswers.Load() > 100 }, 30*time.Second, 2*time.Millisecond)
	require.Zero(t, e.count(`SELECT count(*) FROM data_sync_cust_failed`), "nothing is dead-lettered while the endpoint fails")
	require.LessOrEqual(t, maxDuringStorm.Load(), int64(1), "one probe at a time once the endpoint fails")

	storm.Store(false)
	e.waitDelivered(60)
	require.Zero(t, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
	require.Eventually(t, func() bool { return r.State().Phase == relay.PhaseDelivering }, 30*time.Second, 2*time.Millisecond)
	require.Equal(t, 0.0, testutil.ToFloat64(m.EndpointFailing))
	require.Eventually(t, func() bool {
		return e.count(`SELECT count(*) FROM data_sync_leader WHERE endpoint_failing_since IS NULL AND endpoint_error IS NULL`) == 1
	}, 30*time.Second, 5*time.Millisecond)
}

// TestRecordRefusedWhileOthersAreDeliveredIsARecordFailure: one record is answered 404 while
// every other is delivered: that is the record's failure (today's per-key policy), dead-lettered
// after --permanent-attempts; the endpoint never counts as failing.
func TestRecordRefusedWhileOthersAreDeliveredIsARecordFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	refused := e.queueCust("13", "UPDATE")
	for i := range 30 {
		e.queueCust(strconv.Itoa(100+i), "UPDATE")
	}
	e.poster.refuse(refused, 404)
	r := e.start(relay.Config{PermanentAttempts: 3, Concurrency: 4})
	e.waitDelivered(30)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed' AND attempts = 3 AND last_status = 404`, refused))
	require.Equal(t, relay.PhaseDelivering, r.State().Phase)
}

// TestWindowIsBoundedInBytes: with the receiver stalled, the relay holds no more rows than
// --window-bytes allows (one row of slack), however many its row window would take.
func TestWindowIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := make(chan struct{})
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		<-release
		return relay.Response{Status: 200}, nil
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	const rows = 200
	for i := range rows {
		e.queueCust(strconv.Itoa(i), "UPDATE")
	}
	smallest := e.count(`SELECT min(length(json_object::text)) FROM data_sync_cust_pending_queue`)
	largest := e.count(`SELECT max(length(json_object::text)) FROM data_sync_cust_pending_queue`)
	const windowBytes = 64 << 10
	e.start(relay.Config{Concurrency: 1, WindowBytes: windowBytes, MaxPayloadBytes: 16 << 10})
	// Compacted payloads are a little smaller than their text in the table: the bound below
	// uses the table's sizes plus the per-row overhead as an upper estimate of each row.
	bound := windowBytes/(smallest/2) + 1
	progress := func() int { return e.count(`SELECT count(*) FROM data_sync_cust_progress_queue`) }
	require.Eventually(t, func() bool { return progress() >= windowBytes/(largest+512)-1 }, 30*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool { return progress() > bound }, 300*time.Millisecond, 5*time.Millisecond,
		"more rows in memory than --window-bytes allows (%d rows of %d..%d bytes)", progress(), smallest, largest)
	require.Less(t, bound, rows/2, "the test needs a backlog well beyond the byte bound")
	close(release)
	e.waitDelivered(rows)
}

// TestOversizedPayloadIsDeadLettered: a payload over --max-payload-bytes is dead-lettered with a
// reason naming its size and the flag; the rest flows.
func TestOversizedPayloadIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var big int64
	require.NoError(t, e.db.QueryRow(context.Background(), `INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object)
		VALUES ('7', 'UPDATE', jsonb_build_object('customerID', '7', 'pad', repeat('x', 20000))) RETURNING id`).Scan(&big))
	ok := e.queueCust("8", "UPDATE")
	e.start(relay.Config{MaxPayloadBytes: 8 << 10})
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.Equal(t, strconv.FormatInt(ok, 10), got[0].msg.UniqueID)
	var reason string
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT last_error FROM data_sync_cust_failed WHERE id = $1`, big).Scan(&reason))
	require.Contains(t, reason, "--max-payload-bytes")
	require.Contains(t, reason, "8192")
	require.Regexp(t, `JSON_OBJECT is 2\d{4} bytes`, reason)
}

// TestRowsPurgedDuringARequestAreNotRetried: while the request for customer 13's first change
// is in flight, its customer is deleted (the purge, done here by hand, removes its progress
// rows and queues a DELETE) and the receiver answers 503. Recording the failure finds the rows
// gone: they leave memory, and neither they nor the change behind them is ever sent again;
// the DELETE is.
func TestRowsPurgedDuringARequestAreNotRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.queueCust("13", "CREATE")
	second := e.queueCust("13", "UPDATE")
	var purged atomic.Bool
	var del atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if msgs[0].UniqueID == strconv.FormatInt(first, 10) && purged.CompareAndSwap(false, true) {
			del.Store(e.deleteCustomer("13"))
			e.bell.Ring()
			return relay.Response{Status: 503}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	e.start(relay.Config{})
	e.bell.Ring()
	require.Eventually(t, func() bool { return del.Load() != 0 }, 30*time.Second, 5*time.Millisecond)
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.Equal(t, strconv.FormatInt(del.Load(), 10), got[0].msg.UniqueID)
	require.Equal(t, "CUSTOMERDEL", got[0].msg.Action)
	_ = second
}

// Rows that wait in memory through a pause (a 503 with Retry-After) without ever having been
// sent are re-checked when the pause ends: their customer was deleted meanwhile (the delete
// purged them from progress), and nothing of it may leave the relay after the delete.
func TestRowsHeldThroughAPauseAreRecheckedBeforeTheirFirstSend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.queueCust("21", "UPDATE") // the request whose answer pauses everything
	waiting := e.queueCust("22", "UPDATE")
	var paused atomic.Bool
	var purged atomic.Bool
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if msgs[0].UniqueID == strconv.FormatInt(first, 10) && paused.CompareAndSwap(false, true) {
			// Customer 22 is deleted while its row waits for the pause to end.
			e.exec(`DELETE FROM data_sync_cust_progress_queue WHERE unique_id = '22'`)
			purged.Store(true)
			return relay.Response{Status: 503, RetryAfter: 300 * time.Millisecond}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	e.start(relay.Config{Concurrency: 1, BackoffMin: 10 * time.Millisecond, BackoffMax: time.Second})
	e.bell.Ring()
	require.Eventually(t, purged.Load, 30*time.Second, 5*time.Millisecond)
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(first, 10), got[0].msg.UniqueID)
	// Once the first row went through, nothing else was queued: the relay must not send 22.
	require.Never(t, func() bool {
		for _, d := range e.poster.delivered() {
			if d.msg.UniqueID == strconv.FormatInt(waiting, 10) {
				return true
			}
		}
		return false
	}, time.Second, 20*time.Millisecond, "a deleted customer's row held through a pause was sent")
}

// TestDeletedCustomerWaitingBehindAFullWindowIsNotSent: customer 42's change waits in the
// window while the request before it is in flight; the customer is deleted then (its progress
// rows purged, its DELETE queued in pending), and the window is too full to move the DELETE
// (a backlog). The relay must learn of the delete anyway and never send 42's change: the
// receiver answers the request in flight only after the relay looked for pending deletes
// (or after 10 s, when it never does).
func TestDeletedCustomerWaitingBehindAFullWindowIsNotSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.queueCust("41", "UPDATE")
	waiting := e.queueCust("42", "UPDATE")
	filler := e.queueCust("43", "UPDATE") // pending ahead of the DELETE: the next move takes it
	var del atomic.Int64
	seen := make(chan struct{})
	var once sync.Once
	trace := func(ev relay.TraceEvent) {
		if ev.Stage == relay.TraceDeletes && del.Load() != 0 && slices.Contains(ev.IDs, del.Load()) {
			once.Do(func() { close(seen) })
		}
	}
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if msgs[0].UniqueID == strconv.FormatInt(first, 10) && del.Load() == 0 {
			del.Store(e.deleteCustomer("42"))
			e.bell.Ring()
			select {
			case <-seen:
			case <-time.After(10 * time.Second):
			}
		}
		return relay.Response{Status: 200}, nil
	})
	e.start(relay.Config{Concurrency: 1, MoveBatch: 2, Window: 2, Trace: trace})
	e.bell.Ring()
	got := e.waitDelivered(3)
	var ids []int64
	for _, d := range got {
		ids = append(ids, idOf(t, d))
	}
	require.NotContains(t, ids, waiting, "a deleted customer's change was sent after its delete")
	require.Equal(t, []int64{first, filler, del.Load()}, ids)
}

// A first 429 without Retry-After under the adaptive limit (its overshoot of a receiver's cap,
// most likely) sends the rows again as soon as the cut limit lets them, not after a backoff: the
// backoff here is an hour, and the row is delivered at once. A second refusal of the same rows
// backs off as usual.
func TestAFirstRefusalIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	once := e.queueCust("51", "UPDATE")
	twice := e.queueCust("52", "UPDATE")
	var mu sync.Mutex
	refused := map[string]int{}
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		id := msgs[0].UniqueID
		if (id == strconv.FormatInt(once, 10) && refused[id] < 1) || id == strconv.FormatInt(twice, 10) && refused[id] < 2 {
			refused[id]++
			return relay.Response{Status: 429}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	e.start(relay.Config{BackoffMin: time.Hour, BackoffMax: time.Hour})
	e.bell.Ring()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(e.poster.delivered()) == 1 && refused[strconv.FormatInt(twice, 10)] == 2
	}, 30*time.Second, 5*time.Millisecond, "the row refused once was not delivered, or the other not refused twice")
	require.Equal(t, once, idOf(t, e.poster.delivered()[0]))
	require.Never(t, func() bool { return len(e.poster.delivered()) > 1 }, 300*time.Millisecond, 20*time.Millisecond,
		"a row refused twice was sent again before its backoff")
}

// TestDeletedCustomerNamedByTheDoorbellIsNotSent: customer 62's second change waits in the
// window while its first is in flight; the customer is deleted then, and the doorbell names its
// DELETE row while the row waits in pending (the ring names only the transaction queue, so no
// move takes it). The relay must not send the second change: the receiver answers the first
// request only after the relay took the doorbell's news (or after 10 s, when it never does).
func TestDeletedCustomerNamedByTheDoorbellIsNotSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.queueCust("62", "UPDATE")
	second := e.queueCust("62", "UPDATE")
	var del atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if msgs[0].UniqueID == strconv.FormatInt(first, 10) && del.Load() == 0 {
			id := e.deleteCustomer("62")
			del.Store(id)
			taken := e.bell.NoteDeleted("62", id)
			e.bell.RingTables("data_sync_trn_pending_queue")
			select {
			case <-taken:
			case <-time.After(10 * time.Second):
			}
		}
		return relay.Response{Status: 200}, nil
	})
	e.start(relay.Config{})
	e.bell.Ring()
	require.Eventually(t, func() bool { return len(e.poster.delivered()) >= 1 }, 30*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool { return len(e.poster.delivered()) > 1 }, 500*time.Millisecond, 10*time.Millisecond,
		"a change of a customer the doorbell named deleted was sent")
	e.bell.Ring() // the DELETE row is moved and sent now
	got := e.waitDelivered(2)
	var ids []int64
	for _, d := range got {
		ids = append(ids, idOf(t, d))
	}
	require.NotContains(t, ids, second)
	require.Equal(t, []int64{first, del.Load()}, ids)
}
