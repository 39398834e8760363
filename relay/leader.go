package relay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Leadership rests on the row data_sync_leader, which only its owner and cdc_relay may update
// (docs/leadership.md explains the design and its limits):
//
//   - A leader holds a presence connection of its own (not from the pool) whose backend pid is
//     the row's holder_pid. Between statements it sits in a blocking read, so the FATAL the
//     server sends before it ends the session (pg_terminate_backend, idle_session_timeout) or
//     the connection's loss is seen at once: the term ends, which cancels every request in
//     flight and stops moving and sending.
//   - A standby polls with one statement that takes the row over when its holder's backend is
//     gone from pg_stat_activity or its lease has expired, and bumps the epoch.
//   - Every statement that changes queue state runs data_sync_leader_fence(epoch, ...) in its
//     own transaction: it share-locks the row (the takeover must wait for it) and fails with
//     SQLSTATE CR001 once the epoch moved on. The fence also renews the lease when it is due,
//     so an idle relay sends no extra statement for it.
//   - A leader that could not renew its lease stops by itself before the lease runs out.

// ErrLeadershipLost marks the end of a term this relay did not choose: its presence session
// ended, its lease ran out, or a fenced statement found another relay's epoch.
var ErrLeadershipLost = errors.New("leadership lost")

// fenceErrCode is the SQLSTATE data_sync_leader_fence raises when the epoch is not current.
const fenceErrCode = "CR001"

// leaderPoll is how often a standby tries to take over.
const leaderPoll = 100 * time.Millisecond

// LeaderConfig tunes a Leader. Zero values take the documented defaults.
type LeaderConfig struct {
	// Name is written as the holder, for standbys' logs and status. Default "<host> pid <pid>".
	Name string
	// Lease is how long a leader counts as leader without renewing its lease (what a standby
	// waits when the leader's host is cut off and no FATAL reaches anyone). Default 60s.
	Lease time.Duration
	// Grace is how long a new leader waits before it starts when the previous holder's process
	// may still be alive (its presence session ended, or its lease ran out), so that it has
	// noticed and cancelled its requests. Default 250ms.
	Grace time.Duration
	// OnStandby is called when this relay waits as standby and whenever the holder it waits
	// behind changes.
	OnStandby func(holder string, since time.Time)
	// Logger receives structured logs; default zap.NewNop().
	Logger *zap.Logger
}

func (c LeaderConfig) withDefaults() LeaderConfig {
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s pid %d", host, os.Getpid())
	}
	if c.Lease == 0 {
		c.Lease = 60 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// checkLeaderTimes checks a lease and a grace period.
func checkLeaderTimes(lease, grace time.Duration) error {
	if lease < 100*time.Millisecond {
		return fmt.Errorf("%w: leader lease %s: use at least 100ms", ErrConfig, lease)
	}
	if grace < 0 || grace >= lease {
		return fmt.Errorf("%w: leader grace %s: use 0 or more and less than the leader lease %s", ErrConfig, grace, lease)
	}
	return nil
}

// Leader takes and keeps leadership for one relay process. Create it with NewLeader; each
// Acquire starts a term on a fresh presence connection.
type Leader struct {
	cfg     LeaderConfig
	connCfg *pgx.ConnConfig
}

// NewLeader returns a Leader that opens its presence connections with connCfg (a copy is kept).
func NewLeader(cfg LeaderConfig, connCfg *pgx.ConnConfig) (*Leader, error) {
	cfg = cfg.withDefaults()
	if err := checkLeaderTimes(cfg.Lease, cfg.Grace); err != nil {
		return nil, err
	}
	if connCfg == nil {
		return nil, fmt.Errorf("%w: no database connection settings for the leader's presence session", ErrConfig)
	}
	return &Leader{cfg: cfg, connCfg: connCfg.Copy()}, nil
}

// Acquire waits as standby until this relay leads, then returns the term. It returns an error
// when ctx ends or the database fails (the caller starts again).
func (l *Leader) Acquire(ctx context.Context) (*Term, error) {
	conn, err := pgx.ConnectConfig(ctx, l.connCfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("opening the leader presence session: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	presence := NewStore(conn)
	if err := presence.KeepPresence(ctx); err != nil {
		return nil, err
	}
	var (
		lastHolder string
		lastSince  time.Time
		announced  bool
	)
	for {
		sent := time.Now()
		took, err := presence.TakeLeadership(ctx, l.cfg.Name, l.cfg.Lease)
		if err != nil {
			return nil, err
		}
		if took.epoch != nil {
			t := newTerm(ctx, l, conn, presence, *took.epoch, sent)
			ok = true
			prev := ""
			if took.holder != nil {
				prev = *took.holder
			}
			if took.holderPID != nil && *took.holderPID != took.ownPID && l.cfg.Grace > 0 {
				// The previous holder's process may live on: give it the time to see its session
				// end and cancel its requests before this relay sends anything.
				l.cfg.Logger.Info("took over the leadership; waiting for the previous leader to stop",
					zap.String("previous", prev), zap.Int64("epoch", *took.epoch), zap.Duration("grace", l.cfg.Grace))
				select {
				case <-ctx.Done():
					t.Release(context.WithoutCancel(ctx))
					return nil, ctx.Err()
				case <-t.lost.Done():
					t.Release(context.WithoutCancel(ctx))
					return nil, context.Cause(t.lost)
				case <-time.After(l.cfg.Grace):
				}
			}
			l.cfg.Logger.Info("leading", zap.Int64("epoch", *took.epoch), zap.String("previous", prev))
			return t, nil
		}
		h, s := "", time.Time{}
		if took.holder != nil {
			h = *took.holder
		}
		if took.since != nil {
			s = *took.since
		}
		if !announced || h != lastHolder || !s.Equal(lastSince) {
			announced, lastHolder, lastSince = true, h, s
			l.cfg.Logger.Info("another cdc-relay is delivering from this database; waiting as standby",
				zap.String("leader", h), zap.Time("since", s))
			if l.cfg.OnStandby != nil {
				l.cfg.OnStandby(h, s)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(leaderPoll):
		}
	}
}

// Term is one period of leadership. Its Context ends when the caller's context ends or the
// leadership is lost; Lost ends only in the second case.
type Term struct {
	l        *Leader
	conn     *pgx.Conn // the presence session
	presence *Store    // the statements on it
	epoch    int64

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   context.Context
	lose   context.CancelCauseFunc
	stop   context.CancelFunc // ends the watcher (Release)
	done   chan struct{}      // closed when the watcher has returned

	mu        sync.Mutex
	renewedAt time.Time // when the last successful renewal was sent
	released  bool
}

func newTerm(ctx context.Context, l *Leader, conn *pgx.Conn, presence *Store, epoch int64, sent time.Time) *Term {
	t := &Term{l: l, conn: conn, presence: presence, epoch: epoch, renewedAt: sent, done: make(chan struct{})}
	t.lost, t.lose = context.WithCancelCause(context.Background())
	t.ctx, t.cancel = context.WithCancelCause(ctx)
	context.AfterFunc(t.lost, func() { t.cancel(context.Cause(t.lost)) })
	watchCtx, stop := context.WithCancel(context.Background())
	t.stop = stop
	go t.watch(watchCtx)
	return t
}

// Epoch is the term's epoch (data_sync_leader.epoch when it began).
func (t *Term) Epoch() int64 { return t.epoch }

// Context ends when the caller's context ends or the leadership is lost.
func (t *Term) Context() context.Context { return t.ctx }

// Lost ends as soon as the leadership is lost; its cause says why.
func (t *Term) Lost() context.Context { return t.lost }

// Err is why the leadership was lost (wrapping ErrLeadershipLost), or nil.
func (t *Term) Err() error {
	if t.lost.Err() == nil {
		return nil
	}
	return context.Cause(t.lost)
}

// Valid reports whether the term still holds at now: not lost, and its lease, as this process
// counts it, not run out. A relay checks it before each request it starts.
func (t *Term) Valid(now time.Time) bool {
	return t.lost.Err() == nil && now.Before(t.expiry())
}

// Lease fractions: a fenced statement renews the lease once a quarter of it has passed, the
// watcher renews it itself after three quarters (when no statement did), and the term ends
// after nine tenths (the rest is the margin for the clocks of the relay and the server).
func (t *Term) renewDue(now time.Time) bool { return !now.Before(t.renewed().Add(t.l.cfg.Lease / 4)) }
func (t *Term) watcherRenewAt() time.Time   { return t.renewed().Add(t.l.cfg.Lease * 3 / 4) }
func (t *Term) expiry() time.Time           { return t.renewed().Add(t.l.cfg.Lease * 9 / 10) }

func (t *Term) renewed() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.renewedAt
}

func (t *Term) setRenewed(sent time.Time) {
	t.mu.Lock()
	if sent.After(t.renewedAt) {
		t.renewedAt = sent
	}
	t.mu.Unlock()
}

// loseWith ends the term with cause (wrapped in ErrLeadershipLost).
func (t *Term) loseWith(cause error) {
	if t.lost.Err() != nil {
		return
	}
	t.l.cfg.Logger.Warn("this relay no longer leads; stopping delivery", zap.Int64("epoch", t.epoch), zap.Error(cause))
	t.lose(fmt.Errorf("%w: %w", ErrLeadershipLost, cause))
}

// watch sits in a blocking read on the presence connection (nothing is expected: any message
// or error there is the session ending), renews the lease when no fenced statement did, and
// ends the term when the lease would run out.
func (t *Term) watch(ctx context.Context) {
	defer close(t.done)
	for ctx.Err() == nil {
		now := time.Now()
		if expiry := t.expiry(); !now.Before(expiry) {
			t.loseWith(fmt.Errorf("its lease was not renewed for %s", now.Sub(t.renewed()).Round(time.Millisecond)))
			return
		}
		if renewAt := t.watcherRenewAt(); !now.Before(renewAt) {
			rctx, cancel := context.WithDeadline(ctx, t.expiry())
			sent := time.Now()
			err := t.presence.RenewLease(rctx, t.epoch, t.l.cfg.Lease)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				t.loseWith(err)
				return
			}
			t.setRenewed(sent)
			continue
		}
		wctx, cancel := context.WithDeadline(ctx, t.watcherRenewAt())
		err := t.conn.PgConn().WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !(timedOut && pgconn.Timeout(err)) {
			t.loseWith(fmt.Errorf("its presence session ended: %w", err))
			return
		}
	}
}

// fence returns the arguments of data_sync_leader_fence for one statement: the epoch and, when
// the lease is due for renewal, the lease. Call done with the statement's error when it ends.
func (t *Term) fence() fence {
	now := time.Now()
	f := fence{t: t, epoch: t.epoch, sent: now}
	if t.renewDue(now) {
		lease := t.l.cfg.Lease
		f.renew = &lease
	}
	return f
}

// fence is one fenced statement's view of the term.
type fence struct {
	t     *Term
	epoch int64
	renew *time.Duration // nil: no renewal
	sent  time.Time
}

// done records the outcome of the fenced statement: a renewal, or the loss of the leadership.
func (f fence) done(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		if f.renew != nil {
			f.t.setRenewed(f.sent)
		}
	case errors.As(err, &pgErr) && pgErr.Code == fenceErrCode:
		f.t.loseWith(err)
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	}
	return err
}

// Release ends the term: it stops the watcher, gives the row up (unless another relay holds it
// by now) and closes the presence session. Call it after every request of the term has ended.
func (t *Term) Release(ctx context.Context) {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.released = true
	t.mu.Unlock()
	t.stop()
	<-t.done
	t.cancel(context.Canceled)
	if !t.conn.IsClosed() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := t.presence.ReleaseLeadership(rctx, t.epoch); err != nil {
			t.l.cfg.Logger.Info("could not give the leadership up (a standby takes over when this session ends)", zap.Error(err))
		}
		cancel()
	}
	t.conn.Close(context.WithoutCancel(ctx))
}
