// Package relay is the Data Sync job as a daemon: it delivers the progress queues first, then
// moves pending rows to progress in batches and POSTs each record to the receiver, in ID order
// per key, recording every failure on the row itself so a crash at any instant loses nothing.
package relay

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	expbackoff "github.com/cdc-relay/cdc-relay/internal/backoff"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// RecheckSpan bounds how long after a doorbell ring the relay waits for the ringing commits to
// become visible (data_sync_await_commit) before it moves pending rows. The walsender can decode
// a commit before the committing backend has made it visible to new snapshots; that window is
// microseconds, but a descheduled backend on a loaded machine can stretch it. After it, a quiet
// relay sends no statement until its next sweep.
const RecheckSpan = time.Second

// maxAwait bounds the ringing transactions the relay keeps waiting for between two moves.
const maxAwait = 4096

// configRecheck is when, after a data_sync_config change rang, the settings are read once more
// (the same window; settings change rarely, so a second read is simpler than a wait).
const configRecheck = 20 * time.Millisecond

// Poster sends one request body to the receiver. err is non-nil only when no usable response
// arrived (network, TLS, token endpoint) or for a redirect.
type Poster interface {
	Post(ctx context.Context, body []byte) (Response, error)
}

// PosterFactory builds a Poster for the given settings; the relay calls it at start and
// whenever the settings change, and calls the returned close function when it is replaced.
type PosterFactory func(ctx context.Context, s Settings) (Poster, func(), error)

// Doorbell wakes the relay: Queued rings after commits that queued something, ConfigChanged after
// changes to data_sync_config. cdc.Listener implements it; nil means polling only.
type Doorbell interface {
	Queued() <-chan struct{}
	ConfigChanged() <-chan struct{}
	// TakeQueued returns the ids of the committed transactions that rang Queued since the last
	// call, which the relay waits for to be visible before it moves pending rows, and the tables
	// they wrote: a ring that names only pending tables makes the relay move only those queues
	// ("" or any other table: every queue). Nothing at all: nothing new (the commits of the
	// ring were taken with an earlier one).
	TakeQueued() (xids []uint32, tables []string)
	// TakeResync reports whether one of those transactions inserted a resync request: the
	// relay then looks for it at once rather than at its next sweep.
	TakeResync() bool
	// TakeDeleted returns the customers whose DELETE row those transactions queued, each with
	// the highest such row id: the rows of these customers the window holds are re-checked
	// before they are sent, however long the DELETE row waits in pending.
	TakeDeleted() map[string]int64
}

// Relay is the delivery daemon. Create it with New and run it with Run.
type Relay struct {
	cfg      Config
	db       *pgxpool.Pool
	store    deliveryStore // the statements of every session, on db
	posters  PosterFactory
	doorbell Doorbell
	log      *zap.Logger
	leader   *Leader // one relay delivers at a time; the others wait as standby (leader.go)

	state   atomic.Value // State
	healthy atomic.Bool  // the current session delivered something or led for healthyAfter
}

// healthyAfter is how long a session must lead, without delivering, to count as recovered.
const healthyAfter = 10 * time.Second

// New checks the configuration and returns a Relay.
func New(cfg Config, db *pgxpool.Pool, posters PosterFactory, doorbell Doorbell) (*Relay, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRelay(nil)
	}
	r := &Relay{cfg: cfg, db: db, posters: posters, doorbell: doorbell, log: cfg.Logger}
	r.setState(PhaseStarting, "")
	if db != nil {
		r.store = NewStore(db)
		l, err := NewLeader(LeaderConfig{Lease: cfg.LeaderLease, Grace: cfg.LeaderGrace, Logger: cfg.Logger,
			OnStandby: func(holder string, since time.Time) {
				if holder == "" {
					r.setState(PhaseStandby, "standby: another relay is taking over")
					return
				}
				r.setState(PhaseStandby, fmt.Sprintf("standby: relay %s leads since %s", holder, since.Format(time.RFC3339)))
			}}, db.Config().ConnConfig)
		if err != nil {
			return nil, err
		}
		r.leader = l
	}
	return r, nil
}

// State is a one-line description of what the relay is doing, for /readyz and logs.
func (r *Relay) State() State { return r.state.Load().(State) }

// Run delivers until ctx is cancelled and returns nil then. A database failure ends the
// current session (memory is dropped; the rows stay in progress) and a new one starts after a
// backoff. It returns an error only for a fault found at start-up that a retry cannot fix.
func (r *Relay) Run(ctx context.Context) error {
	first := true
	failures := 0
	for {
		r.healthy.Store(false)
		err := r.session(ctx, first)
		if r.healthy.Load() {
			// The session recovered (it delivered, or led for a while): the next failure is a
			// new incident, not the continuation of an old one.
			failures = 0
		}
		if ctx.Err() != nil {
			r.setState(PhaseStopped, "")
			return nil
		}
		if first && (errors.Is(err, ErrSettings) || errors.Is(err, ErrConfig)) {
			return err
		}
		first = false
		failures++
		delay := expbackoff.Delay(failures, 100*time.Millisecond, 30*time.Second)
		r.setState(PhaseReconnecting, "reconnecting: "+err.Error())
		r.log.Warn("relay session ended; starting again", zap.Error(err), zap.Duration("after", delay))
		select {
		case <-ctx.Done():
			r.setState(PhaseStopped, "")
			return nil
		case <-time.After(delay):
		}
	}
}

// request is one POST: rows of one or more keys.
type request struct {
	rows  []*row
	keys  []*keyState
	probe bool // sent while the endpoint failed as a whole
}

// result is a finished request, reported by its goroutine to the dispatcher.
type result struct {
	req      *request
	outcome  outcome
	pressure bool
	resp     Response
	err      error
	dead     bool      // rows were moved to the dead-letter table
	next     time.Time // retry time when not dead
	dbErr    error     // recording the failure failed: the session must end
	gone     []*row    // rows found purged from progress (their customer was deleted): dropped unsent
	// endpointWide: the endpoint failed as a whole when this failure came in; it is not
	// counted against the records. epChanged: the endpoint state changed with this outcome.
	endpointWide, epChanged bool
	took                    time.Duration
}

// moved is what the mover reports: rows now in progress, whether more may wait, and the
// ringing transactions still invisible (to wait for again).
type moved struct {
	rows []*row
	// looked answers a moveReq with deletes set, and deletes are the customer DELETE rows it
	// found waiting in pending.
	looked  bool
	deletes []pendingDelete
	more    bool
	await   []uint32
	wake    time.Time // a rate-limited resync asks for a move then (resync.go)
	err     error
	seq     uint64 // the moveReq's seq
}

// session runs one leadership term on one set of connections.
func (r *Relay) session(ctx context.Context, first bool) error {
	lock, err := r.db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer lock.Release()
	own := NewStore(lock)
	settings, err := own.Settings(ctx)
	if err != nil {
		return err
	}
	if first && settings.Enabled {
		if _, _, err := r.buildPoster(ctx, settings); err != nil {
			return err
		}
	}
	term, err := r.leader.Acquire(ctx)
	if err != nil {
		return err
	}
	defer term.Release(context.WithoutCancel(ctx)) // after d.run: no request of the term is left
	r.log.Info("relay delivering", zap.Bool("enabled", settings.Enabled), zap.Int("concurrency", r.cfg.Concurrency), zap.Int("max_in_flight", r.cfg.MaxInFlight()),
		zap.Int("messages_per_request", r.cfg.MessagesPerRequest), zap.String("on_failure", r.cfg.OnFailure))
	d := &dispatcher{r: r, ctx: term.Context(), own: own, settings: settings, term: term}
	healthy := time.AfterFunc(healthyAfter, func() { r.healthy.Store(true) })
	defer healthy.Stop()
	err = d.run()
	if lost := term.Err(); lost != nil {
		return lost
	}
	return err
}

// buildPoster checks settings and builds a Poster for them.
func (r *Relay) buildPoster(ctx context.Context, s Settings) (Poster, func(), error) {
	p, closeFn, err := r.posters(ctx, s)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrSettings, err)
	}
	return p, closeFn, nil
}

// dispatcher owns the in-memory window of one session. Only its goroutine touches the window;
// requests, the mover and the acknowledger report back over channels.
type dispatcher struct {
	r        *Relay
	ctx      context.Context // ends when the relay stops or the term is lost
	own      *Store          // statements on the session's own connection (settings)
	settings Settings
	term     *Term
	poster   Poster
	closeP   func()
	posterOK bool

	win      *window
	lim      *concurrencyLimit
	rate     *rate.Limiter
	inflight int
	paused   time.Time // no new requests before this (stop mode, Retry-After)

	results  chan result
	moveReq  chan moveReq
	moveResp chan moved
	moving   bool
	pending  bool // pending may hold rows: ask the mover
	// look are the queue families (bit idx) the next move looks at: those a ring named, or
	// all (lookAll) when pending was set for any other reason.
	look uint8
	// expandDue asks the next move to expand sets of customers even though the settings do not
	// write sets now: sets written before a settings change (looked for at start, on every
	// sweep and after a settings change).
	expandDue bool
	// resyncDue asks the next move to look for a resync request now (the doorbell said one was
	// inserted, or it reconnected, or the settings read saw one pending or running).
	resyncDue bool
	// await holds the transactions that rang the doorbell since the last move: the next move
	// waits for them to be visible (the walsender can decode a commit an instant before it is).
	await []uint32
	// recheckConfig is when to read data_sync_config once more after a change rang.
	recheckConfig time.Time
	// wakeAt is when to ask the mover again although nothing rang (a rate-limited resync).
	wakeAt time.Time
	acks   *ackQueue
	// held maps keys dead-lettered in this session to their dead letter: later rows of the key
	// that a move running meanwhile brought in are held behind it instead of being sent.
	held    map[string]heldKey
	moveSeq uint64 // seq of the last moveReq sent
	// deletesAt is when the window, too full to move, may next look for customer DELETE rows
	// waiting in pending (see lookForDeletes); deletesDue: a look waits for it.
	deletesAt  time.Time
	deletesDue bool
	// rowEstimate is the memory a moved row is assumed to take (see fill).
	rowEstimate int64
	ackDone     chan error
	// gone is closed when the dispatcher stops listening: a request goroutine reporting after
	// that (the stop deadline passed) drops its result instead of waiting for a reader.
	gone chan struct{}

	// ep tells endpoint-wide failures from record failures (request goroutines report to it);
	// failing is the dispatcher's view of it: one probe at a time, paced by probes failed.
	ep       *endpointHealth
	stateRow *relayRow
	failing  endpointState
	probes   int
}

// run is one session's loop: it starts the requests the window and the limits allow, runs the
// wake-ups that are due, and handles one event at a time (a finished request, a move, the
// doorbell, the sweep, a timer), until the session ends; then it stops.
func (d *dispatcher) run() error {
	d.setUp()
	defer close(d.gone)
	defer func() {
		if d.closeP != nil {
			d.closeP()
		}
	}()
	// Requests run under their own context: a stop lets them finish within ShutdownTimeout.
	postCtx, cancelPosts := context.WithCancel(context.WithoutCancel(d.ctx))
	defer cancelPosts()
	// A lost leadership cancels every request at once: a successor may be about to send.
	defer context.AfterFunc(d.term.Lost(), cancelPosts)()
	var wg sync.WaitGroup
	stopMover := d.startWorkers(postCtx, &wg)
	w := d.newWakeUps()
	defer w.stop()
	d.pending, d.look = true, lookAll // (expandDue was set by applySettings in setUp)
	d.r.cfg.Metrics.WakeUps.WithLabelValues("start").Inc()

	var err error
loop:
	for err == nil {
		now := time.Now()
		next := d.startRequests(postCtx, now)
		var again bool
		if next, again, err = d.runDue(now, next); again || err != nil {
			continue
		}
		w.arm(next)
		select {
		case <-d.ctx.Done():
			break loop
		case res := <-d.results:
			err = d.apply(res)
		case m := <-d.moveResp:
			err = d.takeMoved(m)
		case <-w.queued: // the doorbell counts its own wake-ups
			d.doorbellRang()
		case <-w.configChanged:
			err = d.settingsChanged()
		case <-w.sweep.C:
			d.r.cfg.Metrics.WakeUps.WithLabelValues("sweep").Inc()
			d.pending, d.look, d.expandDue = true, lookAll, true
			err = d.reloadSettings()
		case <-w.timer.C:
			d.r.cfg.Metrics.WakeUps.WithLabelValues("retry").Inc()
		case <-d.acks.freed: // room in the window again: fill at the top of the loop
		case ackErr := <-d.ackDone: // only on a cancelled context: the acknowledger retries for ever
			d.ackDone <- ackErr
			err = fmt.Errorf("acknowledging delivered rows: %w", ackErr)
		}
	}
	stopMover()
	return d.stop(err, cancelPosts, &wg)
}

// setUp makes the session's window, limits, channels and endpoint state, and adopts its
// settings (building the poster).
func (d *dispatcher) setUp() {
	cfg := d.r.cfg
	d.win = newWindow(cfg.Coalesce)
	d.held = map[string]heldKey{}
	d.rowEstimate = int64(min(cfg.MaxPayloadBytes, firstRowEstimate)) + rowOverhead
	d.ep = newEndpointHealth(cfg.EndpointFailureKeys)
	d.stateRow = newRelayRow()
	d.stateRow.setEndpoint(endpointState{}) // a new session starts with the endpoint presumed healthy
	setEndpointGauge(cfg.Metrics, endpointState{})
	d.lim = newConcurrencyLimit(cfg.Concurrency, cfg.MaxConcurrency)
	if cfg.RateLimit > 0 {
		d.rate = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(1, cfg.MessagesPerRequest))
	}
	d.results = make(chan result, cfg.MaxInFlight())
	d.moveReq = make(chan moveReq, 1)
	d.moveResp = make(chan moved, 1)
	d.acks = newAckQueue(d.r.cfg.Window)
	d.ackDone = make(chan error, 1)
	d.gone = make(chan struct{})
	d.applySettings(d.settings, true)
}

// startWorkers starts the session's goroutines, counted by wg: the mover, until stopMover is
// called (or the session's context ends), and the endpoint row's writer and the acknowledger,
// until postCtx ends.
func (d *dispatcher) startWorkers(postCtx context.Context, wg *sync.WaitGroup) (stopMover context.CancelFunc) {
	moverCtx, stopMover := context.WithCancel(d.ctx)
	wg.Add(3)
	go func() { defer wg.Done(); d.mover(moverCtx) }()
	go func() { defer wg.Done(); d.stateRow.run(postCtx, d.r.store, d.r.log) }()
	go func() { defer wg.Done(); d.ackDone <- d.acknowledger(postCtx) }() // ackDone has room for it
	return stopMover
}

// wakeUps are what wakes the dispatcher besides its workers' reports: the sweep, the timer set
// for the next thing due, and the doorbell (nil channels without one: they never fire).
type wakeUps struct {
	sweep                 *time.Ticker
	timer                 *time.Timer
	queued, configChanged <-chan struct{}
}

func (d *dispatcher) newWakeUps() *wakeUps {
	w := &wakeUps{sweep: time.NewTicker(d.r.cfg.SweepInterval), timer: time.NewTimer(time.Hour)}
	if d.r.doorbell != nil {
		w.queued, w.configChanged = d.r.doorbell.Queued(), d.r.doorbell.ConfigChanged()
	}
	return w
}

// arm sets the timer for next (zero: leaves it as it is).
func (w *wakeUps) arm(next time.Time) {
	if !next.IsZero() {
		w.timer.Reset(max(time.Until(next), time.Millisecond))
	}
}

func (w *wakeUps) stop() {
	w.sweep.Stop()
	w.timer.Stop()
}

// startRequests makes the retries due at now ready, asks the mover for rows when there is room,
// and starts the requests the limits allow. It returns when the next retry is due (zero: none).
func (d *dispatcher) startRequests(ctx context.Context, now time.Time) (next time.Time) {
	next = d.win.promote(now)
	d.fill()
	d.dispatch(ctx, now)
	return next
}

// runDue runs the dispatcher's own wake-ups due at now (a rate-limited resync's next move, a
// look for pending deletes put off, the second read of changed settings) and returns when to
// wake up next: the earliest of next (the next retry), the end of a pause and the wake-ups not
// yet due. again: the settings were read again, and the loop starts over before it waits.
func (d *dispatcher) runDue(now, next time.Time) (wake time.Time, again bool, err error) {
	if d.paused.After(now) && (next.IsZero() || d.paused.Before(next)) {
		next = d.paused
	}
	if !d.wakeAt.IsZero() {
		if !d.wakeAt.After(now) {
			d.wakeAt, d.pending, d.look = time.Time{}, true, lookAll
			d.fill()
		} else if next.IsZero() || d.wakeAt.Before(next) {
			next = d.wakeAt
		}
	}
	if d.deletesDue {
		if !d.deletesAt.After(now) {
			d.deletesDue = false
			d.fill()
		} else if next.IsZero() || d.deletesAt.Before(next) {
			next = d.deletesAt
		}
	}
	if !d.recheckConfig.IsZero() {
		if !d.recheckConfig.After(now) {
			d.recheckConfig = time.Time{}
			return next, true, d.reloadSettings()
		} else if next.IsZero() || d.recheckConfig.Before(next) {
			next = d.recheckConfig
		}
	}
	return next, false, nil
}

// takeMoved puts what the mover reports into the window and notes whether pending may hold
// more, the commits still to wait for, and when a rate-limited resync asks for a move.
func (d *dispatcher) takeMoved(m moved) error {
	d.moving = false
	if m.err != nil {
		return m.err
	}
	if m.looked {
		now := time.Now()
		ids := make([]int64, len(m.deletes))
		for i, del := range m.deletes {
			d.win.markDeleted(del, now)
			ids[i] = del.id
		}
		if t := d.r.cfg.Trace; t != nil {
			t(TraceEvent{Stage: TraceDeletes, At: now, IDs: ids})
		}
		return nil
	}
	if len(m.rows) > 0 {
		var largest int64
		for _, r := range m.rows {
			largest = max(largest, rowBytes(r))
		}
		d.rowEstimate = largest
	}
	if t := d.r.cfg.Trace; t != nil && len(m.rows) > 0 {
		t(TraceEvent{Stage: TraceAdmit, At: time.Now(), IDs: rowIDs(m.rows)})
	}
	if err := d.admitAll(m, time.Now()); err != nil {
		return err
	}
	if m.more || len(m.await) > 0 {
		d.pending, d.look = true, lookAll
	}
	d.await = append(d.await, m.await...)
	d.resyncWake(m.wake)
	return nil
}

// doorbellRang notes that pending holds rows in the queues the ring named, and the commits
// that queued them (to wait for before the next move).
func (d *dispatcher) doorbellRang() {
	resync := d.r.doorbell.TakeResync()
	now := time.Now()
	for key, id := range d.r.doorbell.TakeDeleted() {
		d.win.markDeleted(pendingDelete{id: id, key: key}, now)
	}
	rang, tables := d.r.doorbell.TakeQueued()
	if len(rang) == 0 && len(tables) == 0 && !resync {
		return // a ring for commits an earlier ring's take returned already
	}
	d.resyncDue = d.resyncDue || resync
	d.pending, d.look = true, d.look|queuesOf(tables)
	if t := d.r.cfg.Trace; t != nil {
		t(TraceEvent{Stage: TraceRing, At: time.Now(), Xids: rang})
	}
	d.await = append(d.await, rang...)
	if len(d.await) > maxAwait { // paused for long: the oldest are visible by now
		d.await = append(d.await[:0], d.await[len(d.await)-maxAwait/2:]...)
	}
}

// settingsChanged reads the settings now, and once more a moment later (configRecheck): the
// change may not be visible yet when the doorbell rings.
func (d *dispatcher) settingsChanged() error {
	if d.recheckConfig.IsZero() {
		d.recheckConfig = time.Now().Add(configRecheck)
	}
	// The doorbell also rings this after every (re)connect: a resync request inserted while
	// it was away rang nothing, so look for one too.
	d.pending, d.look, d.resyncDue = true, lookAll, true
	return d.reloadSettings()
}

// stop ends a session within ShutdownTimeout whatever the database and the receiver do: it lets
// requests in flight finish and flushes acknowledgements until the deadline, then cancels them
// (the rows stay in progress and are sent again by the next session: at least once).
func (d *dispatcher) stop(sessionErr error, cancelPosts context.CancelFunc, wg *sync.WaitGroup) error {
	d.r.setState(PhaseStopping, "")
	deadline := time.NewTimer(d.r.cfg.ShutdownTimeout)
	defer deadline.Stop()
	expired := false
	for d.inflight > 0 && !expired {
		select {
		case res := <-d.results:
			// Applied even after a failure: a delivered row is still acknowledged.
			if err := d.apply(res); err != nil && sessionErr == nil {
				sessionErr = err
			}
		case <-deadline.C:
			d.r.log.Warn("requests still in flight at the shutdown deadline; cancelling them (their rows stay in progress)",
				zap.Int("requests", d.inflight), zap.Duration("shutdown_timeout", d.r.cfg.ShutdownTimeout))
			expired = true
		}
	}
	d.acks.close()
	if expired {
		cancelPosts()
	}
	var ackErr error
	select {
	case ackErr = <-d.ackDone:
	case <-deadline.C:
		cancelPosts()
		ackErr = <-d.ackDone // the acknowledger returns at once when cancelled
	}
	cancelPosts()
	wg.Wait()
	if ackErr != nil && sessionErr == nil && d.ctx.Err() == nil {
		sessionErr = fmt.Errorf("acknowledging delivered rows: %w", ackErr)
	}
	if sessionErr == nil {
		sessionErr = d.ctx.Err()
	}
	return sessionErr
}

// applySettings adopts new Data Sync settings, rebuilding the poster when they changed.
func (d *dispatcher) applySettings(s Settings, force bool) {
	changed := force || s != d.settings
	d.settings = s
	if !changed {
		return
	}
	if d.closeP != nil {
		d.closeP()
		d.poster, d.closeP = nil, nil
	}
	d.posterOK = false
	d.expandDue = true
	if !s.Enabled {
		d.r.setState(PhaseDisabled, "")
		d.r.log.Info("Data Sync is disabled; delivery paused (rows stay queued)")
		return
	}
	p, closeFn, err := d.r.buildPoster(d.ctx, s)
	if err != nil {
		d.r.setState(PhasePaused, "paused: "+err.Error())
		d.r.log.Error("cannot deliver with the current Data Sync settings; delivery paused until they change", zap.Error(err))
		return
	}
	d.poster, d.closeP, d.posterOK = p, closeFn, true
	d.pending, d.look = true, lookAll
	if d.ep.reset() || d.failing.failing {
		d.endpointChanged("the Data Sync settings changed")
	}
	d.r.setState(PhaseDelivering, "")
}

func (d *dispatcher) reloadSettings() error {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	s, resync, err := d.own.SettingsAndResync(ctx)
	if err != nil {
		if d.ctx.Err() != nil {
			return nil
		}
		return err
	}
	// A request whose ring was lost is found here, at the latest on the next sweep; the mover
	// does not look for one by itself.
	d.resyncDue = d.resyncDue || resync
	if s != d.settings {
		d.r.log.Info("Data Sync settings changed", zap.Bool("enabled", s.Enabled), zap.String("api_url", s.APIURL),
			zap.String("token_url", s.TokenURL), zap.Bool("snapshot_at_move", s.SnapshotAtMove))
	}
	d.applySettings(s, false)
	return nil
}

// fill asks the mover for more rows when there is room and pending may hold some.
func (d *dispatcher) fill() {
	if d.moving || !d.pending || !d.posterOK {
		return
	}
	// Rows delivered but not yet acknowledged are still in progress: they count against the
	// window, so acknowledgements that keep failing stop the moves instead of growing memory.
	room := d.r.cfg.Window - d.win.rows - d.acks.len()
	if room < min(d.r.cfg.MoveBatch, d.r.cfg.Window/2) {
		d.lookForDeletes()
		return
	}
	// The window is bounded in bytes too: a move asks for as many rows as the room left
	// holds at the size of the largest row of the last move (firstRowEstimate before the
	// first one), at least one.
	free := d.r.cfg.WindowBytes - d.win.bytes
	if free <= 0 {
		d.lookForDeletes()
		return
	}
	room = int(min(int64(room), max(1, free/d.rowEstimate)))
	select {
	case d.moveReq <- moveReq{room: room, expand: d.expandDue || d.settings.expandSets(), await: d.await,
		look: d.look, resync: d.resyncDue, seq: d.moveSeq + 1}:
		d.moveSeq++
		d.moving = true
		d.pending, d.look, d.expandDue, d.resyncDue, d.await = false, 0, false, false, nil
	default:
	}
}

// deletesEvery paces the looks for customer DELETE rows while the window is full: a customer
// deleted then is known to the relay this long after its delete committed, at most (plus
// a statement's time), however long its DELETE waits in pending.
const deletesEvery = 50 * time.Millisecond

// lookForDeletes asks the mover for the customer DELETE rows waiting in pending, when the
// window is too full to move them. A delete purged its customer's earlier rows from the queues,
// but the rows already in the window stay there until sent: when the DELETE is moved, window.add
// marks them to be re-checked before they are sent; while it waits in pending behind a backlog,
// this look does.
func (d *dispatcher) lookForDeletes() {
	now := time.Now()
	if now.Before(d.deletesAt) {
		d.deletesDue = true // runDue looks then, when nothing else made room meanwhile
		return
	}
	select {
	case d.moveReq <- moveReq{deletes: true}:
		d.moving = true
		d.deletesAt, d.deletesDue = now.Add(deletesEvery), false
	default:
	}
}

// moveReq asks the mover for up to room rows; expand asks it to expand sets of customers first;
// await names transactions to wait for (visible to new snapshots) before moving; look names
// the queue families to move (bit idx; the others are left for a later move).
type moveReq struct {
	room   int
	expand bool
	await  []uint32
	look   uint8
	resync bool   // the doorbell or a settings read says a resync request is waiting: look for it now
	seq    uint64 // numbers the requests, for heldKey
	// deletes asks for nothing but the customer DELETE rows waiting in pending (moved.deletes).
	deletes bool
}

// lookAll looks at every queue family.
const lookAll uint8 = 1<<2 - 1 // a bit for each of queues

// queuesOf returns the queue families whose pending tables are all of tables, or lookAll when
// tables name anything else (another table, "" for tables the stream did not name, or none).
func queuesOf(tables []string) uint8 {
	var look uint8
	for _, t := range tables {
		i := slices.IndexFunc(queues, func(q *queue) bool { return q.pending == t })
		if i < 0 {
			return lookAll
		}
		look |= 1 << i
	}
	if look == 0 {
		return lookAll
	}
	return look
}

// mover loads progress first (rows left by an earlier run), then moves pending rows to progress.
func (d *dispatcher) mover(ctx context.Context) {
	cursor := map[*queue]int64{}
	loaded := map[*queue]bool{}
	keepOrder := !d.r.cfg.SkipDeadLetters
	expand := false // sets asked for and not yet expanded (progress is loaded first)
	resync := newResyncer(d.r.cfg)
	var deletesAfter int64 // where the next look for DELETE rows starts (pendingDeletes)
	for {
		var req moveReq
		select {
		case <-ctx.Done():
			return
		case req = <-d.moveReq:
		}
		if req.deletes {
			m := moved{looked: true}
			m.deletes, deletesAfter, m.err = d.pendingDeletes(ctx, deletesAfter)
			select {
			case d.moveResp <- m:
				continue
			case <-ctx.Done():
				return
			}
		}
		room := req.room
		expand = expand || req.expand
		if req.resync {
			resync.none = false
		}
		m := moved{seq: req.seq}
		if t := d.r.cfg.Trace; t != nil {
			t(TraceEvent{Stage: TraceTake, At: time.Now(), Xids: req.await})
		}
		// The transactions that rang are waited for in the first move's round trip, just
		// before its statement (AwaitAndMove); when no move runs, they are handed back, to wait
		// for with the next request's.
		await := resync.others(req.await)
		for _, q := range queues {
			if m.err != nil {
				break
			}
			if loaded[q] && req.look&(1<<q.idx) == 0 {
				continue // no ring named it: nothing new there since the last move that looked
			}
			if room <= 0 {
				m.more = true
				break
			}
			n := min(room, d.r.cfg.MoveBatch)
			opCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
			var rows []*row
			var err error
			if !loaded[q] {
				if cursor[q] == 0 && keepOrder {
					err = d.holdBehind(opCtx, q)
				}
				if err == nil {
					rows, err = d.r.store.Load(opCtx, q, cursor[q], n)
				}
				if err == nil {
					if len(rows) < n {
						loaded[q] = true
					}
					if len(rows) > 0 {
						cursor[q] = rows[len(rows)-1].id
					}
					m.more = true // pending still to be moved after progress
				}
			} else {
				began := time.Now()
				if expand {
					// The sets the ringing transactions wrote are expanded once they are
					// visible; those still invisible are waited for again by the move.
					await, err = d.r.store.ExpandSets(opCtx, q, await)
				}
				sent := time.Now()
				if err == nil && len(await) > 0 {
					rows, m.await, err = d.r.store.AwaitAndMove(opCtx, await, q, n, keepOrder, d.term)
					await = nil
				} else if err == nil {
					rows, err = d.r.store.Move(opCtx, q, n, keepOrder, d.term)
				}
				resync.tag(rows, time.Since(began))
				if t := d.r.cfg.Trace; t != nil && err == nil {
					t(TraceEvent{Stage: TraceMove, At: time.Now(), Began: sent, IDs: rowIDs(rows)})
				}
				if err == nil && q.expandSQL != "" {
					expand = false
				}
				if err == nil && len(rows) == n {
					m.more = true
				}
			}
			cancel()
			if err != nil {
				m.err = err
				break
			}
			prepare(rows, d.r.cfg.MaxPayloadBytes)
			// A retry time stored by an earlier run (a Retry-After, or a backoff under other
			// settings) waits at most BackoffMax from now.
			limit := time.Now().Add(d.r.cfg.BackoffMax)
			for _, r := range rows {
				r.next = minTime(r.next, limit)
			}
			m.rows = append(m.rows, rows...)
			room -= len(rows)
		}
		if await != nil { // no move ran
			m.await = append(m.await, await...)
		}
		if m.err == nil && !m.more { // pending drained: room for a page of a resync request
			m.err = resync.step(ctx, d.r.store, &m, room-min(d.r.cfg.MoveBatch, d.r.cfg.Window/2))
		}
		select {
		case d.moveResp <- m:
		case <-ctx.Done():
			return
		}
	}
}

// pendingDeletesPage bounds the DELETE rows one look returns.
const pendingDeletesPage = 1000

// pendingDeletes returns a page of the customer DELETE rows waiting in pending after the id
// after, and where the next page starts: after the last row returned, or from the first again
// when this page was the last (a DELETE whose transaction took an id below the cursor and
// committed later is found on the next pass).
func (d *dispatcher) pendingDeletes(ctx context.Context, after int64) ([]pendingDelete, int64, error) {
	opCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	dels, err := d.r.store.PendingDeletes(opCtx, after, pendingDeletesPage)
	if err != nil {
		return nil, after, err
	}
	if len(dels) < pendingDeletesPage {
		return dels, 0, nil
	}
	return dels, dels[len(dels)-1].id, nil
}

// firstRowEstimate is the payload size a session's first move assumes per row: generous for
// CE's snapshots of a few KiB, so the first move is a full batch with the default settings.
const firstRowEstimate = 64 << 10

// heldKey is a key dead-lettered in this session: behind is its dead letter, and seq the last
// move that may have run before the dead letter committed. A later move finds the dead letter
// in the table itself (and does not hold rows a requeue brought back after it).
type heldKey struct {
	behind int64
	seq    uint64
}

// admitAll puts moved or loaded rows into the window: a row that can never be sent is
// dead-lettered, and a row of a key dead-lettered meanwhile is held behind it.
func (d *dispatcher) admitAll(m moved, now time.Time) error {
	var hold []*row
	for _, r := range m.rows {
		if h, ok := d.held[keyName(r)]; ok && m.seq <= h.seq && r.id > h.behind {
			hold = append(hold, r)
			continue
		}
		hold = append(hold, d.admit(r, m.seq, now)...)
	}
	err := d.hold(hold)
	for name, h := range d.held {
		if h.seq <= m.seq {
			delete(d.held, name) // later moves see the dead letter themselves
		}
	}
	return err
}

// admit checks a row and puts it in the window; a row that can never be sent is dead-lettered
// (it returns rows of its key then dropped from memory, to hold behind it).
func (d *dispatcher) admit(r *row, seq uint64, now time.Time) []*row {
	if err := r.bad; err != nil {
		d.r.log.Warn("queue row cannot be sent; moved to the dead-letter table", zap.String("queue", r.q.name),
			zap.Int64("id", r.id), zap.Error(err))
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		defer cancel()
		if dbErr := d.deadLetter(ctx, []*row{r}, failure{msg: err.Error()}); dbErr != nil {
			d.r.log.Error("dead-lettering a bad row failed; it stays in progress", zap.Int64("id", r.id), zap.Error(dbErr))
			return nil
		}
		return d.parked([]*row{r}, seq)
	}
	if d.paused.After(now) {
		r.recheck = true // moved during a pause: it may wait long before it is sent
	}
	d.win.add(r, now)
	if d.win.saved > 0 {
		d.r.cfg.Metrics.Coalesced.Add(float64(d.win.saved))
		d.win.saved = 0
	}
	return nil
}

// parked notes rows just dead-lettered: unless SkipDeadLetters, the later rows of their keys
// held in memory leave the window unsent, and so will those that moves up to seq bring in. It
// returns the rows it dropped: the dead-letter statement held them if they were in progress
// when it ran, and hold moves any that arrived there since (a move that committed meanwhile).
func (d *dispatcher) parked(rows []*row, seq uint64) []*row {
	if d.r.cfg.SkipDeadLetters {
		return nil
	}
	var later []*row
	for _, r := range rows {
		if r.keyNull {
			continue
		}
		name := keyName(r)
		h, ok := d.held[name]
		if !ok || r.id < h.behind {
			h.behind = r.id
		}
		h.seq = max(h.seq, seq)
		d.held[name] = h
		if k := d.win.keys[name]; k != nil {
			later = append(later, d.win.dropAfter(k, h.behind)...)
		}
	}
	return later
}

// hold moves rows of keys dead-lettered in this session from progress to the dead-letter table
// (reason held), never sending them. Rows already held are skipped by the statement.
func (d *dispatcher) hold(rows []*row) error {
	if len(rows) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	var ids, behind [2][]int64
	for _, r := range rows {
		ids[r.q.idx] = append(append(ids[r.q.idx], r.id), r.absorbed...)
		for range 1 + len(r.absorbed) {
			behind[r.q.idx] = append(behind[r.q.idx], d.held[keyName(r)].behind)
		}
	}
	for i, q := range queues {
		if len(ids[i]) == 0 {
			continue
		}
		n, err := d.r.store.Hold(ctx, q, ids[i], behind[i], d.term)
		if err != nil {
			return err
		}
		d.r.cfg.Metrics.DeadLetters.WithLabelValues("held").Add(float64(n))
	}
	return nil
}

// holdBehind holds the progress rows of q whose key has a dead letter (see holdBehindSQL): at
// the start of a session, before progress is loaded.
func (d *dispatcher) holdBehind(ctx context.Context, q *queue) error {
	n, err := d.r.store.HoldBehind(ctx, q, d.term)
	if err != nil {
		return err
	}
	if n > 0 {
		d.r.cfg.Metrics.DeadLetters.WithLabelValues("held").Add(float64(n))
	}
	return nil
}

// prepare compacts each row's JSON and checks the row (checkRow), in parallel, off the dispatcher's
// goroutine: the strict payload check is the relay's largest CPU cost per message. The compact
// form is what travels, as in the appendix's samples (PostgreSQL's JSON builders put spaces
// around ':' and after ',').
// A payload over maxPayload bytes (compacted) is marked bad and its bytes let go at once.
func prepare(rows []*row, maxPayload int) {
	workers := min(runtime.GOMAXPROCS(0), (len(rows)+63)/64)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(rows); i += workers {
				r := rows[i]
				if r.action == mapping.ActionDelete {
					r.payload = nil // a DELETE carries its key; whatever JSON the row has is never sent
				}
				if r.payload != nil {
					r.payload = mapping.Compact(r.payload)
					if len(r.payload) > maxPayload {
						r.bad = fmt.Errorf("%w: JSON_OBJECT is %d bytes, over the maximum of %d (--max-payload-bytes): raise the flag if the receiver accepts such messages, then requeue",
							ErrBadRecord, len(r.payload), maxPayload)
						r.payload = nil
						continue
					}
				}
				r.bad = checkRow(r)
			}
		}()
	}
	wg.Wait()
}

// checkRow finds rows that can never be delivered as they are.
func checkRow(r *row) error {
	if r.keyNull {
		return fmt.Errorf("%w: UNIQUE_ID is null: set it to the customer or retail transaction id", ErrBadRecord)
	}
	if _, _, err := mapping.Lookup(r.objName, r.action); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	payload := r.payload
	if r.action == mapping.ActionDelete {
		payload = []byte(r.key)
	} else if payload == nil {
		return fmt.Errorf("%w: JSON_OBJECT is null for a %s %s", ErrBadRecord, r.objName, r.action)
	}
	if r.captured && payload != nil {
		return nil // our own triggers' JSON: its schema is checked by the capture tests
	}
	if err := mapping.CheckPayload(r.objName, r.action, r.key, payload); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	return nil
}

// dispatch starts requests while the concurrency limit, the pause and the rate allow.
func (d *dispatcher) dispatch(ctx context.Context, now time.Time) {
	if !d.posterOK || d.paused.After(now) || d.ctx.Err() != nil || !d.term.Valid(now) {
		return
	}
	d.r.cfg.Metrics.Concurrency.Set(float64(d.lim.limit))
	d.stateRow.setConcurrency(d.lim.limit, d.lim.max, d.lim.adaptive)
	limit := d.lim.limit
	if d.failing.failing {
		limit = 1 // the endpoint fails as a whole: one probe at a time
	}
	for d.inflight < limit {
		req := d.win.take(d.r.cfg.MessagesPerRequest, now)
		if req == nil {
			return
		}
		req.probe = d.failing.failing
		d.inflight++
		d.lim.sending(d.inflight)
		go d.send(ctx, d.poster, req)
	}
}

// send performs one request and records a failure on its rows before reporting.
func (d *dispatcher) send(ctx context.Context, p Poster, req *request) {
	gone, err := d.checkRetry(ctx, req)
	if err != nil || len(req.rows) == 0 {
		d.report(result{req: req, outcome: retryable, gone: gone, dbErr: err})
		return
	}
	msgs := make([]mapping.Message, len(req.rows))
	for i, r := range req.rows {
		typ, act, _ := mapping.Lookup(r.objName, r.action)
		payload := string(r.payload)
		if r.action == mapping.ActionDelete {
			payload = r.key
		}
		msgs[i] = mapping.Message{Action: act, Payload: payload, Type: typ, UniqueID: strconv.FormatInt(r.id, 10)}
	}
	body := mapping.AppendEnvelope(make([]byte, 0, 256+len(msgs)*512), msgs)
	if d.rate != nil {
		if err := d.rate.WaitN(ctx, len(req.rows)); err != nil {
			d.report(result{req: req, outcome: retryable, err: err, next: time.Now()})
			return
		}
	}
	start := time.Now()
	resp, err := p.Post(ctx, body)
	res := result{req: req, resp: resp, err: err, took: time.Since(start), gone: gone}
	if t := d.r.cfg.Trace; t != nil {
		t(TraceEvent{Stage: TracePost, At: start.Add(res.took), Began: start, IDs: rowIDs(req.rows)})
	}
	res.outcome, res.pressure = classify(resp, err, d.r.cfg.Delivered)
	if res.outcome == delivered {
		res.epChanged = d.ep.delivered()
	} else {
		res.endpointWide, res.epChanged = d.ep.failed(req.keys[0].name, endpointSignature(resp, err), describe(resp, err), res.pressure, start)
		res.dbErr = d.recordFailure(ctx, &res)
	}
	d.report(res)
}

// checkRetry makes sure the rows of a retry still exist before they are sent again: a customer's
// delete purges its queued rows (progress included) and queues a DELETE, and a row the relay
// held in memory across a failure must not carry the deleted customer's data to the receiver
// afterwards. One statement per queue family (it also stamps last_attempt_at); the rows it
// does not find leave the request and are returned, never sent nor acknowledged.
//
// A first send right after the move is not re-checked: the move read the row an instant
// earlier, so the residual window is a delete committing between the move (or this check) and
// the POST. Closing it would need a row lock held across the HTTP request, which would make
// the CE application's deletes wait on the receiver.
func (d *dispatcher) checkRetry(ctx context.Context, req *request) (gone []*row, err error) {
	if !slices.ContainsFunc(req.rows, func(r *row) bool { return r.attempts > 0 || r.recheck }) {
		return nil, nil
	}
	dbCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	found := map[int64]bool{}
	for i, q := range queues {
		var ids []int64
		for _, r := range req.rows {
			if r.q.idx == i {
				ids = append(ids, r.id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		present, err := d.r.store.Recheck(dbCtx, q, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range present {
			found[id] = true
		}
	}
	return req.splitGone(found), nil
}

// splitGone removes from the request the rows whose id is not in found and returns them.
func (req *request) splitGone(found map[int64]bool) (gone []*row) {
	kept := req.rows[:0]
	for _, r := range req.rows {
		if found[r.id] {
			kept = append(kept, r)
		} else {
			gone = append(gone, r)
		}
	}
	clear(req.rows[len(kept):])
	req.rows = kept
	return gone
}

// report hands a finished request to the dispatcher. results has room for every request in
// flight, so this never waits while the dispatcher runs; once it has stopped listening (the
// stop deadline passed) the result is dropped: its rows stay in progress for the next session.
func (d *dispatcher) report(res result) {
	select {
	case d.results <- res:
	case <-d.gone:
	}
}

// recordFailure writes the attempt onto the rows: a retry time, or a move to the dead-letter
// table (holding the key's later rows behind it unless SkipDeadLetters).
func (d *dispatcher) recordFailure(ctx context.Context, res *result) error {
	cfg := d.r.cfg
	attempts := 0
	for _, r := range res.req.rows {
		attempts = max(attempts, r.attempts+1)
	}
	f := failure{status: res.resp.Status, msg: describe(res.resp, res.err), excerpt: res.resp.Excerpt, counted: 1}
	stop := cfg.OnFailure == OnFailureStop
	blame := d.ep.blame(res.req.rows, endpointSignature(res.resp, res.err))
	switch {
	case res.endpointWide:
		// The endpoint fails as a whole: the attempt is recorded on the rows but not counted
		// against them (no dead letter, no solo isolation); the dispatcher paces the probes.
		f.counted, attempts = 0, attempts-1
	case res.outcome == permanent && len(res.req.rows) > 1:
		// Find the refused record: send each alone before dead-lettering anything.
		for _, r := range res.req.rows {
			r.solo = true
		}
	case (cfg.MaxAttempts > 0 && attempts >= cfg.MaxAttempts ||
		res.outcome == permanent && !stop && attempts >= cfg.PermanentAttempts) && blame:
		res.dead = true
	}
	// ctx outlives a stop request until the shutdown deadline, so a failure seen while stopping
	// is still recorded, and a database that does not answer cannot hold the stop.
	dbCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if res.dead {
		return d.deadLetter(dbCtx, res.req.rows, f)
	}
	res.next = time.Now().Add(backoff(max(attempts, 1), cfg.BackoffMin, cfg.BackoffMax, res.resp.RetryAfter))
	switch {
	case res.endpointWide:
		res.next = time.Now() // ready as soon as the endpoint is: the probes pace the pause
	case res.pressure && attempts == 1 && res.resp.RetryAfter == 0 && d.lim.adaptive:
		// A first 429 or 503 without Retry-After: most likely the adaptive limit overshot the
		// receiver's cap, which its cut (apply) answers. The rows go again as soon as the cut
		// limit lets them rather than after a backoff; a second refusal backs off as usual.
		res.next = time.Now()
	}
	f.next = res.next
	found := map[int64]bool{}
	for i, ids := range idsByQueue(res.req.rows) {
		if len(ids) == 0 {
			continue
		}
		present, err := d.r.store.RecordFailure(dbCtx, queues[i], ids, f)
		if err != nil {
			return err
		}
		for _, id := range present {
			found[id] = true
		}
	}
	res.gone = append(res.gone, res.req.splitGone(found)...)
	return nil
}

// deadLetter moves rows to their dead-letter table and, unless SkipDeadLetters, holds the later
// progress rows of each key behind them, in one transaction.
func (d *dispatcher) deadLetter(ctx context.Context, rows []*row, f failure) error {
	parked, held, err := d.r.store.DeadLetter(ctx, idsByQueue(rows), f, !d.r.cfg.SkipDeadLetters, d.term)
	if err != nil {
		return err
	}
	d.r.cfg.Metrics.DeadLetters.WithLabelValues("failed").Add(float64(parked))
	d.r.cfg.Metrics.DeadLetters.WithLabelValues("held").Add(float64(held))
	return nil
}

// apply updates the window with a finished request.
func (d *dispatcher) apply(res result) error {
	d.inflight--
	now := time.Now()
	if len(res.gone) > 0 {
		for _, r := range res.gone {
			d.win.forget(r)
		}
		d.r.log.Info("rows purged from progress while held for a retry (their customer was deleted); not sent",
			zap.Int64("first_id", res.gone[0].id), zap.Int("rows", len(res.gone)))
	}
	if res.outcome != delivered || len(res.gone) > 0 {
		// The rows of these keys were held in memory across a failure (or a purge of their
		// key): each is re-checked before it is sent.
		for _, k := range res.req.keys {
			for _, r := range k.rows {
				r.recheck = true
			}
		}
	}
	if res.epChanged {
		d.endpointChanged("")
	}
	if res.dbErr != nil {
		d.win.release(res.req, false, now)
		return res.dbErr
	}
	if len(res.req.rows) == 0 { // every row was gone: nothing was sent
		d.win.release(res.req, false, now)
		return nil
	}
	status := strconv.Itoa(res.resp.Status)
	switch {
	case res.outcome == delivered:
		d.r.cfg.Metrics.Deliveries.WithLabelValues("delivered", status).Inc()
		for _, r := range res.req.rows {
			typ, _, _ := mapping.Lookup(r.objName, r.action)
			d.r.cfg.Metrics.MessagesDelivered.WithLabelValues(typ).Inc()
			if !r.resync { // not a commit: a resync row waits behind live ones by design
				d.r.cfg.Metrics.CommitToDelivery.Observe(now.Sub(r.createdAt).Seconds())
			}
		}
		d.acks.add(idsByQueue(res.req.rows))
		d.r.healthy.Store(true)
		d.lim.success(res.took, now)
		d.win.release(res.req, true, now)
	case res.dead:
		d.r.cfg.Metrics.Deliveries.WithLabelValues("dead_letter", status).Inc()
		d.r.log.Warn("delivery failed permanently; rows moved to the dead-letter table",
			zap.Int64("first_id", res.req.rows[0].id), zap.Int("rows", len(res.req.rows)), zap.String("error", describe(res.resp, res.err)))
		later := d.parked(res.req.rows, d.moveSeq)
		d.win.release(res.req, true, now)
		if err := d.hold(later); err != nil {
			return err
		}
	default:
		d.r.cfg.Metrics.Deliveries.WithLabelValues("retry", status).Inc()
		d.r.cfg.Metrics.Retries.Add(float64(len(res.req.rows)))
		for _, r := range res.req.rows {
			if !res.endpointWide {
				r.attempts++
			}
			if !r.solo || res.outcome != permanent {
				r.next = res.next
			}
		}
		if d.failing.failing && (res.req.probe || res.endpointWide) {
			// Pause everything; the next probe comes after a backoff that grows with each
			// probe failed (bounded by BackoffMax, Retry-After included).
			if res.req.probe {
				d.probes++
			}
			d.pauseUntil(now.Add(backoff(max(d.probes, 1), d.r.cfg.BackoffMin, d.r.cfg.BackoffMax, res.resp.RetryAfter)))
		}
		if !res.endpointWide {
			d.r.log.Info("delivery failed; will retry", zap.Int64("first_id", res.req.rows[0].id), zap.Int("rows", len(res.req.rows)),
				zap.String("error", describe(res.resp, res.err)), zap.Time("next_attempt", res.next))
		}
		if res.pressure || (d.lim.adaptive && res.err != nil && res.resp.Status == 0) {
			d.lim.pressure(d.inflight+1, res.took, now)
		}
		if res.pressure {
			if res.resp.RetryAfter > 0 {
				d.pauseUntil(now.Add(capWait(res.resp.RetryAfter, d.r.cfg.BackoffMax)))
			}
		}
		if d.r.cfg.OnFailure == OnFailureStop {
			d.pauseUntil(res.next)
		}
		d.win.release(res.req, false, now)
	}
	return nil
}

// endpointChanged adopts the endpoint state (failing or recovered) in the dispatcher, the
// relay's state line, the log, the metric and data_sync_leader. why, when set, says why a
// failing state ended without a delivery.
func (d *dispatcher) endpointChanged(why string) {
	s := d.ep.state()
	was := d.failing
	if s.failing == was.failing {
		return
	}
	d.failing = s
	setEndpointGauge(d.r.cfg.Metrics, s)
	d.stateRow.setEndpoint(s)
	if s.failing {
		d.probes = 0
		d.r.setState(PhaseEndpointFailing, s.String())
		d.r.log.Warn(s.String()+"; delivery paused, probing one request at a time, nothing dead-lettered meanwhile",
			zap.String("error", s.desc), zap.Int("distinct_keys", d.r.cfg.EndpointFailureKeys))
		return
	}
	if why == "" {
		why = "a request was delivered"
	}
	d.probes = 0
	d.paused = time.Time{}
	d.r.setState(PhaseDelivering, "")
	d.r.log.Info("endpoint recovered: "+why, zap.Duration("failing_for", time.Since(was.since).Round(time.Millisecond)),
		zap.String("was", was.desc))
}

// pauseUntil pauses every new request until t. Rows held across a pause are re-checked before
// they are sent: a customer deleted meanwhile had its rows purged from the queues, and its DELETE
// may still wait in pending behind a full window.
func (d *dispatcher) pauseUntil(t time.Time) {
	if t.After(d.paused) {
		d.paused = t
		d.win.markRecheck()
	}
}

// queueIDs holds row ids per queue family (indexed like queues).
type queueIDs [2][]int64

// len is the number of ids, every family's.
func (b *queueIDs) len() int { return len(b[0]) + len(b[1]) }

// idsByQueue returns the ids of rows, with the ids coalesced into them, per queue family.
func idsByQueue(rows []*row) queueIDs {
	var b queueIDs
	for _, r := range rows {
		b[r.q.idx] = append(append(b[r.q.idx], r.id), r.absorbed...)
	}
	return b
}

// ackQueue collects the ids of delivered rows for the acknowledger. add never waits: the
// dispatcher must keep serving results, the doorbell and a stop while the database is away.
// What waits is bounded by the window (delivered rows leave it only here or in progress).
type ackQueue struct {
	mu       sync.Mutex
	batch    queueIDs
	inFlight int // ids taken by the acknowledger and not yet acknowledged
	closed   bool
	wake     chan struct{} // capacity 1: "something was added or the queue was closed"
	freed    chan struct{} // capacity 1: "ids were acknowledged": the window has room again
	pause    time.Duration // ackPause (tests set their own)
	gather   int           // ackGather, or a quarter of the window when that is less
}

func newAckQueue(window int) *ackQueue {
	return &ackQueue{wake: make(chan struct{}, 1), freed: make(chan struct{}, 1), pause: ackPause,
		gather: max(1, min(ackGather, window/4))}
}

func (q *ackQueue) add(b queueIDs) {
	q.mu.Lock()
	for i := range b {
		q.batch[i] = append(q.batch[i], b[i]...)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *ackQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *ackQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// len is the number of ids waiting, those being acknowledged included.
func (q *ackQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.batch.len() + q.inFlight
}

// takeInto moves everything queued into b and tells whether the queue is closed.
func (q *ackQueue) takeInto(b *queueIDs) (closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.batch {
		b[i] = append(b[i], q.batch[i]...)
		q.batch[i] = q.batch[i][:0]
	}
	q.inFlight = b.len()
	return q.closed
}

// acknowledged tells the queue the ids taken are done with.
func (q *ackQueue) acknowledged() {
	q.mu.Lock()
	q.inFlight = 0
	q.mu.Unlock()
	select {
	case q.freed <- struct{}{}:
	default:
	}
}

// ackGather and ackPause: a DELETE of fewer than ackGather ids (a quarter of the window when
// that is less) waits ackPause for more first. The rows were delivered, but their ids count
// against the window until acknowledged, so a small window gathers fewer; a crash in between
// only sends those rows again.
const (
	ackGather = 64
	ackPause  = 2 * time.Millisecond
)

// acknowledger deletes delivered rows from progress in batches: whatever arrived while the
// previous DELETE ran goes in the next one. A failed DELETE is retried with backoff for as long
// as ctx lives (the session's stop deadline), so a database outage of any length only delays
// acknowledgements; it returns nil once the queue is closed and empty, or ctx's error with the
// rows it could not acknowledge (they stay in progress and are sent again: at least once).
func (d *dispatcher) acknowledger(ctx context.Context) error {
	var batch queueIDs
	failures := 0
	for {
		closed := d.acks.takeInto(&batch)
		if batch.len() > 0 && !closed {
			closed = d.gatherAcks(ctx, &batch)
		}
		if batch.len() > 0 {
			err := ackAll(ctx, d.r.store, &batch)
			if err == nil {
				d.acks.acknowledged()
				if failures > 0 {
					d.r.log.Info("acknowledging delivered rows works again", zap.Int("failed_attempts", failures))
				}
				failures = 0
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%d delivered rows left unacknowledged in progress (they will be sent again): %w",
					batch.len(), err)
			}
			failures++
			delay := backoff(failures, 100*time.Millisecond, 5*time.Second, 0)
			if failures == 1 || failures%20 == 0 {
				d.r.log.Warn("acknowledging delivered rows failed; retrying", zap.Error(err), zap.Int("attempt", failures),
					zap.Int("rows", batch.len()), zap.Duration("delay", delay))
			}
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			continue
		}
		if closed {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // nothing left to acknowledge
		case <-d.acks.wake:
		}
	}
}

// gatherAcks adds to batch, when it holds fewer than the queue's gather ids, those delivered
// meanwhile, for up to the queue's pause or until it holds gather ids or the queue is closed: a
// fast drain otherwise acknowledges a handful of rows per DELETE. Call it with the queue open.
func (d *dispatcher) gatherAcks(ctx context.Context, batch *queueIDs) (closed bool) {
	if batch.len() >= d.acks.gather {
		return false // enough for one DELETE already
	}
	pause := time.NewTimer(d.acks.pause)
	defer pause.Stop()
	for batch.len() < d.acks.gather && !closed {
		select {
		case <-ctx.Done():
			return false
		case <-pause.C:
			return d.acks.takeInto(batch)
		case <-d.acks.wake:
			closed = d.acks.takeInto(batch)
		}
	}
	return closed
}

// ackAll deletes acknowledged rows from progress and empties the batch.
func ackAll(ctx context.Context, store deliveryStore, b *queueIDs) error {
	for i, q := range queues {
		if len(b[i]) == 0 {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := store.Ack(opCtx, q, b[i])
		cancel()
		if err != nil {
			return err
		}
		b[i] = b[i][:0]
	}
	return nil
}
