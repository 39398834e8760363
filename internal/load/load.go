// Package load is the project's one generator of CE activity: it writes customers, cards,
// segments, posted transactions, merges and deletes through the capture triggers. A Mix says
// which operations are drawn; Config says how many sessions write, at what rate (or as fast as
// they can), on which customers, for how long, with which seed, and which hook hears about every
// COMMIT.
//
// Its users:
//   - `cdc-relay demo` and `cdc-relay load`: the CE mix at a steady rate, one session;
//   - the bench's latency scenario: Touches, paced, one timed autocommit change per tick, its
//     latency taken from Commit.Sent (just before the COMMIT);
//   - the fault suite: CapturedRenames as fast as it can, every queue row a transaction wrote
//     handed to OnCommit with the COMMIT's outcome;
//   - the history checker: the Interleaved mix from several sessions at once, its deletes'
//     commit instants taken from Commit.Returned.
//
// The trigger-cost measurement (internal/triggerbench) is not a user: its pgbench scripts are a
// measurement harness whose statements stay fixed so that its figures compare across variants
// and runs.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"
)

// Unlimited is the Config.Rate of a run whose workers write as fast as they can.
var Unlimited = math.Inf(1)

// Config tunes a Generator. The zero value (with DatabaseURL) is `cdc-relay load`'s default:
// the CE mix at 50 operations a second from one session, after creating 100 customers.
type Config struct {
	// DatabaseURL is the CE database; every worker opens its own session to it.
	DatabaseURL string
	// ConfigureConn, when set, adjusts each session's settings before it connects.
	ConfigureConn func(*pgx.ConnConfig)
	// Mix is the operations drawn; default CE().
	Mix Mix
	// Rate is operations per second over all workers (default 50): a pacer hands numbered
	// ticks (Session.Tick) to whichever worker is free. Unlimited lets every worker go as fast
	// as it can.
	Rate float64
	// Workers is how many sessions write at once (default 1).
	Workers int
	// IDs are the customers the operations work on; creates add to them, merges and deletes
	// take from them. When empty, Customers customers (default 100) are created first.
	IDs       []int64
	Customers int
	// Ops ends the run after this many operations (0: no limit). A paced run with Ops hands out
	// every tick, a late one as soon as a worker is free; an open-ended paced run drops the
	// ticks no worker was free for, so it never bursts to catch up.
	Ops int
	// Duration ends the run after this long (0: when ctx ends).
	Duration time.Duration
	// Done, when set, is asked before each operation: a worker stops once it returns true.
	Done func() bool
	// Seed makes the random choices repeatable: worker w draws from PCG(Seed, w). 0 picks one.
	Seed uint64
	// Start is where each worker's own counter (Session.N) starts: worker w at
	// Start + w × 1,000,003, so workers that walk the customers in a stride start far apart.
	Start int64
	// KeepGoing counts a failed operation or connection (Stats) and goes on, reconnecting when
	// the session broke. By default the first failure ends Run with it.
	KeepGoing bool
	// OnCommit is called by the worker after every COMMIT an operation sent (for a single
	// autocommit statement: after the statement), with what the transaction changed and the
	// COMMIT's outcome; concurrently when Workers > 1.
	OnCommit func(Commit)
}

// Commit is one COMMIT an operation sent.
type Commit struct {
	Op     string
	Worker int
	Tick   int64 // Session.Tick of the operation (0 in an unpaced run)
	// Sent is just before the COMMIT (or the autocommit statement) was sent; Returned is when
	// its answer, or its failure, came back.
	Sent, Returned time.Time
	// Err is nil when the transaction committed. Otherwise the COMMIT failed and whether it
	// committed is unknown (a restart may have lost the answer only).
	Err error
	// Rows are the queue rows the transaction wrote, for operations that read them back.
	Rows []QueueRow
	// Deleted are the customers the transaction deleted (a delete, both sides of a merge).
	Deleted []int64
	// Tally is what the operation counts besides itself (TallySavepointsRolledBack, ...);
	// added to Stats.Tally when the transaction committed.
	Tally map[string]int
}

// QueueRow is one row a transaction wrote into a pending queue: its id (the message's
// uniqueId) and its key (customer id or retail transaction id).
type QueueRow struct {
	ID  int64
	Key string
}

// Stats are a run's counts so far.
type Stats struct {
	// Committed counts the operations that ended without an error, by operation name.
	Committed map[string]int64
	// Aborted counts failed operations by cause: the SQLSTATE, or "stopped" (the run ended
	// under it), "connection" (the session broke), "other".
	Aborted map[string]int64
	// ConnectFailures counts failed attempts to open a session.
	ConnectFailures int64
	// Tally sums Commit.Tally over committed transactions.
	Tally map[string]int64
}

// Total is the number of committed operations.
func (s Stats) Total() int64 { return sum(s.Committed) }

// Aborts is the number of failed operations.
func (s Stats) Aborts() int64 { return sum(s.Aborted) }

// Failures is the number of failed operations and connection attempts.
func (s Stats) Failures() int64 { return s.Aborts() + s.ConnectFailures }

// Causes lists Aborted as "cause×count", causes sorted.
func (s Stats) Causes() []string {
	keys := make([]string, 0, len(s.Aborted))
	for k := range s.Aborted {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s×%d", k, s.Aborted[k])
	}
	return out
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Generator writes CE activity; see Config.
type Generator struct {
	cfg       Config
	customers *Customers
	sessions  []*Session
	seq       atomic.Int64
	claimed   atomic.Int64

	mu             sync.Mutex
	stats          Stats
	started, ended time.Time
	connCfg        *pgx.ConnConfig
}

// Session timing bounds.
const (
	connectTimeout = 5 * time.Second
	reconnectPause = 100 * time.Millisecond // between failed connection attempts
	// txTimeout bounds one operation's transaction: one hung on a lock or a server that went
	// away fails instead of stopping its worker.
	txTimeout = 20 * time.Second
	// startSpread separates the workers' own counters (Config.Start).
	startSpread = 1_000_003
)

// New returns a Generator; Run (or Open) connects.
func New(cfg Config) *Generator {
	if cfg.Mix.Ops == nil {
		cfg.Mix = CE()
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 50
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Customers <= 0 {
		cfg.Customers = 100
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	g := &Generator{cfg: cfg, customers: newCustomers(cfg.IDs),
		stats: Stats{Committed: map[string]int64{}, Aborted: map[string]int64{}, Tally: map[string]int64{}}}
	for w := range cfg.Workers {
		g.sessions = append(g.sessions, &Session{Worker: w, Customers: g.customers, N: cfg.Start + int64(w)*startSpread,
			Rand: rand.New(rand.NewPCG(cfg.Seed, uint64(w))), g: g})
	}
	return g
}

// Open connects every worker's session, one after the other. Run does it itself; a caller
// opens first to use the sessions (Conn) before the run starts. With KeepGoing a session that
// cannot connect now is retried by its worker.
func (g *Generator) Open(ctx context.Context) error {
	if g.connCfg == nil {
		cc, err := pgx.ParseConfig(g.cfg.DatabaseURL)
		if err != nil {
			return fmt.Errorf("parsing the database URL: %w", err)
		}
		if g.cfg.ConfigureConn != nil {
			g.cfg.ConfigureConn(cc)
		}
		g.connCfg = cc
	}
	for _, s := range g.sessions {
		if s.Conn != nil {
			continue
		}
		if err := s.connect(ctx); err != nil && !g.cfg.KeepGoing {
			return err
		}
	}
	return nil
}

// Conn returns worker w's session (nil before Open, or while it reconnects).
func (g *Generator) Conn(w int) *pgx.Conn { return g.sessions[w].Conn }

// Close closes every session. Run closes them when it ends.
func (g *Generator) Close() {
	for _, s := range g.sessions {
		s.close()
	}
}

// Stats returns the counts so far; safe during Run.
func (g *Generator) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Stats{Committed: clone(g.stats.Committed), Aborted: clone(g.stats.Aborted),
		ConnectFailures: g.stats.ConnectFailures, Tally: clone(g.stats.Tally)}
}

func clone(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Total is the number of committed operations so far; safe during Run.
func (g *Generator) Total() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return sum(g.stats.Committed)
}

// Elapsed is the run's length: from the first tick (after the set-up and the starting
// customers) to the last worker's end.
func (g *Generator) Elapsed() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ended.Sub(g.started)
}

// Run opens the sessions, runs the Mix's set-up and creates the starting customers (on the
// first session), then writes until Ops, Duration or Done ends the run, or ctx ends; it
// returns nil then, and the first failure unless KeepGoing. It closes the sessions.
func (g *Generator) Run(ctx context.Context) error {
	if g.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Duration)
		defer cancel()
	}
	defer g.Close()
	if err := g.Open(ctx); err != nil {
		return ignoreDone(ctx, err)
	}
	if err := g.prepare(ctx); err != nil {
		return ignoreDone(ctx, err)
	}
	g.customers.initial = g.customers.Len()

	var ticks chan int64
	if !math.IsInf(g.cfg.Rate, 1) {
		ticks = make(chan int64, g.tickBuffer())
	}
	grp, gctx := errgroup.WithContext(ctx)
	for _, s := range g.sessions {
		grp.Go(func() error { return g.work(gctx, s, ticks) })
	}
	paceCtx, stopPacing := context.WithCancel(gctx)
	waited := make(chan error, 1)
	go func() {
		err := grp.Wait()
		stopPacing()
		waited <- err
	}()
	g.mu.Lock()
	g.started = time.Now()
	g.mu.Unlock()
	if ticks != nil {
		g.pace(paceCtx, ticks)
	}
	err := <-waited
	g.mu.Lock()
	g.ended = time.Now()
	g.mu.Unlock()
	return ignoreDone(ctx, err)
}

// prepare runs the Mix's set-up and creates the starting customers when no IDs were given.
func (g *Generator) prepare(ctx context.Context) error {
	if g.cfg.Mix.Setup == nil && len(g.cfg.IDs) > 0 {
		return nil
	}
	s := g.sessions[0]
	if s.Conn == nil {
		if err := s.connect(ctx); err != nil {
			return err
		}
	}
	if g.cfg.Mix.Setup != nil {
		if err := g.cfg.Mix.Setup(ctx, s.Conn); err != nil {
			return err
		}
	}
	if len(g.cfg.IDs) == 0 {
		for range g.cfg.Customers {
			if err := g.do(ctx, s, createOp); err != nil {
				return err
			}
		}
	}
	return nil
}

// tickBuffer is the pacer's queue: every tick of a bounded run (up to a limit), one tick of an
// open-ended run (a worker late for it finds the next one, as with a time.Ticker).
func (g *Generator) tickBuffer() int {
	if g.cfg.Ops > 0 {
		return min(g.cfg.Ops, 1<<16)
	}
	return 1
}

// pace hands out ticks 1, 2, ... on an absolute schedule (tick n+1 due n/Rate seconds after
// the start), until Ops ticks or ctx ends; then it closes ticks.
func (g *Generator) pace(ctx context.Context, ticks chan<- int64) {
	defer close(ticks)
	for n := int64(0); g.cfg.Ops == 0 || n < int64(g.cfg.Ops); n++ {
		due := g.started.Add(time.Duration(float64(n) / g.cfg.Rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if g.cfg.Ops > 0 {
			select {
			case ticks <- n + 1:
			case <-ctx.Done():
				return
			}
			continue
		}
		select {
		case ticks <- n + 1:
		default: // every worker is busy: this tick is skipped
		}
	}
}

// work is one worker: it draws and runs operations on its session until the run ends.
func (g *Generator) work(ctx context.Context, s *Session, ticks <-chan int64) error {
	for {
		if ctx.Err() != nil || (g.cfg.Done != nil && g.cfg.Done()) {
			return nil
		}
		if s.Conn == nil {
			if err := s.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if !g.cfg.KeepGoing {
					return err
				}
				select {
				case <-ctx.Done():
				case <-time.After(reconnectPause):
				}
				continue
			}
		}
		s.Tick = 0
		if ticks != nil {
			select {
			case <-ctx.Done():
				return nil
			case t, ok := <-ticks:
				if !ok {
					return nil
				}
				s.Tick = t
			}
		} else if g.cfg.Ops > 0 && g.claimed.Add(1) > int64(g.cfg.Ops) {
			return nil
		}
		if err := g.do(ctx, s, g.pick(s)); err != nil {
			if !g.cfg.KeepGoing {
				return err
			}
			if s.Conn.IsClosed() {
				s.close()
			}
		}
	}
}

// pick draws an operation by weight; when the one drawn is not allowed now, the next one in
// the Mix that is (wrapping around) runs instead.
func (g *Generator) pick(s *Session) Op {
	ops := g.cfg.Mix.Ops
	if len(ops) == 1 {
		return ops[0]
	}
	total := 0
	for _, op := range ops {
		total += op.Weight
	}
	p, i := s.Rand.IntN(total), 0
	for cum := ops[0].Weight; p >= cum; cum += ops[i].Weight {
		i++
	}
	live, initial := g.customers.Len(), g.customers.initial
	for k := range ops {
		op := ops[(i+k)%len(ops)]
		if op.When == nil || op.When(live, initial) {
			return op
		}
	}
	return ops[i]
}

// do runs one operation and counts its outcome.
func (g *Generator) do(ctx context.Context, s *Session, op Op) error {
	err := op.Run(ctx, s)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		g.stats.Committed[op.Name]++
		return nil
	}
	cause := "other"
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		cause = pe.Code
	case ctx.Err() != nil:
		cause = "stopped"
	case s.Conn.IsClosed():
		cause = "connection"
	}
	g.stats.Aborted[cause]++
	return err
}

func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Session is one worker's connection and state, handed to every operation it runs.
type Session struct {
	Conn      *pgx.Conn
	Rand      *rand.Rand
	Worker    int
	Customers *Customers
	// Tick is the number of this operation in a paced run's schedule (1, 2, ...); 0 unpaced.
	Tick int64
	// N is the worker's own counter, for operations that number their changes or walk the
	// customers in a stride; it starts at Config.Start + Worker × 1,000,003.
	N int64
	g *Generator
}

// Seq returns a number unique in the run (shared by the workers), for tags and keys.
func (s *Session) Seq() int64 { return s.g.seq.Add(1) }

func (s *Session) connect(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, s.g.connCfg.Copy())
	if err != nil {
		s.g.mu.Lock()
		s.g.stats.ConnectFailures++
		s.g.mu.Unlock()
		return fmt.Errorf("connecting to the database: %w", err)
	}
	s.Conn = c
	return nil
}

func (s *Session) close() {
	if s.Conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	s.Conn.Close(ctx)
	s.Conn = nil
}

// report hands c to Config.OnCommit and adds its tally when it committed.
func (s *Session) report(c Commit) {
	c.Worker, c.Tick = s.Worker, s.Tick
	if c.Err == nil && len(c.Tally) > 0 {
		s.g.mu.Lock()
		for k, v := range c.Tally {
			s.g.stats.Tally[k] += int64(v)
		}
		s.g.mu.Unlock()
	}
	if s.g.cfg.OnCommit != nil {
		s.g.cfg.OnCommit(c)
	}
}

// inTx runs fn in one transaction bounded by txTimeout, then commits it and reports c (which
// fn fills in) with the COMMIT's timing and outcome.
func (s *Session) inTx(ctx context.Context, op string, fn func(ctx context.Context, tx pgx.Tx, c *Commit) error) error {
	tctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	tx, err := s.Conn.Begin(tctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	c := Commit{Op: op}
	if err := fn(tctx, tx, &c); err != nil {
		return err
	}
	c.Sent = time.Now()
	err = tx.Commit(tctx)
	c.Returned, c.Err = time.Now(), err
	s.report(c)
	return err
}

// autocommit runs one statement in its own implicit transaction and reports it.
func (s *Session) autocommit(ctx context.Context, op, sql string, args ...any) error {
	c := Commit{Op: op, Sent: time.Now()}
	_, err := s.Conn.Exec(ctx, sql, args...)
	c.Returned, c.Err = time.Now(), err
	s.report(c)
	return err
}

// Customers is the set of live customers the workers share.
type Customers struct {
	mu      sync.Mutex
	ids     []int64
	initial int // the set's size when the steady run began
}

func newCustomers(ids []int64) *Customers {
	return &Customers{ids: append([]int64(nil), ids...)}
}

// Len is the number of live customers.
func (c *Customers) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

// Pick returns up to n distinct live customers drawn at random (fewer when the set is small).
func (c *Customers) Pick(rng *rand.Rand, n int) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int64
	for tries := 0; len(out) < n && tries < 10*n && len(c.ids) > 0; tries++ {
		id := c.ids[rng.IntN(len(c.ids))]
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// At returns the customer at position i modulo the set's size (the set must not be empty):
// walks through the customers in a fixed order.
func (c *Customers) At(i int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[i%int64(len(c.ids))]
}

// Add adds a new customer.
func (c *Customers) Add(id int64) {
	c.mu.Lock()
	c.ids = append(c.ids, id)
	c.mu.Unlock()
}

// Forget removes customers, so that no other worker picks them any more.
func (c *Customers) Forget(ids ...int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.ids[:0]
	for _, id := range c.ids {
		if !slices.Contains(ids, id) {
			kept = append(kept, id)
		}
	}
	c.ids = kept
}
