package relay

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

// endpointSignature names the outcome of a failed request when it may mean the endpoint as a
// whole is failing (a wrong path, a withdrawn route, a WAF rule, a certificate or DNS problem,
// credentials refused, an outage), and "" when it is about the record itself: 400, 409, 413 and
// 422 judge a message's content, so they stay record failures whatever else fails.
func endpointSignature(resp Response, err error) string {
	switch s := resp.Status; {
	case s == 0 && err != nil:
		return "no response"
	case s == 400 || s == 409 || s == 413 || s == 422:
		return ""
	default:
		return "HTTP " + strconv.Itoa(s)
	}
}

// endpointHealth tells endpoint-wide failures from record failures. Request goroutines report
// every outcome; when EndpointFailureKeys distinct keys in a row fail with the same endpoint
// signature, with nothing delivered in between (for 429 and 503, for at least pressureSpan),
// the endpoint counts as failing until a request is delivered. A record refused while other
// records are delivered never gets there: every delivery (and every record-class refusal)
// breaks the streak.
type endpointHealth struct {
	mu         sync.Mutex
	threshold  int
	sig        string              // signature of the current streak ("" = none)
	keys       map[string]struct{} // distinct keys in the current streak
	first      time.Time           // when the current streak began
	failing    bool
	since      time.Time // start of the streak that made the endpoint fail
	desc       string    // the failure that made it fail, as describe() says it
	deliveries uint64    // requests delivered so far (see blame)
}

func newEndpointHealth(threshold int) *endpointHealth {
	return &endpointHealth{threshold: threshold, keys: map[string]struct{}{}}
}

// endpointState is a snapshot of endpointHealth.
type endpointState struct {
	failing bool
	since   time.Time
	sig     string
	desc    string
}

func (h *endpointHealth) state() endpointState {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.failing {
		return endpointState{}
	}
	return endpointState{failing: true, since: h.since, sig: h.sig, desc: h.desc}
}

// delivered records a delivered request; changed reports that the endpoint stopped failing.
func (h *endpointHealth) delivered() (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed = h.failing
	h.failing = false
	h.deliveries++
	h.resetStreak("", time.Time{})
	return changed
}

// reset forgets the failing state (new settings: a new endpoint); changed as for delivered.
func (h *endpointHealth) reset() (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed = h.failing
	h.failing = false
	h.resetStreak("", time.Time{})
	return changed
}

// blame tells whether an endpoint-wide kind of failure (sig != "") may count against rows:
// only once some other request was delivered since the rows first failed that way. Until
// then the endpoint may be failing for everyone, which one record cannot tell (the first
// failures of a storm come in before the streak is long enough to say so). Record-class
// failures always count.
func (h *endpointHealth) blame(rows []*row, sig string) bool {
	if sig == "" {
		return true
	}
	h.mu.Lock()
	n := h.deliveries
	h.mu.Unlock()
	blame := true
	for _, r := range rows {
		if !r.epFailed {
			r.epFailed, r.epDelivered = true, n
		}
		blame = blame && n > r.epDelivered
	}
	return blame
}

// pressureSpan is how long a streak of 429 or 503 answers must last, from the first request
// refused to the start of the last, before the endpoint counts as failing. A receiver with a cap
// on requests in flight answers the requests over it at once while the others take their
// latency: when the concurrency limit overshoots the cap, a burst of refusals comes back before
// the next delivery, and would otherwise pause everything for a receiver that is working (the
// limit's own cut answers it). A receiver that refuses everything is paused a second later.
const pressureSpan = time.Second

// failed records a failed request for key, sent at sent; pressure: the answer was a 429 or 503.
// endpointWide reports that the endpoint is failing and this failure is of the endpoint-wide
// kind: it must not count against the record.
func (h *endpointHealth) failed(key, sig, desc string, pressure bool, sent time.Time) (endpointWide, changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sig == "" {
		h.resetStreak("", time.Time{})
		return false, false
	}
	if sig != h.sig {
		h.resetStreak(sig, sent)
	}
	h.keys[key] = struct{}{}
	if !h.failing && len(h.keys) >= h.threshold && (!pressure || sent.Sub(h.first) >= pressureSpan) {
		h.failing, h.since, h.desc, changed = true, h.first, desc, true
	}
	return h.failing, changed
}

func (h *endpointHealth) resetStreak(sig string, now time.Time) {
	h.sig, h.first = sig, now
	clear(h.keys)
}

// String is the state line for State(), the log and status: "endpoint failing: HTTP 404 since …".
func (s endpointState) String() string {
	return fmt.Sprintf("endpoint failing: %s since %s", s.sig, s.since.UTC().Format(time.RFC3339))
}

// relayState is what the leading relay records in data_sync_leader for status: the endpoint
// state and its concurrency limit (limit 0: none yet).
type relayState struct {
	endpoint   endpointState
	limit, max int
	adaptive   bool
}

// relayRowEvery is the least time between two writes of a changed concurrency limit (an
// adaptive limit moves with every round of requests); endpoint changes are written at once.
const relayRowEvery = time.Second

// relayRow writes the relay's state to data_sync_leader off the dispatcher's goroutine: the
// latest state wins, and a failed write is retried with backoff until the session ends.
type relayRow struct {
	mu     sync.Mutex
	want   relayState
	dirty  bool // want differs from what was written
	urgent bool // the endpoint state changed: write without waiting for relayRowEvery
	wake   chan struct{}
}

func newRelayRow() *relayRow { return &relayRow{wake: make(chan struct{}, 1)} }

func (w *relayRow) setEndpoint(s endpointState) {
	w.mu.Lock()
	w.want.endpoint, w.dirty, w.urgent = s, true, true
	w.mu.Unlock()
	w.poke()
}

// setConcurrency notes the concurrency limit; it is cheap when nothing changed (the dispatcher
// calls it on every turn).
func (w *relayRow) setConcurrency(limit, max int, adaptive bool) {
	w.mu.Lock()
	if w.want.limit == limit && w.want.max == max && w.want.adaptive == adaptive {
		w.mu.Unlock()
		return
	}
	w.want.limit, w.want.max, w.want.adaptive, w.dirty = limit, max, adaptive, true
	w.mu.Unlock()
	w.poke()
}

func (w *relayRow) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *relayRow) run(ctx context.Context, store deliveryStore, log *zap.Logger) {
	failures := 0
	var last time.Time // the last write
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			s, dirty, urgent := w.want, w.dirty, w.urgent
			if dirty && !urgent && time.Since(last) < relayRowEvery {
				w.mu.Unlock()
				select { // a limit change waits its turn; an endpoint change wakes it
				case <-ctx.Done():
					return
				case <-w.wake:
				case <-time.After(time.Until(last.Add(relayRowEvery))):
				}
				continue
			}
			w.dirty, w.urgent = false, false
			w.mu.Unlock()
			if !dirty {
				break
			}
			opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := store.SetRelayState(opCtx, s)
			cancel()
			last = time.Now()
			if err == nil {
				failures = 0
				continue
			}
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 {
				log.Warn("recording the relay's state in data_sync_leader failed; retrying", zap.Error(err))
			}
			w.mu.Lock()
			if !w.dirty {
				w.want, w.dirty, w.urgent = s, true, urgent
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff(failures, 100*time.Millisecond, 5*time.Second, 0)):
			}
		}
	}
}

// setEndpointGauge exports the endpoint state as a metric.
func setEndpointGauge(m *metrics.Relay, s endpointState) {
	v := 0.0
	if s.failing {
		v = 1
	}
	m.EndpointFailing.Set(v)
}
