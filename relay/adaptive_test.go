package relay

import (
	"container/heap"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// simReceiver is a deterministic model of a remote receiver for the concurrency limit: each
// request takes latency (plus queueing beyond workers, if set), and requests beyond maxInflight
// are answered 429 at once. Time is simulated: the test runs in microseconds.
type simReceiver struct {
	latency     time.Duration
	maxInflight int // 0: no limit
	workers     int // 0: unlimited parallelism; else requests beyond it queue (latency grows)
	trace       func(now time.Time, limit, inflight, status int)
}

type simEvent struct {
	at     time.Time
	status int
	took   time.Duration
}

type simQueue []simEvent

func (q simQueue) Len() int           { return len(q) }
func (q simQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q simQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)        { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any          { old := *q; e := old[len(old)-1]; *q = old[:len(old)-1]; return e }

// run drives l against the receiver for d of simulated time with an endless backlog and reports
// requests delivered, requests refused, and the mean limit over the second half.
func (s simReceiver) run(l *concurrencyLimit, d time.Duration) (ok, refused int, meanLimit float64) {
	now := time.Unix(0, 0)
	end := now.Add(d)
	var q simQueue
	inflight := 0
	var limitSum, limitN float64
	busyUntil := []time.Time{} // workers model: when each started request finishes service
	for now.Before(end) {
		for inflight < l.limit {
			inflight++
			l.sending(inflight)
			if s.maxInflight > 0 && inflight > s.maxInflight {
				heap.Push(&q, simEvent{at: now.Add(time.Millisecond), status: 429, took: time.Millisecond})
				continue
			}
			took := s.latency
			if s.workers > 0 && len(busyUntil) >= s.workers {
				// queue behind the earliest-finishing worker slot
				start := busyUntil[0]
				busyUntil = busyUntil[1:]
				if start.After(now) {
					took += start.Sub(now)
				}
			}
			if s.workers > 0 {
				busyUntil = append(busyUntil, now.Add(took))
			}
			heap.Push(&q, simEvent{at: now.Add(took), status: 200, took: took})
		}
		e := heap.Pop(&q).(simEvent)
		now = e.at
		inflight--
		if s.trace != nil {
			s.trace(now, l.limit, inflight, e.status)
		}
		if e.status == 200 {
			ok++
			l.success(e.took, now)
		} else {
			refused++
			l.pressure(inflight+1, e.took, now)
		}
		if now.After(time.Unix(0, 0).Add(d / 2)) {
			limitSum += float64(l.limit)
			limitN++
		}
	}
	return ok, refused, limitSum / limitN
}

func TestAdaptiveLimitFindsAnInflightCap(t *testing.T) {
	t.Parallel()
	l := newConcurrencyLimit(0, 512)
	ok, refused, mean := simReceiver{latency: 100 * time.Millisecond, maxInflight: 300}.run(l, 60*time.Second)
	rate := float64(ok) / 60
	t.Logf("100 ms receiver, 300 in flight at most: %.0f requests/s (capacity 3000), %d refused (%.2f %%), mean limit %.0f",
		rate, refused, 100*float64(refused)/float64(ok+refused), mean)
	if rate < 0.8*3000 {
		t.Errorf("throughput %.0f/s is below 0.8 of the receiver's capacity (3000/s)", rate)
	}
	if float64(refused) > 0.05*float64(ok+refused) {
		t.Errorf("%d of %d requests refused with 429: more than 5 %%", refused, ok+refused)
	}
}

// The slow start crosses a receiver's cap by little: in the first two seconds against a cap of
// 300 (a 20,000-row drain lasts about ten), this model refuses 110 requests; doubling all the
// way (256 -> 512) refused 677.
func TestSlowStartOvershootsACapByLittle(t *testing.T) {
	t.Parallel()
	l := newConcurrencyLimit(0, 512)
	ok, refused, _ := simReceiver{latency: 100 * time.Millisecond, maxInflight: 300}.run(l, 2*time.Second)
	t.Logf("first 2 s against a cap of 300: %d delivered, %d refused, limit %d", ok, refused, l.limit)
	if refused > 200 {
		t.Errorf("%d requests refused in the slow start: the limit overshot the cap of 300 by too much", refused)
	}
}

func TestAdaptiveLimitGrowsToItsBoundWithoutPressure(t *testing.T) {
	t.Parallel()
	l := newConcurrencyLimit(0, 512)
	ok, refused, _ := simReceiver{latency: 200 * time.Millisecond}.run(l, 30*time.Second)
	if l.limit != 512 || refused != 0 {
		t.Errorf("limit %d, %d refused: want 512 and none against an unlimited 200 ms receiver", l.limit, refused)
	}
	t.Logf("200 ms receiver, no limit: %.0f requests/s", float64(ok)/30)
}

func TestAdaptiveLimitBacksOffWhenLatencyRises(t *testing.T) {
	t.Parallel()
	// 50 workers of 10 ms: beyond 50 in flight requests queue, latency rises, throughput does not.
	l := newConcurrencyLimit(0, 512)
	ok, _, mean := simReceiver{latency: 10 * time.Millisecond, workers: 50}.run(l, 30*time.Second)
	t.Logf("50 workers x 10 ms: %.0f requests/s (capacity 5000), mean limit %.0f", float64(ok)/30, mean)
	if mean > 100 {
		t.Errorf("mean limit %.0f: the limit should stay near the 50 workers, not grow into the queue", mean)
	}
	if float64(ok)/30 < 0.8*5000 {
		t.Errorf("throughput %.0f/s is below 0.8 of the workers' capacity", float64(ok)/30)
	}
}

func TestFixedLimitHalvesAndRecovers(t *testing.T) {
	t.Parallel()
	l := newConcurrencyLimit(16, 512)
	now := time.Unix(0, 0)
	l.pressure(16, time.Millisecond, now)
	if l.limit != 8 {
		t.Fatalf("limit %d after a 429, want 8", l.limit)
	}
	l.pressure(8, time.Millisecond, now.Add(100*time.Millisecond)) // within the cooldown: no second halving
	if l.limit != 8 {
		t.Fatalf("limit %d after a second 429 within the cooldown, want 8", l.limit)
	}
	for i := 0; i < 1000; i++ {
		l.success(time.Millisecond, now)
	}
	if l.limit != 16 {
		t.Fatalf("limit %d after many successes, want it back at the fixed 16", l.limit)
	}
}

// Refusals of requests sent just after a cut (the receiver is still full with the ones sent
// before it) do not cut again: one cut per latency floor. Before, each cut the limit by a tenth,
// and a second's refusals spiralled it from 300 to below 100.
func TestOneCutPerRoundTrip(t *testing.T) {
	t.Parallel()
	l := newConcurrencyLimit(0, 512)
	now := time.Unix(0, 0)
	l.limit = 300
	l.success(100*time.Millisecond, now) // the latency floor: 100 ms
	now = now.Add(time.Second)
	l.pressure(300, time.Millisecond, now)
	require.Equal(t, 270, l.limit, "the first refusal cuts to nine tenths of the requests in flight")
	for i := 1; i <= 20; i++ { // sent after the cut, refused within the round trip
		l.pressure(280, time.Millisecond, now.Add(time.Duration(i)*4*time.Millisecond))
	}
	require.Equal(t, 270, l.limit, "refusals within a round trip of the cut cut again")
	l.pressure(280, time.Millisecond, now.Add(150*time.Millisecond))
	require.Equal(t, 243, l.limit, "a refusal a round trip later cuts again")
}
