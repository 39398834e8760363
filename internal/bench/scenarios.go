package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/load"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/internal/sender"
	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

const (
	startTimeout   = 60 * time.Second // relay start-up and doorbell connection
	deliverTimeout = 10 * time.Minute // longest a drain may take
	settleTimeout  = 60 * time.Second // last changes of a latency run to arrive
)

// arrivals records when each uniqueId reached the receiver (the 200 was decided).
type arrivals struct {
	mu   sync.Mutex
	at   map[string]time.Time
	want map[string]chan struct{}
}

func newArrivals() *arrivals {
	return &arrivals{at: map[string]time.Time{}, want: map[string]chan struct{}{}}
}

func (a *arrivals) record(r receiver.Received) {
	if r.Sample {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.at[r.Message.UniqueID]; !ok {
		a.at[r.Message.UniqueID] = now
	}
	if ch, ok := a.want[r.Message.UniqueID]; ok {
		close(ch)
		delete(a.want, r.Message.UniqueID)
	}
}

// wait returns a channel closed when id has arrived.
func (a *arrivals) wait(id string) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := a.at[id]; ok {
		close(ch)
		return ch
	}
	a.want[id] = ch
	return ch
}

func (a *arrivals) get(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[id]
	return t, ok
}

// commit is one committed change: its queue row id and when its statement was sent (just
// before the autocommit COMMIT, so a change's latency includes its own durable commit), and
// when its answer came back.
type commit struct {
	id       string
	row      int64
	at, done time.Time
}

// touch commits one change of customer outside a run (load.Touch): the warm-up change.
func touch(ctx context.Context, conn *pgx.Conn, customer, n int64) (commit, error) {
	c, err := load.Touch(ctx, conn, customer, n)
	if err != nil {
		return commit{}, fmt.Errorf("%w: %w", ErrBench, err)
	}
	return commit{id: strconv.FormatInt(c.Rows[0].ID, 10), at: c.Sent}, nil
}

// durableCommit is the median and 99th percentile time of one single-row autocommit UPDATE on a
// table of its own (no trigger), n of them back to back (every 0) or one each every: the cost of
// a durable commit on this server now, the latency's yardstick.
func durableCommit(ctx context.Context, conn *pgx.Conn, every time.Duration, n int) (p50, p99 time.Duration, err error) {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_commit_probe (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO bench_commit_probe VALUES (1, 0) ON CONFLICT DO NOTHING`); err != nil {
		return 0, 0, fmt.Errorf("%w: creating the commit probe: %w", ErrBench, err)
	}
	took := make([]time.Duration, n)
	next := time.Now()
	for i := range took {
		if every > 0 {
			next = next.Add(every)
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			}
		}
		start := time.Now()
		if _, err := conn.Exec(ctx, "UPDATE bench_commit_probe SET n = n + 1 WHERE id = 1"); err != nil {
			return 0, 0, fmt.Errorf("%w: timing a durable commit: %w", ErrBench, err)
		}
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	return took[len(took)/2], took[(len(took)*99)/100], nil
}

// latency commits rate customer changes per second for d and measures each one's latency from
// just before its COMMIT to the receiver's arrival, the relay running in-process with its
// replication doorbell, beside the time of one durable commit measured in the same database.
func (e *env) latency(ctx context.Context, rate int, d time.Duration, label string) (LatencyResult, error) {
	res := LatencyResult{Rate: rate, Label: label}
	name, dbURL, err := e.newDB(ctx, "latency"+strconv.Itoa(rate)+strings.ReplaceAll(label, " ", "_"))
	if err != nil {
		return res, err
	}
	arr := newArrivals()
	r, err := e.newReceiver(arr.record)
	if err != nil {
		return res, err
	}
	defer r.srv.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := enable(ctx, conn, r); err != nil {
		return res, err
	}

	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	var relayErr error
	rcfg := relay.Config{Concurrency: e.o.Concurrency, MoveBatch: e.o.MoveBatch}
	var tr *tracer
	if e.o.Breakdown {
		tr = newTracer()
		rcfg.Trace = tr.record
	}
	go func() {
		defer close(relayDone)
		relayErr = daemon.Run(rctx, daemon.Config{
			DatabaseURL: dbURL, Relay: rcfg,
			CAFile: r.caFile, CredentialsPath: r.credsFile, AdminAddr: "off",
			Getenv: func(string) string { return "" },
		})
	}()
	defer func() {
		stopRelay()
		<-relayDone
	}()
	if err := waitSlot(ctx, dbURL, name, startTimeout, relayDone); err != nil {
		if relayErr != nil {
			err = fmt.Errorf("%w: %w", err, relayErr)
		}
		return res, err
	}

	// Writers: enough sessions that commit latency never limits the rate, changing the
	// customers round-robin, one change per tick of the schedule.
	total := int(float64(rate) * d.Seconds())
	if total < 1 {
		return res, fmt.Errorf("%w: a latency run of %s at %d changes/s makes no change", ErrBench, d, rate)
	}
	customers := make([]int64, e.o.Sizes.Customers)
	for i := range customers {
		customers[i] = int64(i + 1)
	}
	var mu sync.Mutex
	var commits []commit
	gen := load.New(load.Config{DatabaseURL: dbURL, Mix: load.Touches(), Rate: float64(rate), Workers: min(16, max(2, rate/40)),
		IDs: customers, Ops: total, OnCommit: func(c load.Commit) {
			if c.Err == nil && len(c.Rows) == 1 {
				mu.Lock()
				commits = append(commits, commit{id: strconv.FormatInt(c.Rows[0].ID, 10), row: c.Rows[0].ID, at: c.Sent, done: c.Returned})
				mu.Unlock()
			}
		}})
	if err := gen.Open(ctx); err != nil {
		return res, fmt.Errorf("%w: opening the writers' sessions: %w", ErrBench, err)
	}
	defer gen.Close()
	dc, _, err := durableCommit(ctx, gen.Conn(0), 0, 200)
	if err != nil {
		return res, err
	}
	res.CommitMS = float64(dc) / float64(time.Millisecond)
	// The same commit one at a time at the run's rate costs more than back to back on an idle
	// machine (a disk and CPUs woken for each): the latency targets count that one.
	dc, dc99, err := durableCommit(ctx, gen.Conn(0), time.Second/time.Duration(rate), min(200, max(20, rate*2)))
	if err != nil {
		return res, err
	}
	res.CommitAtRateMS = float64(dc) / float64(time.Millisecond)
	res.CommitAtRateP99MS = float64(dc99) / float64(time.Millisecond)
	// Warm up: one change delivered end to end (token fetched, connections open).
	c, err := touch(ctx, gen.Conn(0), 1, 0)
	if err != nil {
		return res, err
	}
	if err := waitClosed(ctx, arr.wait(c.id), startTimeout, relayDone); err != nil {
		return res, fmt.Errorf("%w: the warm-up change was not delivered: %w", ErrBench, err)
	}

	if err := gen.Run(ctx); err != nil {
		return res, fmt.Errorf("%w: %w", ErrBench, err)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	elapsed := gen.Elapsed()
	res.Changes, res.Seconds = len(commits), elapsed.Seconds()
	res.AchievedRate = float64(len(commits)) / elapsed.Seconds()
	if len(commits) > 0 {
		last := commits[len(commits)-1]
		for _, c := range commits {
			if c.at.After(last.at) {
				last = c
			}
		}
		if err := waitClosed(ctx, arr.wait(last.id), settleTimeout, relayDone); err != nil {
			return res, fmt.Errorf("%w: the last change was not delivered: %w", ErrBench, err)
		}
	}
	// Changes committed just before the last one may still be in flight.
	deadline := time.Now().Add(settleTimeout)
	var lat []float64
	for _, c := range commits {
		at, ok := arr.get(c.id)
		for !ok && time.Now().Before(deadline) {
			if err := waitClosed(ctx, arr.wait(c.id), time.Until(deadline), relayDone); err != nil {
				break
			}
			at, ok = arr.get(c.id)
		}
		if ok {
			lat = append(lat, float64(at.Sub(c.at))/float64(time.Millisecond))
		}
	}
	res.Delivered = len(lat)
	slices.Sort(lat)
	res.P50, res.P95, res.P99 = percentile(lat, 50), percentile(lat, 95), percentile(lat, 99)
	if len(lat) > 0 {
		res.Max = lat[len(lat)-1]
	}
	if tr != nil {
		res.Stages = tr.stages(commits, arr)
	}
	return res, nil
}

func waitClosed(ctx context.Context, ch <-chan struct{}, timeout time.Duration, exited <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-exited:
		return errors.New("the relay stopped")
	case <-t.C:
		return fmt.Errorf("timed out after %s", timeout)
	}
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// counter counts data messages arriving at a receiver.
type counter struct {
	n           atomic.Int64
	first, last atomic.Int64 // unix nanoseconds
	target      int64
	done        chan struct{}
	mark        int64
	atMark      chan struct{}
}

func newCounter(target, mark int) *counter {
	return &counter{target: int64(target), mark: int64(mark), done: make(chan struct{}), atMark: make(chan struct{})}
}

func (c *counter) record(r receiver.Received) {
	if r.Sample || r.Duplicate {
		return
	}
	now := time.Now().UnixNano()
	c.first.CompareAndSwap(0, now)
	c.last.Store(now)
	switch c.n.Add(1) {
	case c.mark:
		close(c.atMark)
	case c.target:
		close(c.done)
	}
}

func (c *counter) rate() float64 {
	span := time.Duration(c.last.Load() - c.first.Load())
	if span <= 0 {
		return 0
	}
	return float64(c.n.Load()-1) / span.Seconds()
}

// throughput drains a backlog of n rows with the relay as a child process sending per messages
// per POST, and measures the SQL-only and HTTP-only baselines for the same backlog.
func (e *env) throughput(ctx context.Context, label string, n, per, mark int) (ThroughputResult, error) {
	res := ThroughputResult{Name: label, MessagesPerRequest: per, Backlog: n}
	window := max(4*e.o.MoveBatch, 4*e.o.BaselineWorkers()*per)

	// SQL-only baseline, in its own database.
	{
		_, dbURL, err := e.newDB(ctx, label+"_sql")
		if err != nil {
			return res, err
		}
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
		}
		err = e.fillBacklog(ctx, conn, 1, n)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return res, err
		}
		poolCfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			return res, fmt.Errorf("%w: parsing the database URL: %w", ErrBench, err)
		}
		relay.ConfigurePool(poolCfg) // the relay's session settings
		pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
		if err != nil {
			return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
		}
		moved, took, err := DrainSQL(ctx, pool, e.o.MoveBatch, window)
		pool.Close()
		if err != nil {
			return res, fmt.Errorf("%w: SQL baseline: %w", ErrBench, err)
		}
		if moved != n {
			return res, fmt.Errorf("%w: SQL baseline moved %d of %d rows", ErrBench, moved, n)
		}
		res.SQLRate = float64(moved) / took.Seconds()
		e.o.logf("  sql-only: %d rows in %.2f s = %.0f rows/s", moved, took.Seconds(), res.SQLRate)
	}

	// HTTP-only baseline.
	{
		rate, err := e.httpBaseline(ctx, n, per, e.o.BaselineWorkers(), receiver.Faults{})
		if err != nil {
			return res, err
		}
		res.HTTPRate = rate
		e.o.logf("  http-only: %.0f messages/s", rate)
	}

	// The relay.
	_, dbURL, err := e.newDB(ctx, label)
	if err != nil {
		return res, err
	}
	cnt := newCounter(n, mark)
	r, err := e.newReceiver(cnt.record)
	if err != nil {
		return res, err
	}
	defer r.srv.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	fillStart := time.Now()
	if err := e.fillBacklog(ctx, conn, 1, n); err != nil {
		return res, err
	}
	res.BacklogSeconds = time.Since(fillStart).Seconds()
	if err := enable(ctx, conn, r); err != nil {
		return res, err
	}
	start := time.Now()
	ch, err := e.startRelay(dbURL, r, per)
	if err != nil {
		return res, err
	}
	defer ch.stop()
	markDone := make(chan struct{})
	go func() {
		defer close(markDone)
		select {
		case <-cnt.atMark:
			if hwm, rss, err := ch.memory(); err == nil {
				res.RSSAtMark, res.PeakRSSAtMark, res.RSSMark = rss, hwm, mark
			}
		case <-cnt.done:
		case <-ch.exited:
		}
	}()
	if err := waitClosed(ctx, cnt.done, deliverTimeout, ch.exited); err != nil {
		<-markDone
		return res, fmt.Errorf("%w: the relay delivered %d of %d messages: %w: %s", ErrBench, cnt.n.Load(), n, err, ch.stderr.Tail(2000))
	}
	res.RelaySeconds = time.Since(start).Seconds()
	<-markDone
	res.RelayRate = cnt.rate()
	if res.PeakRSS, res.RSSAtEnd, err = ch.memory(); err != nil {
		return res, err
	}
	if res.RelayCPU, err = ch.cpu(); err != nil {
		return res, err
	}
	if err := ch.stop(); err != nil {
		return res, err
	}
	st := r.srv.Stats()
	res.Requests, res.Duplicates = st.Requests, st.Duplicates
	if res.SQLRate > 0 && res.HTTPRate > 0 {
		res.Predicted = 1 / (1/res.SQLRate + 1/res.HTTPRate)
		res.Ratio = res.RelayRate / res.Predicted
	}
	e.o.logf("  relay: %d messages in %.2f s, %.0f messages/s (ratio %.2f)", n, res.RelaySeconds, res.RelayRate, res.Ratio)
	return res, nil
}

// httpBaseline posts n messages, per per request, with workers requests in flight and the real
// sender to a fresh receiver with faults, with bodies built as the relay builds them. No database.
func (e *env) httpBaseline(ctx context.Context, n, per, workers int, faults receiver.Faults, opts ...func(*receiver.Config)) (float64, error) {
	cnt := newCounter(n, 0)
	r, err := e.newReceiver(cnt.record, opts...)
	if err != nil {
		return 0, err
	}
	defer r.srv.Close()
	r.srv.SetFaults(faults)
	snd, err := sender.New(sender.Config{APIURL: r.srv.APIURL(), TokenURL: r.srv.TokenURL(), Credential: r.cred,
		CAFile: r.caFile, MaxConns: max(64, 2*workers)})
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBench, err)
	}
	defer snd.Close()
	typ, act, err := mapping.Lookup("Customer", "UPDATE")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBench, err)
	}
	requests := (n + per - 1) / per
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			msgs := make([]mapping.Message, 0, per)
			var body []byte
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return nil
				}
				msgs = msgs[:0]
				for id := i*per + 1; id <= min((i+1)*per, n); id++ {
					s := strconv.Itoa(id)
					msgs = append(msgs, mapping.Message{Action: act, Payload: e.payload(s), Type: typ, UniqueID: s})
				}
				body = mapping.AppendEnvelope(body[:0], msgs)
				res, err := snd.Post(gctx, body)
				if err != nil {
					return fmt.Errorf("%w: HTTP baseline: %w", ErrBench, err)
				}
				if res.Status != 200 {
					return fmt.Errorf("%w: HTTP baseline: receiver answered %d: %s", ErrBench, res.Status, res.Excerpt)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if cnt.n.Load() != int64(n) {
		return 0, fmt.Errorf("%w: HTTP baseline: receiver accepted %d of %d messages", ErrBench, cnt.n.Load(), n)
	}
	return cnt.rate(), nil
}

// idle starts the relay as a child process, delivers one change so it is warmed up, then
// watches it for d with nothing happening: its CPU time, the transactions committed or rolled
// back in its database, and the doorbell slot's lag at the end.
func (e *env) idle(ctx context.Context, d time.Duration) (IdleResult, error) {
	res := IdleResult{}
	name, dbURL, err := e.newDB(ctx, "idle")
	if err != nil {
		return res, err
	}
	arr := newArrivals()
	r, err := e.newReceiver(arr.record)
	if err != nil {
		return res, err
	}
	defer r.srv.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	if err := enable(ctx, conn, r); err != nil {
		conn.Close(ctx)
		return res, err
	}
	admin, err := freeAddr()
	if err != nil {
		conn.Close(ctx)
		return res, err
	}
	// Three sweeps in the period, so the count shows what a sweep costs and that nothing else
	// runs between sweeps.
	res.SweepEvery = (d / 3).Seconds()
	ch, err := e.startRelay(dbURL, r, 1, "--admin-addr", admin, "--sweep-interval", (d / 3).String())
	if err != nil {
		conn.Close(ctx)
		return res, err
	}
	defer ch.stop()
	if err := waitSlot(ctx, dbURL, name, startTimeout, ch.exited); err != nil {
		conn.Close(ctx)
		return res, fmt.Errorf("%w: %s", err, ch.stderr.Tail(2000))
	}
	c, err := touch(ctx, conn, 1, 0)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return res, err
	}
	if err := waitClosed(ctx, arr.wait(c.id), startTimeout, ch.exited); err != nil {
		return res, fmt.Errorf("%w: the warm-up change was not delivered: %w: %s", ErrBench, err, ch.stderr.Tail(2000))
	}
	// Let the acknowledgement of the warm-up change commit, and the relay's last look at pending
	// after its doorbell rang (relay.RecheckSpan), pass before counting.
	if err := e.waitProgressEmpty(ctx, dbURL); err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(relay.RecheckSpan + 250*time.Millisecond):
	}
	x0, err := e.xacts(ctx, name)
	if err != nil {
		return res, err
	}
	cpu0, err := ch.cpu()
	if err != nil {
		return res, err
	}
	m0, err := scrapeCounters(ctx, admin)
	if err != nil {
		return res, err
	}
	start := time.Now()
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return res, ctx.Err()
	case <-ch.exited:
		t.Stop()
		return res, fmt.Errorf("%w: the relay exited while idle: %s", ErrBench, ch.stderr.Tail(2000))
	case <-t.C:
	}
	cpu1, err := ch.cpu()
	if err != nil {
		return res, err
	}
	res.Seconds, res.CPU = time.Since(start).Seconds(), cpu1-cpu0
	m1, err := scrapeCounters(ctx, admin)
	if err != nil {
		return res, err
	}
	delta := func(name, value string) int64 { return int64(m1.get(name, value) - m0.get(name, value)) }
	res.Queries = delta("cdc_relay_db_queries_total", "relay")
	res.Sweeps = delta("cdc_relay_wakeups_total", "sweep")
	res.Keepalives = delta("cdc_relay_replication_messages_total", "keepalive")
	// Backends publish their counters when they go idle, at most once a second (else up to
	// 10 s later), so the count can be off by the transactions of the last few seconds.
	x1, err := e.xacts(ctx, name)
	if err != nil {
		return res, err
	}
	res.Transactions = x1 - x0
	sconn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer sconn.Close(context.WithoutCancel(ctx))
	slots, err := cdc.SlotLag(ctx, sconn, cdc.DefaultSlotPrefix)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrBench, err)
	}
	for _, s := range slots {
		if s.Database == name {
			res.Slots++
			res.SlotLag = max(res.SlotLag, s.LagBytes)
		}
	}
	if res.Slots == 0 {
		return res, fmt.Errorf("%w: no replication slot of the relay found after the idle period", ErrBench)
	}
	return res, nil
}

// waitProgressEmpty waits until the customer progress queue is empty (delivered rows
// acknowledged).
func (e *env) waitProgressEmpty(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(startTimeout)
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM data_sync_cust_progress_queue").Scan(&n); err != nil {
			return fmt.Errorf("%w: counting progress rows: %w", ErrBench, err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d delivered rows were never acknowledged", ErrBench, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// xacts returns xact_commit + xact_rollback of database db, read from a short-lived session of
// the admin database (so the reading itself is not counted in db).
func (e *env) xacts(ctx context.Context, db string) (int64, error) {
	conn, err := pgx.Connect(ctx, e.admin)
	if err != nil {
		return 0, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", db).Scan(&n); err != nil {
		return 0, fmt.Errorf("%w: reading pg_stat_database: %w", ErrBench, err)
	}
	return n, nil
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%w: finding a free port: %w", ErrBench, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// counters is one scrape of the relay's /metrics, by metric family name.
type counters map[string]*dto.MetricFamily

// get returns the sample of counter name whose label has the value value (0 when absent).
func (c counters) get(name, value string) float64 {
	for _, m := range c[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// scrapeCounters reads the relay's /metrics.
func scrapeCounters(ctx context.Context, addr string) (counters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBench, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: scraping the relay's metrics: %w", ErrBench, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the relay's metrics: %w", ErrBench, err)
	}
	return fams, nil
}
