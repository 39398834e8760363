package relay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

// A resync request (a row of data_sync_resync, written by `cdc-relay resync` or an INSERT) asks
// for existing customers or transactions to be sent again. The mover expands it a page at a time
// with data_sync_resync_step, and only when a move found pending drained: live changes keep
// priority, and the rows it queues are key-only pending rows that the next move snapshots and
// delivers like any other (same order per key, retries, dead letters, metrics). The window
// bounds how many are in flight, so memory does not depend on the size of the resync.

// resyncMoveBudget is how long the rows of one resync page may add to their move. The snapshot
// of each row is built in the move, and a live change committed meanwhile waits for that move
// to end, so pages are sized from the cost per row measured on the previous ones to keep that
// wait this short. What a move costs besides its rows is not counted: every move pays it, with
// or without a resync.
const resyncMoveBudget = 10 * time.Millisecond

// resyncLiveBudget replaces resyncMoveBudget while live changes flow. Delivering a row costs
// the relay and the database several times what building it does: with pages of
// resyncMoveBudget every resyncLivePace the CE workload's TPS fell by up to a quarter on a
// 2-core machine; with these, a page every pace or two leaves the application most of it.
const resyncLiveBudget = 2 * time.Millisecond

// resyncLivePace is the least time between two pages while live changes flow (a move carried
// one within resyncLiveQuiet; the resync's own rows do not count): each page keeps the mover
// busy for a few statements besides its rows, and a live change committed meanwhile waits for
// them, so the mover stays free most of the time.
const resyncLivePace = 50 * time.Millisecond

// resyncLiveQuiet is how long after the last live change the resync's pages stop being paced:
// live changes that come in gaps longer than a move still flow, a trickle does not.
const resyncLiveQuiet = 5 * resyncLivePace

// resyncFullWait is when to look again after the window had no room for a page.
const resyncFullWait = RecheckSpan / 4

// resyncFirstPage is the first page of a session, before any cost was measured; pages are
// never smaller than resyncMinPage (each costs a few statements besides its rows).
const (
	resyncFirstPage = 32
	resyncMinPage   = 8
)

// resyncMinWait is the smallest pause worth scheduling under a request's rate limit (pages of
// at least this much time's worth of rows).
const resyncMinWait = 50 * time.Millisecond

// resyncer is the mover's view of the active resync request. Only the mover's goroutine uses it.
type resyncer struct {
	batch int
	log   *zap.Logger
	// none is set when no active request was found: the mover looks again only when asked (a
	// new request rings the doorbell, so does every reconnect of it, and every read of the
	// settings, on each sweep, tells whether one is pending or running).
	none     bool
	id       int64         // the active request (0: look it up)
	rate     int           // its rows-per-second cap (0: none)
	lim      *rate.Limiter // enforces rate
	perRow   time.Duration // what moving a resync row costs (0: not measured yet)
	rowCosts samples       // what moving a resync row cost lately
	empty    samples       // what moves that moved nothing cost lately
	lastN    int           // the size of the last page
	lastPage time.Time     // when the last page was queued
	lastLive time.Time     // when a move last carried a live change
	metrics  *metrics.Relay
	// queued holds the queue ids of rows this resync queued and no move has taken yet; a move
	// marks them, so the dispatcher sends them after live changes. A hint only: rows purged
	// before their move stay here until the set is reset, and after a restart the rows left
	// in pending or progress go as live ones.
	queued map[int64]struct{}
	// own holds the transactions of the latest steps. Each rings the doorbell for the rows it
	// queued, but committed before the step returned: the next move need not wait for it.
	own []uint32
}

// resyncOwnXids bounds own: a step's ring arrives within a move or two (never, when polling).
const resyncOwnXids = 16

// newResyncer returns the mover's resyncer.
func newResyncer(cfg Config) *resyncer {
	return &resyncer{batch: cfg.MoveBatch, log: cfg.Logger, queued: map[int64]struct{}{}, metrics: cfg.Metrics}
}

// tag marks the moved rows a resync queued, and learns from the move's duration what a row
// costs. A move that moved nothing measures what every move costs besides its rows (its
// statement, the fence, the round trip): that part a live change waits for with or without a
// resync, so only the rest, the cost of the rows, is charged to them.
func (s *resyncer) tag(rows []*row, took time.Duration) {
	if len(rows) == 0 {
		s.empty.add(took)
		return
	}
	n := 0
	for _, r := range rows {
		if _, ok := s.queued[r.id]; ok {
			r.resync = true
			delete(s.queued, r.id)
			n++
		}
	}
	if n < len(rows) {
		s.lastLive = time.Now()
	}
	if n > 0 {
		s.rowCosts.add(max(0, took-s.empty.median()) / time.Duration(len(rows)))
		s.perRow = s.rowCosts.median()
	}
}

// samples holds the latest durations measured, for their median: on a busy machine a
// statement now and then takes many times its usual time, which would swing an average (and
// the pages with it) for several pages.
type samples struct {
	d [8]time.Duration
	n int // how many were added; d holds the latest min(n, len(d))
}

func (s *samples) add(d time.Duration) {
	s.d[s.n%len(s.d)] = d
	s.n++
}

// median is the median of the samples held (the upper one of an even count; 0 when none).
func (s *samples) median() time.Duration {
	k := min(s.n, len(s.d))
	if k == 0 {
		return 0
	}
	c := slices.Clone(s.d[:k])
	slices.Sort(c)
	return c[k/2]
}

// pageSize is how many rows the next page may hold: what budget allows at the cost measured, at
// most twice the last page (a cost measured low by chance does not make one page hold up live
// changes for long), within room and the move batch.
func (s *resyncer) pageSize(room int, budget time.Duration) int {
	n := resyncFirstPage
	switch {
	case s.perRow > 0:
		n = int(budget / s.perRow)
	case s.lastN > 0:
		n = s.batch // rows measured free: the doubling below bounds the page
	}
	if s.lastN > 0 {
		n = min(n, 2*s.lastN)
	}
	return min(max(resyncMinPage, n), room, s.batch)
}

// step queues the next page of the active request, up to room rows, when the move that just ran
// found pending drained. The caller keeps room below the window's free space by what a move of
// live changes needs, so resync rows never keep live ones out of the window. It sets m.more when it queued rows (or the request has more to read)
// and m.wake when the request's rate limit says to come back later.
func (s *resyncer) step(ctx context.Context, store deliveryStore, m *moved, room int) error {
	now := time.Now()
	if s.none {
		return nil
	}
	if room <= 0 {
		// The window is nearly full: no move is due until it drains, so a running request
		// comes back later rather than stall until the next sweep.
		if s.id != 0 {
			m.wake = now.Add(resyncFullWait)
		}
		return nil
	}
	budget := resyncMoveBudget
	if now.Sub(s.lastLive) < resyncLiveQuiet {
		budget = resyncLiveBudget
		// Live changes flow: a page every resyncLivePace at most, queued after the live
		// changes this move carries reach the window (by the next move), unless moves keep
		// carrying some: then a page at least every two paces.
		switch since := now.Sub(s.lastPage); {
		case since < resyncLivePace:
			m.wake = s.lastPage.Add(resyncLivePace)
			return nil
		case since < 2*resyncLivePace && live(m.rows):
			m.wake = now
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if s.id == 0 {
		req, ok, err := store.ActiveResync(ctx)
		if err != nil {
			return err
		}
		if !ok {
			s.none = true
			s.metrics.ResyncRemaining.Set(0)
			return nil
		}
		s.adopt(req.id, req.rate)
	}
	n := s.pageSize(room, budget)
	if s.lim != nil {
		avail := int(s.lim.TokensAt(now))
		want := min(n, max(1, int(float64(s.rate)*resyncMinWait.Seconds())))
		if avail < want {
			m.wake = now.Add(time.Duration(float64(want-avail) / float64(s.rate) * float64(time.Second)))
			return nil
		}
		n = min(n, avail)
	}
	page, ok, err := store.ResyncStep(ctx, n)
	if err != nil {
		return fmt.Errorf("resync request %d: %w", s.id, err)
	}
	if !ok {
		s.id = 0 // cancelled or finished elsewhere: look again at once
		m.more = true
		return nil
	}
	id, queued, selected, estimated, r, state, ids := page.id, page.queued, page.selected, page.estimated, page.rate, page.state, page.ids
	s.lastPage, s.lastN = now, n
	if queued > 0 { // only inserts ring
		if len(s.own) == resyncOwnXids {
			s.own = slices.Delete(s.own, 0, 1)
		}
		s.own = append(s.own, page.xid)
	}
	if id != s.id || r != s.rate {
		s.adopt(id, r)
	}
	if s.lim != nil {
		s.lim.ReserveN(now, queued) // never beyond the tokens there were: n <= avail
	}
	if len(s.queued) > 4*s.batch {
		clear(s.queued) // rows purged before their move (customers deleted): forget them
	}
	for _, q := range ids {
		s.queued[q] = struct{}{}
	}
	s.metrics.ResyncQueued.Add(float64(queued))
	s.metrics.ResyncRemaining.Set(float64(max(0, estimated-selected)))
	switch state {
	case "done":
		s.log.Info("resync request done", zap.Int64("request", id), zap.Int64("keys", selected))
		s.id = 0
	case "failed", "cancelled":
		s.log.Warn("resync request stopped", zap.Int64("request", id), zap.String("state", state))
		s.id = 0
	}
	m.more = true // the page just queued, or the next request
	return nil
}

// others returns the transactions of xids (that rang the doorbell) other than the latest steps'.
func (s *resyncer) others(xids []uint32) []uint32 {
	if len(s.own) == 0 {
		return xids
	}
	out := make([]uint32, 0, len(xids))
	for _, x := range xids {
		if i := slices.Index(s.own, x); i >= 0 {
			s.own = slices.Delete(s.own, i, i+1)
			continue
		}
		out = append(out, x)
	}
	return out
}

// live tells whether rows holds a live change (a row no resync queued).
func live(rows []*row) bool {
	return slices.ContainsFunc(rows, func(r *row) bool { return !r.resync })
}

// adopt makes request id, capped at r rows per second (0: no cap), the active one.
func (s *resyncer) adopt(id int64, r int) {
	if id != s.id {
		s.log.Info("resync request running", zap.Int64("request", id), zap.Int("rate", r))
	}
	s.id, s.rate, s.lim = id, r, nil
	if r > 0 {
		s.lim = rate.NewLimiter(rate.Limit(r), max(1, min(r, s.batch)))
	}
}

// resyncWake makes the dispatcher ask for a move at the time a rate-limited resync may queue
// its next page (or sooner, when another wake-up is due first).
func (d *dispatcher) resyncWake(at time.Time) {
	if !at.IsZero() && (d.wakeAt.IsZero() || at.Before(d.wakeAt)) {
		d.wakeAt = at
	}
}
