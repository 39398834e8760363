package bench

import (
	"slices"
	"sync"
	"time"

	"github.com/cdc-relay/cdc-relay/relay"
)

// Stage is one step of the latency breakdown (Options.Breakdown): its median and 99th
// percentile over the changes of a run, in milliseconds. A step may be negative for some
// changes (the doorbell can ring before the writer sees its COMMIT return), so the medians
// add up to about the median total, not exactly.
type Stage struct {
	Name string  `json:"name"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
}

// stageNames are the steps of a change, in order; each is measured from the end of the one
// before, so a change's steps add up to its latency.
var stageNames = []string{
	"UPDATE + COMMIT (writer)",      // before the statement to its return: capture trigger, JSON, durable commit
	"commit returned -> ring",       // the walsender decodes the commit, the doorbell rings the dispatcher
	"ring -> mover takes request",   // dispatcher to mover hand-off (waits for a move under way)
	"-> move statement sent",        // the moves of other queues first
	"await_commit + move",           // the ringing transactions made visible, pending -> progress, durable commit
	"move -> dispatcher",            // the moves of later queues, mover to dispatcher hand-off
	"dispatcher -> POST sent",       // window, request goroutine, body
	"POST sent -> receiver arrival", // HTTP client, TLS, receiver's parsing and checks
	"total",
}

// tracer collects the relay's trace events (relay.Config.Trace) of one latency run. Rings name
// transactions, not rows: a change's ring is the first one after both its statement was sent
// and the mover took the request before the one that moved it (or, when none came between,
// that request itself).
type tracer struct {
	mu    sync.Mutex
	rings []time.Time // the doorbell's rings, in order
	// take is the mover's current request (relay.TraceTake): when it and the one before were
	// taken. The moves that follow belong to it.
	take   moveTrace
	moves  map[int64]moveTrace
	admits map[int64]time.Time
	posts  map[int64]time.Time // POST sent
}

type moveTrace struct {
	prevTook, took, sent, done time.Time
}

func newTracer() *tracer {
	return &tracer{moves: map[int64]moveTrace{}, admits: map[int64]time.Time{}, posts: map[int64]time.Time{}}
}

func (t *tracer) record(e relay.TraceEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Stage {
	case relay.TraceRing:
		t.rings = append(t.rings, e.At)
	case relay.TraceTake:
		t.take = moveTrace{prevTook: t.take.took, took: e.At}
	case relay.TraceMove:
		for _, id := range e.IDs {
			t.moves[id] = moveTrace{prevTook: t.take.prevTook, took: t.take.took, sent: e.Began, done: e.At}
		}
	case relay.TraceAdmit:
		for _, id := range e.IDs {
			t.admits[id] = e.At
		}
	case relay.TracePost:
		for _, id := range e.IDs {
			if _, ok := t.posts[id]; !ok {
				t.posts[id] = e.Began
			}
		}
	}
}

// stages returns the breakdown over the changes traced from end to end.
func (t *tracer) stages(commits []commit, arr *arrivals) []Stage {
	t.mu.Lock()
	defer t.mu.Unlock()
	steps := make([][]float64, len(stageNames))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, c := range commits {
		mv, ok1 := t.moves[c.row]
		admit, ok2 := t.admits[c.row]
		post, ok3 := t.posts[c.row]
		at, ok4 := arr.get(c.id)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			continue
		}
		ring := mv.took
		from := c.at
		if mv.prevTook.After(from) {
			from = mv.prevTook
		}
		if i, _ := slices.BinarySearchFunc(t.rings, from, time.Time.Compare); i < len(t.rings) && !t.rings[i].After(mv.took) {
			ring = t.rings[i]
		}
		points := []time.Time{c.at, c.done, ring, mv.took, mv.sent, mv.done, admit, post, at}
		for i := 1; i < len(points); i++ {
			steps[i-1] = append(steps[i-1], ms(points[i].Sub(points[i-1])))
		}
		steps[len(steps)-1] = append(steps[len(steps)-1], ms(at.Sub(c.at)))
	}
	out := make([]Stage, len(stageNames))
	for i, s := range steps {
		slices.Sort(s)
		out[i] = Stage{Name: stageNames[i], P50: percentile(s, 50), P99: percentile(s, 99)}
	}
	return out
}
