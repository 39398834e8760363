package relay

import (
	"math"
	"time"
)

// concurrencyLimit decides how many requests may be in flight. Fixed (--concurrency N), it only
// yields to pressure: 429 and 503 halve it and successes grow it back by one per limit
// successes. Adaptive (the default), it also finds the receiver's capacity by itself, in rounds
// of limit completions:
//
//   - the latency floor is the lowest request latency seen in the last two floorPeriods;
//   - a round whose mean latency stayed within the tolerance of the floor, and in which the
//     limit was actually reached (otherwise the round says nothing about more concurrency),
//     grows the limit: doubling (by half from slowStartHalf on) until the first sign of
//     saturation (slow start), then by about the square root of the limit a round;
//   - a round whose mean latency rose beyond the tolerance (requests queue at the receiver)
//     shrinks it by a tenth;
//   - a 429, 503, timeout or connection error cuts it to nine tenths of the requests in flight
//     when it came, unless the failed request was sent before the last cut (the cut answered
//     for it already) or the last cut is less than a latency floor old (one cut per round
//     trip); answers to requests sent before a cut do not grow the limit either. A
//     fixed limit halves, at most once a second, and grows back by one per limit successes.
//
// The limit stays within [1, max]. Keys are still sent one request at a time: the limit bounds
// requests across keys.
type concurrencyLimit struct {
	adaptive bool
	max      int
	limit    int

	successes int       // fixed mode: successes since the last step up
	cooldown  time.Time // fixed mode: no second halving before this
	lastCut   time.Time // adaptive: answers to requests sent before this say nothing new

	slowStart bool
	round     int           // completions left in the current round
	roundN    int           // completions counted in the round
	roundSum  time.Duration // their total latency
	roundPeak int           // most requests in flight during the round

	floor, floorNext time.Duration
	floorSince       time.Time
}

// floorPeriod is how long a latency floor is kept: a receiver that became slower for good is
// measured afresh after at most two periods.
const floorPeriod = 30 * time.Second

// adaptiveStart is where an adaptive limit starts; slowStartHalf is where its slow start stops
// doubling and grows by half.
const (
	adaptiveStart = 16
	slowStartHalf = 64
)

func newConcurrencyLimit(fixed, max int) *concurrencyLimit {
	if fixed > 0 {
		return &concurrencyLimit{max: fixed, limit: fixed}
	}
	l := &concurrencyLimit{adaptive: true, max: max, limit: min(adaptiveStart, max), slowStart: true}
	l.round = l.limit
	return l
}

// tolerance is how far above its floor a round's mean latency may be before the receiver counts
// as saturated: half the floor plus 2 ms (a local receiver's latency moves by a millisecond with
// the machine's load alone).
func tolerance(floor time.Duration) time.Duration { return floor + floor/2 + 2*time.Millisecond }

// sending records the number of requests in flight after a new one started.
func (l *concurrencyLimit) sending(inflight int) {
	l.roundPeak = max(l.roundPeak, inflight)
}

// success records a delivered request and its latency.
func (l *concurrencyLimit) success(took time.Duration, now time.Time) {
	if !l.adaptive {
		if l.limit >= l.max {
			return
		}
		l.successes++
		if l.successes >= l.limit {
			l.successes = 0
			l.limit++
		}
		return
	}
	l.observe(took, now)
	l.roundN++
	l.roundSum += took
	if l.round--; l.round > 0 {
		return
	}
	if now.Add(-took).Before(l.lastCut) {
		// Requests sent before the last cut are still answering: judge the next round.
		l.round, l.roundN, l.roundSum, l.roundPeak = l.limit, 0, 0, 0
		return
	}
	mean := l.roundSum / time.Duration(l.roundN)
	switch {
	case mean > tolerance(l.floor):
		l.slowStart = false
		l.limit = max(1, l.limit-max(1, l.limit/10))
	case l.roundPeak >= l.limit*3/4:
		if l.slowStart {
			// Doubling while small; by half as much again from slowStartHalf on, so that the
			// round that crosses a receiver's cap overshoots it by less (256 -> 512 against a
			// cap of 300 sent 212 requests to be refused at once; 216 -> 324 sends 24).
			if l.limit < slowStartHalf {
				l.limit = min(l.max, 2*l.limit)
			} else {
				l.limit = min(l.max, l.limit+l.limit/2)
			}
		} else {
			l.limit = min(l.max, l.limit+max(1, int(math.Sqrt(float64(l.limit)))))
		}
	}
	l.round, l.roundN, l.roundSum, l.roundPeak = l.limit, 0, 0, 0
}

// observe keeps the latency floor: the minimum over the current and the previous period.
func (l *concurrencyLimit) observe(took time.Duration, now time.Time) {
	if l.floorSince.IsZero() {
		l.floorSince = now
	}
	if now.Sub(l.floorSince) >= floorPeriod {
		l.floor, l.floorNext, l.floorSince = l.floorNext, 0, now
	}
	if l.floorNext == 0 || took < l.floorNext {
		l.floorNext = took
	}
	if l.floor == 0 || took < l.floor {
		l.floor = took
	}
}

// pressure records a 429/503, a timeout or a connection error for a request that took took,
// answered while inflight requests were out (itself included).
func (l *concurrencyLimit) pressure(inflight int, took time.Duration, now time.Time) {
	if !l.adaptive {
		if now.Before(l.cooldown) {
			return
		}
		l.cooldown = now.Add(time.Second)
		l.successes = 0
		l.limit = max(1, l.limit/2)
		return
	}
	l.slowStart = false
	if now.Add(-took).Before(l.lastCut) {
		return // sent under the limit before the last cut, which already answered for it
	}
	if now.Sub(l.lastCut) < l.floor {
		// At most one cut per round trip: requests sent just after a cut meet a receiver still
		// full with the ones sent before it, and cutting again for each would spiral the limit
		// far below the cap (300 down to 60-90 in one second against a cap of 300).
		return
	}
	l.lastCut = now
	l.limit = max(1, min(l.limit, inflight)*9/10)
	l.round, l.roundN, l.roundSum, l.roundPeak = l.limit, 0, 0, 0
}
