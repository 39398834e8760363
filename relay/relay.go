// Package relay is the Data Sync job as a daemon: it delivers the progress queues first, then
// moves pending rows to progress in batches and POSTs each record to the receiver, in ID order
// per key, recording every failure on the row itself so a crash at any instant loses nothing.
package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

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
	// call; the relay waits for them to be visible before it moves pending rows.
	TakeQueued() []uint32
}

// Relay is the delivery daemon. Create it with New and run it with Run.
type Relay struct {
	cfg      Config
	db       *pgxpool.Pool
	posters  PosterFactory
	doorbell Doorbell
	log      *zap.Logger
	leader   *Leader // one relay delivers at a time; the others wait as standby (leader.go)

	state   atomic.Value // string, for Status
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
	r := &Relay{cfg: cfg, db: db, posters: posters, doorbell: doorbell, log: cfg.Logger}
	r.state.Store("starting")
	if db != nil {
		l, err := NewLeader(LeaderConfig{Lease: cfg.LeaderLease, Grace: cfg.LeaderGrace, Logger: cfg.Logger,
			OnStandby: func(holder string, since time.Time) {
				if holder == "" {
					r.state.Store("standby: another relay is taking over")
					return
				}
				r.state.Store(fmt.Sprintf("standby: relay %s leads since %s", holder, since.Format(time.RFC3339)))
			}}, db.Config().ConnConfig)
		if err != nil {
			return nil, err
		}
		r.leader = l
	}
	return r, nil
}

// State is a one-line description of what the relay is doing, for /readyz and logs.
func (r *Relay) State() string { return r.state.Load().(string) }

// Run delivers until ctx is cancelled and returns nil then. A database failure ends the
// current session (memory is dropped; the rows stay in progress) and a new one starts after a
// backoff. It returns an error only for a fault found at start-up that a retry cannot fix.
func (r *Relay) Run(ctx context.Context) error {
	first := true
	delay := 100 * time.Millisecond
	for {
		r.healthy.Store(false)
		err := r.session(ctx, first)
		if r.healthy.Load() {
			// The session recovered (it delivered, or led for a while): the next failure is a
			// new incident, not the continuation of an old one.
			delay = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			r.state.Store("stopped")
			return nil
		}
		if first && (errors.Is(err, ErrSettings) || errors.Is(err, ErrConfig)) {
			return err
		}
		first = false
		r.state.Store("reconnecting: " + err.Error())
		r.log.Warn("relay session ended; starting again", zap.Error(err), zap.Duration("after", delay))
		select {
		case <-ctx.Done():
			r.state.Store("stopped")
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// request is one POST: rows of one or more keys.
type request struct {
	rows []*row
	keys []*keyState
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
	took     time.Duration
}

// moved is what the mover reports: rows now in progress, whether more may wait, and the
// ringing transactions still invisible (to wait for again).
type moved struct {
	rows  []*row
	more  bool
	await []uint32
	wake  time.Time // a rate-limited resync asks for a move then (resync.go)
	err   error
}

// session runs one leadership term on one set of connections.
func (r *Relay) session(ctx context.Context, first bool) error {
	lock, err := r.db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer lock.Release()
	settings, err := LoadSettings(ctx, lock)
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
	d := &dispatcher{r: r, ctx: term.Context(), lock: lock, settings: settings, term: term}
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
	lock     *pgxpool.Conn
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
	// expandDue asks the next move to expand sets of customers even though the settings do not
	// write sets now: sets written before a settings change (looked for at start, on every
	// sweep and after a settings change).
	expandDue bool
	// await holds the transactions that rang the doorbell since the last move: the next move
	// waits for them to be visible (the walsender can decode a commit an instant before it is).
	await []uint32
	// recheckConfig is when to read data_sync_config once more after a change rang.
	recheckConfig time.Time
	// wakeAt is when to ask the mover again although nothing rang (a rate-limited resync).
	wakeAt  time.Time
	acks    chan ackBatch
	ackDone chan error
}

func (d *dispatcher) run() error {
	cfg := d.r.cfg
	d.win = newWindow(cfg.Coalesce)
	d.lim = newConcurrencyLimit(cfg.Concurrency, cfg.MaxConcurrency)
	if cfg.RateLimit > 0 {
		d.rate = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(1, cfg.MessagesPerRequest))
	}
	d.results = make(chan result, cfg.MaxInFlight())
	d.moveReq = make(chan moveReq, 1)
	d.moveResp = make(chan moved, 1)
	d.acks = make(chan ackBatch, 4*cfg.MaxInFlight())
	d.ackDone = make(chan error, 1)
	d.applySettings(d.settings, true)
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
	moverCtx, stopMover := context.WithCancel(d.ctx)
	wg.Add(2)
	go func() { defer wg.Done(); d.mover(moverCtx) }()
	go func() { defer wg.Done(); d.ackDone <- d.acknowledger(postCtx) }()

	sweep := time.NewTicker(cfg.SweepInterval)
	defer sweep.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var queued, configChanged <-chan struct{}
	if d.r.doorbell != nil {
		queued, configChanged = d.r.doorbell.Queued(), d.r.doorbell.ConfigChanged()
	}
	d.pending = true // (expandDue was set by applySettings above)
	metrics.WakeUps.WithLabelValues("start").Inc()

	var sessionErr error
loop:
	for {
		now := time.Now()
		next := d.win.promote(now)
		d.fill()
		d.dispatch(postCtx, now)
		if d.paused.After(now) && (next.IsZero() || d.paused.Before(next)) {
			next = d.paused
		}
		if !d.wakeAt.IsZero() {
			if !d.wakeAt.After(now) {
				d.wakeAt, d.pending = time.Time{}, true
				d.fill()
			} else if next.IsZero() || d.wakeAt.Before(next) {
				next = d.wakeAt
			}
		}
		if !d.recheckConfig.IsZero() {
			if !d.recheckConfig.After(now) {
				d.recheckConfig = time.Time{}
				if err := d.reloadSettings(); err != nil {
					sessionErr = err
					break loop
				}
				continue
			} else if next.IsZero() || d.recheckConfig.Before(next) {
				next = d.recheckConfig
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-d.ctx.Done():
			break loop
		case res := <-d.results:
			if err := d.apply(res); err != nil {
				sessionErr = err
				break loop
			}
		case m := <-d.moveResp:
			d.moving = false
			if m.err != nil {
				sessionErr = m.err
				break loop
			}
			now := time.Now()
			for _, row := range m.rows {
				d.admit(row, now)
			}
			d.pending = d.pending || m.more || len(m.await) > 0
			d.await = append(d.await, m.await...)
			d.resyncWake(m.wake)
		case <-queued: // the doorbell counts its own wake-ups
			d.pending = true
			d.await = append(d.await, d.r.doorbell.TakeQueued()...)
			if len(d.await) > maxAwait { // paused for long: the oldest are visible by now
				d.await = append(d.await[:0], d.await[len(d.await)-maxAwait/2:]...)
			}
		case <-configChanged:
			if d.recheckConfig.IsZero() {
				d.recheckConfig = time.Now().Add(configRecheck)
			}
			if err := d.reloadSettings(); err != nil {
				sessionErr = err
				break loop
			}
		case <-sweep.C:
			metrics.WakeUps.WithLabelValues("sweep").Inc()
			d.pending, d.expandDue = true, true
			if err := d.reloadSettings(); err != nil {
				sessionErr = err
				break loop
			}
		case <-timer.C:
			metrics.WakeUps.WithLabelValues("retry").Inc()
		case err := <-d.ackDone:
			sessionErr = fmt.Errorf("acknowledging delivered rows: %w", err)
			d.ackDone <- err
			break loop
		}
	}
	stopMover()
	// Let requests in flight finish (bounded), then flush acknowledgements.
	d.r.state.Store("stopping")
	deadline := time.NewTimer(d.r.cfg.ShutdownTimeout)
	defer deadline.Stop()
	for d.inflight > 0 {
		select {
		case res := <-d.results:
			if sessionErr != nil {
				d.inflight--
				continue
			}
			if err := d.apply(res); err != nil {
				sessionErr = err
			}
		case <-deadline.C:
			cancelPosts()
			deadline.Reset(time.Hour)
		}
	}
	close(d.acks)
	wg.Wait()
	if err := <-d.ackDone; err != nil && sessionErr == nil && d.ctx.Err() == nil {
		sessionErr = fmt.Errorf("acknowledging delivered rows: %w", err)
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
		d.r.state.Store("idle: DataSyncEnabled is false")
		d.r.log.Info("Data Sync is disabled; delivery paused (rows stay queued)")
		return
	}
	p, closeFn, err := d.r.buildPoster(d.ctx, s)
	if err != nil {
		d.r.state.Store("paused: " + err.Error())
		d.r.log.Error("cannot deliver with the current Data Sync settings; delivery paused until they change", zap.Error(err))
		return
	}
	d.poster, d.closeP, d.posterOK = p, closeFn, true
	d.pending = true
	d.r.state.Store("delivering")
}

func (d *dispatcher) reloadSettings() error {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	s, err := LoadSettings(ctx, d.lock)
	if err != nil {
		if d.ctx.Err() != nil {
			return nil
		}
		return err
	}
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
	room := d.r.cfg.Window - d.win.rows
	if room < min(d.r.cfg.MoveBatch, d.r.cfg.Window/2) {
		return
	}
	select {
	case d.moveReq <- moveReq{room: room, expand: d.expandDue || d.settings.expandSets(), await: d.await}:
		d.moving = true
		d.pending, d.expandDue, d.await = false, false, nil
	default:
	}
}

// moveReq asks the mover for up to room rows; expand asks it to expand sets of customers first;
// await names transactions to wait for (visible to new snapshots) before moving.
type moveReq struct {
	room   int
	expand bool
	await  []uint32
}

// mover loads progress first (rows left by an earlier run), then moves pending rows to progress.
func (d *dispatcher) mover(ctx context.Context) {
	cursor := map[*queue]int64{}
	loaded := map[*queue]bool{}
	expand := false // sets asked for and not yet expanded (progress is loaded first)
	resync := newResyncer(d.r.cfg)
	for {
		var req moveReq
		select {
		case <-ctx.Done():
			return
		case req = <-d.moveReq:
		}
		room := req.room
		expand = expand || req.expand
		var m moved
		if len(req.await) > 0 {
			m.await, m.err = awaitCommits(ctx, d.r.db, req.await)
		}
		for _, q := range queues {
			if m.err != nil {
				break
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
				rows, err = q.load(opCtx, d.r.db, cursor[q], n)
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
				rows, err = q.move(opCtx, d.r.db, n, d.r.cfg.SkipDeadLetters == false, expand, d.term.fence())
				resync.tag(rows, time.Since(began))
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
			prepare(rows)
			m.rows = append(m.rows, rows...)
			room -= len(rows)
		}
		if m.err == nil && !m.more { // pending drained: room for a page of a resync request
			m.err = resync.step(ctx, d.r.db, &m, room-min(d.r.cfg.MoveBatch, d.r.cfg.Window/2))
		}
		select {
		case d.moveResp <- m:
		case <-ctx.Done():
			return
		}
	}
}

// awaitCommits waits (at most RecheckSpan) until the given transactions are visible to new
// snapshots, so the move that follows sees what they queued, and returns those still invisible
// then (a commit waiting for a synchronous standby, say), which the relay waits for again.
func awaitCommits(ctx context.Context, db *pgxpool.Pool, xids []uint32) ([]uint32, error) {
	ids := make([]string, len(xids))
	for i, x := range xids {
		ids[i] = strconv.FormatUint(uint64(x), 10)
	}
	opCtx, cancel := context.WithTimeout(ctx, RecheckSpan+10*time.Second)
	defer cancel()
	var running []string
	if err := db.QueryRow(opCtx, "SELECT data_sync_await_commit($1::text[]::xid[], $2)::text[]", ids,
		RecheckSpan.Milliseconds()).Scan(&running); err != nil {
		return nil, fmt.Errorf("waiting for queued commits to be visible: %w", err)
	}
	out := make([]uint32, 0, len(running))
	for _, s := range running {
		x, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("waiting for queued commits to be visible: transaction id %q: %w", s, err)
		}
		out = append(out, uint32(x))
	}
	return out, nil
}

// admit checks a row and puts it in the window; a row that can never be sent is dead-lettered.
func (d *dispatcher) admit(r *row, now time.Time) {
	if err := r.bad; err != nil {
		d.r.log.Warn("queue row cannot be sent; moved to the dead-letter table", zap.String("queue", r.q.name),
			zap.Int64("id", r.id), zap.Error(err))
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		defer cancel()
		if dbErr := d.deadLetter(ctx, []*row{r}, 0, 0, err.Error(), ""); dbErr != nil {
			d.r.log.Error("dead-lettering a bad row failed; it stays in progress", zap.Int64("id", r.id), zap.Error(dbErr))
		}
		return
	}
	d.win.add(r, now)
	if d.win.saved > 0 {
		metrics.Coalesced.Add(float64(d.win.saved))
		d.win.saved = 0
	}
}

// prepare checks each row (checkRow) and compacts its JSON, in parallel, off the dispatcher's
// goroutine: the strict payload check is the relay's largest CPU cost per message. The compact
// form is what travels, as in the appendix's samples (PostgreSQL's JSON builders put spaces
// around ':' and after ',').
func prepare(rows []*row) {
	workers := min(runtime.GOMAXPROCS(0), (len(rows)+63)/64)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for i := w; i < len(rows); i += workers {
				r := rows[i]
				if r.bad = checkRow(r); r.bad != nil || r.payload == nil {
					continue
				}
				buf.Reset()
				if json.Compact(&buf, r.payload) == nil && buf.Len() < len(r.payload) {
					r.payload = append([]byte(nil), buf.Bytes()...)
				}
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
	metrics.Concurrency.Set(float64(d.lim.limit))
	for d.inflight < d.lim.limit {
		req := d.win.take(d.r.cfg.MessagesPerRequest, now)
		if req == nil {
			return
		}
		d.inflight++
		d.lim.sending(d.inflight)
		go d.send(ctx, d.poster, req)
	}
}

// send performs one request and records a failure on its rows before reporting.
func (d *dispatcher) send(ctx context.Context, p Poster, req *request) {
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
			d.results <- result{req: req, outcome: retryable, err: err, next: time.Now()}
			return
		}
	}
	start := time.Now()
	resp, err := p.Post(ctx, body)
	res := result{req: req, resp: resp, err: err, took: time.Since(start)}
	metrics.RequestDuration.Observe(res.took.Seconds())
	res.outcome, res.pressure = classify(resp, err, d.r.cfg.Delivered)
	if res.outcome != delivered {
		res.dbErr = d.recordFailure(ctx, &res)
	}
	d.results <- res
}

// recordFailure writes the attempt onto the rows: a retry time, or a move to the dead-letter
// table (holding the key's later rows behind it unless SkipDeadLetters).
func (d *dispatcher) recordFailure(ctx context.Context, res *result) error {
	cfg := d.r.cfg
	attempts := 0
	for _, r := range res.req.rows {
		attempts = max(attempts, r.attempts+1)
	}
	msg := describe(res.resp, res.err)
	excerpt := res.resp.Excerpt
	stop := cfg.OnFailure == OnFailureStop
	switch {
	case res.outcome == permanent && len(res.req.rows) > 1:
		// Find the refused record: send each alone before dead-lettering anything.
		for _, r := range res.req.rows {
			r.solo = true
		}
	case cfg.MaxAttempts > 0 && attempts >= cfg.MaxAttempts,
		res.outcome == permanent && !stop && attempts >= cfg.PermanentAttempts:
		res.dead = true
	}
	dbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if res.dead {
		return d.deadLetter(dbCtx, res.req.rows, 1, res.resp.Status, msg, excerpt)
	}
	res.next = time.Now().Add(backoff(attempts, cfg.BackoffMin, cfg.BackoffMax, res.resp.RetryAfter))
	for i, ids := range idsByQueue(res.req.rows) {
		if len(ids) == 0 {
			continue
		}
		if _, err := d.r.db.Exec(dbCtx, queues[i].failSQL, ids, nullStatus(res.resp.Status), msg, res.next); err != nil {
			return fmt.Errorf("recording a failed delivery: %w", err)
		}
	}
	return nil
}

func nullStatus(s int) *int {
	if s == 0 {
		return nil
	}
	return &s
}

// deadLetter moves rows to their dead-letter table and, unless SkipDeadLetters, holds the later
// progress rows of each key behind them.
func (d *dispatcher) deadLetter(ctx context.Context, rows []*row, counted, status int, msg, excerpt string) error {
	for i, ids := range idsByQueue(rows) {
		if len(ids) == 0 {
			continue
		}
		q := queues[i]
		f := d.term.fence()
		_, err := d.r.db.Exec(ctx, q.deadSQL, ids, counted, nullStatus(status), msg, nullIfEmpty(excerpt), f.epoch, f.renew)
		if err = f.done(err); err != nil {
			return fmt.Errorf("moving rows to %s: %w", q.failed, err)
		}
	}
	metrics.DeadLetters.WithLabelValues("failed").Add(float64(len(rows)))
	if d.r.cfg.SkipDeadLetters {
		return nil
	}
	for _, r := range rows {
		if r.keyNull {
			continue
		}
		f := d.term.fence()
		tag, err := d.r.db.Exec(ctx, r.q.holdSQL, r.key, r.id, f.epoch, f.renew)
		if err = f.done(err); err != nil {
			return fmt.Errorf("holding later rows behind dead letter %d: %w", r.id, err)
		}
		metrics.DeadLetters.WithLabelValues("held").Add(float64(tag.RowsAffected()))
	}
	return nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// apply updates the window with a finished request.
func (d *dispatcher) apply(res result) error {
	d.inflight--
	now := time.Now()
	if res.dbErr != nil {
		d.win.release(res.req, false, now)
		return res.dbErr
	}
	status := strconv.Itoa(res.resp.Status)
	switch {
	case res.outcome == delivered:
		metrics.Deliveries.WithLabelValues("delivered", status).Inc()
		for _, r := range res.req.rows {
			typ, _, _ := mapping.Lookup(r.objName, r.action)
			metrics.MessagesDelivered.WithLabelValues(typ).Inc()
			if !r.resync { // not a commit: a resync row waits behind live ones by design
				metrics.CommitToDelivery.Observe(now.Sub(r.createdAt).Seconds())
			}
		}
		d.acks <- idsByQueue(res.req.rows)
		d.r.healthy.Store(true)
		d.lim.success(res.took, now)
		d.win.release(res.req, true, now)
	case res.dead:
		metrics.Deliveries.WithLabelValues("dead_letter", status).Inc()
		d.r.log.Warn("delivery failed permanently; rows moved to the dead-letter table",
			zap.Int64("first_id", res.req.rows[0].id), zap.Int("rows", len(res.req.rows)), zap.String("error", describe(res.resp, res.err)))
		if !d.r.cfg.SkipDeadLetters {
			for _, r := range res.req.rows {
				if k := d.win.keys[keyName(r)]; k != nil {
					d.win.dropAfter(k, r.id)
				}
			}
		}
		d.win.release(res.req, true, now)
	default:
		metrics.Deliveries.WithLabelValues("retry", status).Inc()
		metrics.Retries.Add(float64(len(res.req.rows)))
		for _, r := range res.req.rows {
			r.attempts++
			if !r.solo || res.outcome != permanent {
				r.next = res.next
			}
		}
		d.r.log.Info("delivery failed; will retry", zap.Int64("first_id", res.req.rows[0].id), zap.Int("rows", len(res.req.rows)),
			zap.String("error", describe(res.resp, res.err)), zap.Time("next_attempt", res.next))
		if res.pressure || (d.lim.adaptive && res.err != nil && res.resp.Status == 0) {
			d.lim.pressure(d.inflight+1, res.took, now)
		}
		if res.pressure {
			if res.resp.RetryAfter > 0 {
				d.paused = maxTime(d.paused, now.Add(res.resp.RetryAfter))
			}
		}
		if d.r.cfg.OnFailure == OnFailureStop {
			d.paused = maxTime(d.paused, res.next)
		}
		d.win.release(res.req, false, now)
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ackBatch holds row ids per queue family (indexed like queues).
type ackBatch [2][]int64

// idsByQueue returns the ids of rows, with the ids coalesced into them, per queue family.
func idsByQueue(rows []*row) ackBatch {
	var b ackBatch
	for _, r := range rows {
		b[r.q.idx] = append(append(b[r.q.idx], r.id), r.absorbed...)
	}
	return b
}

// acknowledger deletes delivered rows from progress in batches: whatever arrived while the
// previous DELETE ran goes in the next one.
func (d *dispatcher) acknowledger(ctx context.Context) error {
	var batch ackBatch
	flush := func() error {
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if err = ackAll(ctx, d.r.db, &batch); err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
			}
		}
		return err
	}
	for {
		b, ok := <-d.acks
		if !ok {
			return flush()
		}
		for i := range b {
			batch[i] = append(batch[i], b[i]...)
		}
	drain:
		for len(batch[0])+len(batch[1]) < 5000 {
			select {
			case more, ok := <-d.acks:
				if !ok {
					return flush()
				}
				for i := range more {
					batch[i] = append(batch[i], more[i]...)
				}
			default:
				break drain
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
}

// ackAll deletes acknowledged rows from progress and empties the batch.
func ackAll(ctx context.Context, db *pgxpool.Pool, b *ackBatch) error {
	for i, q := range queues {
		if len(b[i]) == 0 {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := db.Exec(opCtx, q.ackSQL, b[i])
		cancel()
		if err != nil {
			return err
		}
		b[i] = b[i][:0]
	}
	return nil
}
