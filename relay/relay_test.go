package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

func TestDeliversEveryTypeWithExactEnvelope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	create := e.queueCust("101", "CREATE")
	update := e.queueCust("101", "UPDATE")
	trn := e.queueTrn("T-1")
	del := e.queueCust("101", "DELETE")
	e.start(relay.Config{})
	e.bell.Ring()
	got := e.waitDelivered(4)
	byID := map[int64]mapping.Message{}
	for _, d := range got {
		byID[idOf(t, d)] = d.msg
	}
	require.Equal(t, mapping.Message{Action: "CUSTOMERCRE", Type: "CUSTOMER", UniqueID: strconv.FormatInt(create, 10), Payload: custJSON(t, "101")}, byID[create])
	require.Equal(t, "CUSTOMERMOD", byID[update].Action)
	require.Equal(t, mapping.Message{Action: "POSTRNCRE", Type: "POSTRN", UniqueID: strconv.FormatInt(trn, 10), Payload: trnJSON(t, "T-1")}, byID[trn])
	require.Equal(t, mapping.Message{Action: "CUSTOMERDEL", Type: "CUSTOMER", UniqueID: strconv.FormatInt(del, 10), Payload: "101"}, byID[del])
	// per-customer order
	var order []int64
	for _, d := range got {
		if d.msg.Type == "CUSTOMER" {
			order = append(order, idOf(t, d))
		}
	}
	require.Equal(t, []int64{create, update, del}, order)
}

func TestFailureIsRecordedOnTheRowAndDeliveredAfterRecovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var failing atomic.Bool
	failing.Store(true)
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if failing.Load() {
			return relay.Response{Status: 500, Excerpt: "boom"}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	id := e.queueCust("7", "UPDATE")
	e.start(relay.Config{BackoffMin: 20 * time.Millisecond, BackoffMax: 40 * time.Millisecond})
	e.bell.Ring()
	require.Eventually(t, func() bool {
		return e.count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE id = $1 AND attempts >= 2
			AND last_status = 500 AND last_error = 'HTTP 500' AND next_attempt_at IS NOT NULL AND last_attempt_at IS NOT NULL`, id) == 1
	}, 30*time.Second, 5*time.Millisecond)
	require.Empty(t, e.poster.delivered())
	failing.Store(false)
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(id, 10), got[0].msg.UniqueID)
}

func TestProgressIsDeliveredBeforePending(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Rows left in progress by an earlier run (a crash), and newer rows in pending.
	p1 := e.queueCust("1", "UPDATE")
	p2 := e.queueCust("2", "UPDATE")
	e.leaveInProgress()
	n1 := e.queueCust("3", "UPDATE")
	n2 := e.queueCust("1", "UPDATE")
	e.start(relay.Config{Concurrency: 1})
	got := e.waitDelivered(4)
	var ids []int64
	for _, d := range got {
		ids = append(ids, idOf(t, d))
	}
	require.Equal(t, []int64{p1, p2, n1, n2}, ids)
}

func TestPerKeyOrderUnderConcurrencyWithRandomFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		// answers arrive out of order (random delays) and 20 % fail
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		if rand.IntN(5) == 0 {
			return relay.Response{Status: 503}, nil
		}
		if rand.IntN(20) == 0 {
			return relay.Response{}, errors.New("connection reset")
		}
		return relay.Response{Status: 200}, nil
	})
	const customers, changes = 40, 600
	want := map[string][]int64{}
	for i := 0; i < changes; i++ {
		c := strconv.Itoa(i % customers)
		want[c] = append(want[c], e.queueCust(c, "UPDATE"))
	}
	e.start(relay.Config{Concurrency: 16, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	got := e.waitDelivered(changes)
	gotBy := map[string][]int64{}
	for _, d := range got {
		c, err := mapping.DecodeCustomer([]byte(d.msg.Payload))
		require.NoError(t, err)
		gotBy[c.CustomerID] = append(gotBy[c.CustomerID], idOf(t, d))
	}
	require.Equal(t, want, gotBy)
	require.Greater(t, e.poster.maxIn, 1, "requests should overlap")
}

func TestPoisonRecordBlocksOnlyItsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		c, _ := mapping.DecodeCustomer([]byte(msgs[0].Payload))
		if c != nil && c.CustomerID == "13" {
			return relay.Response{Status: 422, Excerpt: "customer 13 refused"}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	poison := e.queueCust("13", "UPDATE")
	later := e.queueCust("13", "UPDATE")
	for i := 0; i < 20; i++ {
		e.queueCust(strconv.Itoa(100+i), "UPDATE")
	}
	e.start(relay.Config{PermanentAttempts: 2})
	e.waitDelivered(20)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed'
		AND attempts = 2 AND last_status = 422 AND response_excerpt = 'customer 13 refused'`, poison))
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'held'`, later))
	// A change queued after the dead letter waits behind it too.
	third := e.queueCust("13", "UPDATE")
	other := e.queueCust("200", "UPDATE")
	e.bell.Ring()
	e.waitDelivered(21)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'held'`, third))
	_ = other
	for _, d := range e.poster.delivered() {
		require.NotContains(t, []int64{poison, later, third}, idOf(t, d))
	}

	// Requeue the key (the README's one statement) once the receiver accepts it: all three arrive, in order.
	e.poster.setAnswer(nil)
	e.exec(`WITH r AS (DELETE FROM data_sync_cust_failed WHERE unique_id = '13'
		RETURNING id, obj_name, unique_id, action, json_object, created_at)
		INSERT INTO data_sync_cust_pending_queue (id, obj_name, unique_id, action, json_object, created_at) SELECT * FROM r`)
	e.bell.Ring()
	got := e.waitDelivered(24)
	var tail []int64
	for _, d := range got[21:] {
		tail = append(tail, idOf(t, d))
	}
	require.Equal(t, []int64{poison, later, third}, tail)
	require.Zero(t, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestSkipDeadLettersLetsLaterRecordsPass(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	poison := e.queueCust("13", "UPDATE")
	e.poster.refuse(poison, 400)
	later := e.queueCust("13", "UPDATE")
	e.start(relay.Config{PermanentAttempts: 1, SkipDeadLetters: true})
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(later, 10), got[0].msg.UniqueID)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1 AND reason = 'failed'`, poison))
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestBadRecordsAreParkedWithAClearError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES
		('1', 'UPDATE', '[1,2]'),
		('2', 'UPDATE', '{"customerID": 2}'),
		('3', 'FROB', '{}'),
		(NULL, 'UPDATE', '{}'),
		('5', 'UPDATE', NULL)`)
	e.exec(`INSERT INTO data_sync_cust_pending_queue (obj_name, unique_id, action, json_object) VALUES ('Widget', '6', 'UPDATE', '{}')`)
	good := e.queueCust("9", "UPDATE")
	e.start(relay.Config{})
	got := e.waitDelivered(1)
	require.Equal(t, strconv.FormatInt(good, 10), got[0].msg.UniqueID)
	rows, err := e.db.Query(context.Background(), `SELECT coalesce(unique_id, 'null'), last_error FROM data_sync_cust_failed ORDER BY id`)
	require.NoError(t, err)
	errs := map[string]string{}
	for rows.Next() {
		var k, msg string
		require.NoError(t, rows.Scan(&k, &msg))
		errs[k] = msg
	}
	require.NoError(t, rows.Err())
	require.Len(t, errs, 6)
	require.Contains(t, errs["1"], "not a JSON object")
	require.Contains(t, errs["2"], "customerID")
	require.Contains(t, errs["3"], "FROB")
	require.Contains(t, errs["null"], "UNIQUE_ID is null")
	require.Contains(t, errs["5"], "JSON_OBJECT is null")
	require.Contains(t, errs["6"], "Widget")
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var first atomic.Int64
	var second atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if n == 1 {
			first.Store(time.Now().UnixNano())
			return relay.Response{Status: 429, RetryAfter: 300 * time.Millisecond}, nil
		}
		second.CompareAndSwap(0, time.Now().UnixNano())
		return relay.Response{Status: 200}, nil
	})
	e.queueCust("1", "UPDATE")
	// Retry-After is honoured up to --backoff-max (see TestRetryAfterIsCappedAtBackoffMax).
	e.start(relay.Config{Concurrency: 1, BackoffMin: 5 * time.Millisecond, BackoffMax: time.Second})
	e.waitDelivered(1)
	require.GreaterOrEqual(t, time.Duration(second.Load()-first.Load()), 300*time.Millisecond,
		"the retry must not come before Retry-After")
}

func TestTooManyRequestsSlowsThePipeline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var storm atomic.Bool
	storm.Store(true)
	var maxDuringCalm atomic.Int64
	var inflight atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		cur := inflight.Add(1)
		defer inflight.Add(-1)
		time.Sleep(time.Millisecond)
		if storm.Load() {
			if n > 200 {
				storm.Store(false)
			}
			return relay.Response{Status: 429}, nil
		}
		if cur > maxDuringCalm.Load() {
			maxDuringCalm.Store(cur)
		}
		return relay.Response{Status: 200}, nil
	})
	for i := 0; i < 300; i++ {
		e.queueCust(strconv.Itoa(i), "UPDATE")
	}
	r := e.start(relay.Config{Concurrency: 32, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond})
	_ = r
	e.waitDelivered(300)
	// After the storm the limit was cut and grows back one step at a time, so the first calm
	// period sees far fewer than 32 requests in flight.
	require.Less(t, maxDuringCalm.Load(), int64(32))
}

func TestStopModePausesEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var fail atomic.Bool
	fail.Store(true)
	attempted := make(chan string, 100)
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		attempted <- msgs[0].UniqueID
		if fail.Load() {
			return relay.Response{Status: 500}, nil
		}
		return relay.Response{Status: 200}, nil
	})
	a := e.queueCust("1", "UPDATE")
	e.queueCust("2", "UPDATE")
	e.start(relay.Config{OnFailure: relay.OnFailureStop, Concurrency: 1, BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	// The first record fails twice in a row: nothing else was tried in between.
	require.Equal(t, strconv.FormatInt(a, 10), <-attempted)
	require.Equal(t, strconv.FormatInt(a, 10), <-attempted)
	fail.Store(false)
	got := e.waitDelivered(2)
	require.Equal(t, strconv.FormatInt(a, 10), got[0].msg.UniqueID)
	require.Zero(t, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestBatchingPacksMessagesKeepingKeyOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ids []int64
	for i := 0; i < 25; i++ {
		ids = append(ids, e.queueCust(strconv.Itoa(i%5), "UPDATE"))
	}
	e.start(relay.Config{MessagesPerRequest: 10, Concurrency: 1})
	got := e.waitDelivered(25)
	perRequest := map[int]int{}
	last := map[string]int64{}
	for _, d := range got {
		perRequest[d.request]++
		c, err := mapping.DecodeCustomer([]byte(d.msg.Payload))
		require.NoError(t, err)
		require.Greater(t, idOf(t, d), last[c.CustomerID])
		last[c.CustomerID] = idOf(t, d)
	}
	require.Len(t, perRequest, 3)
	for _, n := range perRequest {
		require.LessOrEqual(t, n, 10)
	}
}

func TestBatchFailsAsAWholeThenIsolatesTheRefusedRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := e.queueCust("66", "UPDATE")
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		for _, m := range msgs {
			if m.UniqueID == strconv.FormatInt(bad, 10) {
				return relay.Response{Status: 400}, nil
			}
		}
		return relay.Response{Status: 200}, nil
	})
	for i := 0; i < 9; i++ {
		e.queueCust(strconv.Itoa(i), "UPDATE")
	}
	e.start(relay.Config{MessagesPerRequest: 10, PermanentAttempts: 2})
	e.waitDelivered(9)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed WHERE id = $1`, bad))
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestCoalescingCollapsesUpdates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.queueCust("5", "CREATE")
	e.queueCust("5", "UPDATE")
	last := e.queueCust("5", "UPDATE")
	e.queueCust("6", "UPDATE")
	last6 := e.queueCust("6", "UPDATE")
	trn1 := e.queueTrn("T1")
	e.start(relay.Config{Coalesce: true, Concurrency: 1})
	got := e.waitDelivered(3)
	require.Len(t, got, 3)
	require.Equal(t, "CUSTOMERCRE", got[0].msg.Action)
	require.Equal(t, strconv.FormatInt(last, 10), got[0].msg.UniqueID)
	require.Equal(t, strconv.FormatInt(last6, 10), got[1].msg.UniqueID)
	require.Equal(t, strconv.FormatInt(trn1, 10), got[2].msg.UniqueID)
}

func TestDisablingDataSyncPausesDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(`UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`)
	r := e.start(relay.Config{})
	require.Eventually(t, func() bool { return r.State().Phase == relay.PhaseDisabled }, 10*time.Second, 5*time.Millisecond)
	e.queueCust("1", "UPDATE")
	e.bell.Ring()
	e.exec(`UPDATE data_sync_config SET value = 'yes' WHERE name = 'DataSyncEnabled'`)
	e.bell.RingConfig()
	e.waitDelivered(1)
}

func TestBadSettingsFailFastAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(`UPDATE data_sync_config SET value = NULL WHERE name = 'DataSyncApiUrl'`)
	r, err := relay.New(relay.Config{}, e.db, e.poster.factory(), nil)
	require.NoError(t, err)
	err = r.Run(context.Background())
	require.ErrorIs(t, err, relay.ErrSettings)
	require.ErrorContains(t, err, "DataSyncApiUrl is not set")
}

func TestInvalidConfigIsRefused(t *testing.T) {
	t.Parallel()
	for _, cfg := range []relay.Config{{Concurrency: -1}, {OnFailure: "explode"}, {Delivered: []int{404}}, {MoveBatch: 10, Window: 5}} {
		_, err := relay.New(cfg, nil, nil, nil)
		require.ErrorIs(t, err, relay.ErrConfig, fmt.Sprint(cfg))
	}
}

func TestSecondRelayWaitsAsStandby(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.start(relay.Config{})
	require.Eventually(t, func() bool { return first.State().Phase == relay.PhaseDelivering }, 10*time.Second, 5*time.Millisecond)
	other, err := relay.New(relay.Config{SweepInterval: 100 * time.Millisecond}, e.db, e.poster.factory(), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- other.Run(ctx) }()
	require.Eventually(t, func() bool {
		return other.State().Phase == relay.PhaseStandby && strings.HasPrefix(other.State().String(), "standby: relay ")
	}, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestRateLimitSpacesRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var first, last atomic.Int64
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		last.Store(now)
		return relay.Response{Status: 200}, nil
	})
	for i := 0; i < 21; i++ {
		e.queueCust(strconv.Itoa(i), "UPDATE")
	}
	e.start(relay.Config{RateLimit: 40, Concurrency: 8})
	e.waitDelivered(21)
	// A lower bound only: 21 messages at 40/s with a burst of 1 cannot take less than 20/40 s.
	require.GreaterOrEqual(t, time.Duration(last.Load()-first.Load()), 500*time.Millisecond-5*time.Millisecond)
}

func TestDeliveredStatusesAreConfigurable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.poster.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		return relay.Response{Status: 202}, nil
	})
	e.queueCust("1", "UPDATE")
	e.start(relay.Config{Delivered: []int{200, 202}})
	require.Eventually(t, func() bool {
		return e.count(`SELECT count(*) FROM data_sync_cust_pending_queue`)+e.count(`SELECT count(*) FROM data_sync_cust_progress_queue`) == 0
	}, 30*time.Second, 5*time.Millisecond)
	require.Zero(t, e.count(`SELECT count(*) FROM data_sync_cust_failed`))
}

func TestCoalescingIsCountedInMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := metrics.NewRelay(nil)
	for i := 0; i < 5; i++ {
		e.queueCust("9", "UPDATE")
	}
	e.start(relay.Config{Coalesce: true, Metrics: m})
	got := e.waitDelivered(1)
	require.Len(t, got, 1)
	require.GreaterOrEqual(t, testutil.ToFloat64(m.Coalesced), 4.0)
}
