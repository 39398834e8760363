package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// arrival is one message the receiver accepted: when its request arrived and which relay
// process sent it (the daemon's User-Agent names its pid).
type arrival struct {
	at  time.Time
	pid int
	id  string
}

// senderLog keeps every arrival with its sender, for the one-deliverer checks.
type senderLog struct {
	mu  sync.Mutex
	all []arrival
}

func (h *senderLog) add(m receiver.Received) {
	if m.Sample {
		return
	}
	h.mu.Lock()
	h.all = append(h.all, arrival{at: m.At, pid: senderPID(m.UserAgent), id: m.Message.UniqueID})
	h.mu.Unlock()
}

// byPID counts the arrivals sent by pid.
func (h *senderLog) byPID(pid int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, a := range h.all {
		if a.pid == pid {
			n++
		}
	}
	return n
}

// sorted returns the arrivals in arrival order.
func (h *senderLog) sorted() []arrival {
	h.mu.Lock()
	out := append([]arrival(nil), h.all...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// overlap checks that old stopped sending before successor started: it returns the arrivals
// from old at or after successor's first one, and the pids seen that are neither.
func (h *senderLog) overlap(old, successor int) (late []arrival, first time.Time, strangers []int) {
	seen := map[int]bool{}
	for _, a := range h.sorted() {
		switch {
		case a.pid == successor:
			if first.IsZero() {
				first = a.at
			}
		case a.pid == old:
			if !first.IsZero() {
				late = append(late, a)
			}
		default:
			if !seen[a.pid] {
				seen[a.pid] = true
				strangers = append(strangers, a.pid)
			}
		}
	}
	return late, first, strangers
}

// newLeaderEnv is newEnv with every arrival's sender recorded.
func newLeaderEnv(t *testing.T) (*env, *senderLog) {
	h := &senderLog{}
	e := newEnv(t, envOptions{onMessage: h.add})
	return e, h
}

// waitLeader waits until the relay process p holds the leadership (data_sync_leader names it).
func (e *env) waitLeader(p *relayProc, d time.Duration) {
	e.t.Helper()
	suffix := fmt.Sprintf("%% pid %d", p.cmd.Process.Pid)
	ok := waitFor(d, func() bool {
		n, err := e.queryInt(`SELECT count(*) FROM data_sync_leader WHERE holder LIKE $1 AND holder_pid IS NOT NULL`, suffix)
		return err == nil && n == 1
	})
	if !ok {
		e.t.Fatalf("relay pid %d did not take the leadership within %s; output:\n%s", p.cmd.Process.Pid, d, tail(p.output(), 4000))
	}
}

// startPair starts two relays, waits until the first leads and the second waits as standby.
func (e *env) startPair() (leader, standby *relayProc) {
	e.t.Helper()
	leader = e.startRelay()
	e.waitLeader(leader, time.Minute)
	standby = e.startRelay()
	standby.waitLog(time.Minute, "waiting as standby")
	return leader, standby
}

// load commits total changes to customers from two writers until done or ctx ends.
func (e *env) load(ctx context.Context, customers []int64, total int) (*writer, <-chan struct{}) {
	w := &writer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runWorkers(ctx, e.dbURL, customers, total, 2, 0, 2)
	}()
	return w, done
}

// startPairUnderLoad creates 300 customers, starts a leader and a standby (startPair), and has
// two writers commit total changes to the customers until done or ctx ends (load); it returns
// once the leader has delivered 100 messages.
func (e *env) startPairUnderLoad(ctx context.Context, hist *senderLog, total int) (leader, standby *relayProc, w *writer, written <-chan struct{}) {
	e.t.Helper()
	customers := e.createCustomers(300)
	leader, standby = e.startPair()
	w, written = e.load(ctx, customers, total)
	require.True(e.t, waitFor(2*time.Minute, func() bool { return hist.byPID(leader.cmd.Process.Pid) >= 100 }), "the leader delivered nothing")
	return leader, standby, w, written
}

// checkDelivered checks the committed changes against the receiver: none lost, first deliveries
// in order per key.
func (e *env) checkDelivered(w *writer) verdict {
	e.t.Helper()
	w.resolveUncertain(e)
	w.mu.Lock()
	changes := append([]change(nil), w.committed...)
	w.mu.Unlock()
	v := e.rec.verify(changes)
	require.Zero(e.t, v.Lost, "lost changes, first: %v", v.LostIDs)
	require.Zero(e.t, v.OrderViolations, "per-key order broken: %v", v.OrderExamples)
	return v
}

// The leader's presence session is ended by the server while its process lives on, under load.
// The receiver's senderLog, grouped by the sending process, shows the old leader stopped before
// the new one started: never two relays sending at once. Nothing is lost, order per key holds.
func TestLeaderSessionTerminatedOneSenderAtATime(t *testing.T) {
	t.Parallel()
	e, hist := newLeaderEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	total := scaled(1500, 600)
	a, b, w, written := e.startPairUnderLoad(ctx, hist, total)
	aPID, bPID := a.cmd.Process.Pid, b.cmd.Process.Pid

	n, err := e.queryInt(`SELECT count(pg_terminate_backend(holder_pid)) FROM data_sync_leader WHERE holder_pid IS NOT NULL`)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	e.waitLeader(b, time.Minute)
	require.False(t, a.exited(), "the old leader's process must live on for this test")
	require.True(t, waitFor(2*time.Minute, func() bool { return hist.byPID(bPID) >= 100 }), "the new leader delivered nothing")

	<-written
	require.GreaterOrEqual(t, w.count(), total)
	e.waitDrained(b, w.ids(), 3*time.Minute)
	v := e.checkDelivered(w)

	late, first, strangers := hist.overlap(aPID, bPID)
	require.Empty(t, strangers, "arrivals from unknown senders")
	for i, l := range late {
		if i < 5 {
			t.Logf("relay pid %d sent id %s at %s, %s after relay pid %d's first arrival", aPID, l.id, l.at.Format(time.RFC3339Nano), l.at.Sub(first), bPID)
		}
	}
	require.Empty(t, late, "two relays delivered at the same time: %d arrivals from the old leader after the new leader's first", len(late))
	a.waitLog(time.Minute, "no longer leads")
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		FaultsInjected: 1, MaxRSSKiB: max(a.MaxRSS(), b.MaxRSS()), Notes: "leader presence session terminated under load"})
	a.stop()
	b.stop()
}

// kill -9 of the leader: the standby takes over and delivers everything. The failover time is
// measured and printed (kill to the standby's first arrival at the receiver), not asserted.
func TestLeaderKilledStandbyTakesOver(t *testing.T) {
	t.Parallel()
	e, hist := newLeaderEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, w, written := e.startPairUnderLoad(ctx, hist, scaled(1000, 400))
	aPID, bPID := a.cmd.Process.Pid, b.cmd.Process.Pid

	a.kill()
	killed := time.Now()
	e.waitLeader(b, time.Minute)
	tookOver := time.Now()
	require.True(t, waitFor(2*time.Minute, func() bool { return hist.byPID(bPID) > 0 }), "the standby delivered nothing")
	_, first, _ := hist.overlap(aPID, bPID)
	t.Logf("failover after kill -9: standby's first message arrived %s after the kill (leadership seen taken over by %s)",
		first.Sub(killed).Round(time.Millisecond), tookOver.Sub(killed).Round(time.Millisecond))

	<-written
	e.waitDrained(b, w.ids(), 3*time.Minute)
	v := e.checkDelivered(w)
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		KillsSurvived: 1, MaxRSSKiB: max(a.MaxRSS(), b.MaxRSS()),
		Notes: fmt.Sprintf("kill -9 of the leader; first standby arrival %s after the kill", first.Sub(killed).Round(time.Millisecond))})
	b.stop()
}

// A database user outside cdc_relay takes every advisory lock it likes and tries to take or
// lock the leader row: it is refused, and the relay leads and delivers regardless.
func TestLeaderPlainUserCannotBlockLeadership(t *testing.T) {
	t.Parallel()
	e, _ := newLeaderEnv(t)
	customers := e.createCustomers(20)
	role := fmt.Sprintf("plain_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	e.exec(`CREATE ROLE ` + pgx.Identifier{role}.Sanitize() + ` LOGIN`)
	t.Cleanup(func() { e.exec(`DROP ROLE IF EXISTS ` + pgx.Identifier{role}.Sanitize()) })
	u, err := url.Parse(e.dbURL)
	require.NoError(t, err)
	u.User = url.User(role)
	ctx := context.Background()
	plain, err := pgx.Connect(ctx, u.String())
	require.NoError(t, err)
	defer plain.Close(ctx)

	// Session advisory locks over a wide range of keys, both key spaces, held while the relay runs.
	_, err = plain.Exec(ctx, `SELECT pg_advisory_lock(k) FROM generate_series(7240113000::bigint, 7240113100::bigint) k`)
	require.NoError(t, err)
	_, err = plain.Exec(ctx, `SELECT pg_advisory_lock(k) FROM generate_series(1::bigint, 2000::bigint) k`)
	require.NoError(t, err)
	_, err = plain.Exec(ctx, `SELECT pg_advisory_lock(k, j) FROM generate_series(0, 40) k, generate_series(0, 40) j`)
	require.NoError(t, err)
	for _, stmt := range []string{
		`UPDATE data_sync_leader SET holder = 'intruder', holder_pid = pg_backend_pid(), lease_until = 'infinity', epoch = epoch + 1`,
		`SELECT 1 FROM data_sync_leader FOR SHARE`,
		`SELECT data_sync_leader_fence(0, interval '100 years')`,
		`BEGIN; LOCK TABLE data_sync_leader IN ACCESS EXCLUSIVE MODE`,
	} {
		_, err := plain.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: want a refusal, got %v", stmt, err)
		require.Equal(t, "42501", pgErr.Code, "%s: %v", stmt, err)
		_, _ = plain.Exec(ctx, `ROLLBACK`)
	}

	p := e.startRelay()
	w := &writer{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.run(wctx, e.dbURL, customers, 50, 2, 7)
	e.waitDrained(p, w.ids(), 2*time.Minute)
	e.waitLeader(p, time.Minute)
	e.checkDelivered(w)
	p.stop()
}
