package relay

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

// leaderEnv is one test's database for the leader tests.
type leaderEnv struct {
	t   *testing.T
	url string
	db  *pgxpool.Pool
}

func newLeaderEnv(t *testing.T) *leaderEnv {
	t.Helper()
	u := pgtest.NewDB(t)
	return &leaderEnv{t: t, url: u, db: pgtest.Pool(t, u)}
}

// leader returns a Leader named name that connects with connURL (the test's database URL when
// empty). Its standby announcements are sent to the returned channel.
func (e *leaderEnv) leader(name, connURL string, lease, grace time.Duration) (*Leader, chan string) {
	e.t.Helper()
	if connURL == "" {
		connURL = e.url
	}
	cc, err := pgx.ParseConfig(connURL)
	require.NoError(e.t, err)
	standby := make(chan string, 100)
	l, err := NewLeader(LeaderConfig{Name: name, Lease: lease, Grace: grace, Logger: zaptest.NewLogger(e.t),
		OnStandby: func(holder string, _ time.Time) { standby <- holder }}, cc)
	require.NoError(e.t, err)
	return l, standby
}

// acquire takes the leadership with l, released when the test ends.
func (e *leaderEnv) acquire(l *Leader) *Term {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term, err := l.Acquire(ctx)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { term.Release(context.Background()) })
	return term
}

// acquireAsync starts l.Acquire in the background; the term (or error) arrives on the channel.
func (e *leaderEnv) acquireAsync(l *Leader) <-chan *Term {
	out := make(chan *Term, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		term, err := l.Acquire(ctx)
		if err != nil {
			e.t.Errorf("acquire: %v", err)
			close(out)
			return
		}
		e.t.Cleanup(func() { term.Release(context.Background()) })
		out <- term
	}()
	return out
}

func (e *leaderEnv) holderPID() int {
	e.t.Helper()
	var pid *int
	require.NoError(e.t, e.db.QueryRow(context.Background(), `SELECT holder_pid FROM data_sync_leader`).Scan(&pid))
	require.NotNil(e.t, pid, "nobody holds the leadership")
	return *pid
}

func (e *leaderEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

func (e *leaderEnv) queueCust(key string) {
	e.t.Helper()
	_, err := e.db.Exec(context.Background(), `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ($1, 'DELETE')`, key)
	require.NoError(e.t, err)
}

// waitLockWait waits until a backend runs a statement containing marker and waits for a lock.
func (e *leaderEnv) waitLockWait(marker string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'
			AND pid <> pg_backend_pid()`, marker) > 0
	}, 30*time.Second, 5*time.Millisecond, "no backend waits for a lock in %q", marker)
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		require.True(t, ok, what)
		return v
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// The leader's presence session is ended while its process lives on: the leader notices at once
// (its term is lost before the standby, which waits out the grace, starts), a standby takes
// over with the next epoch, and the old leader's moves are fenced out.
func TestLeaderPresenceSessionEndedStandbyTakesOver(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 2*time.Second)
	b, bStandby := e.leader("relay-b", "", 30*time.Second, 2*time.Second)
	ta := e.acquire(a)
	require.Equal(t, int64(1), ta.Epoch())
	aPID := e.holderPID()
	tbc := e.acquireAsync(b)
	require.Equal(t, "relay-a", recv(t, bStandby, "b waiting as standby"))

	e.queueCust("1")
	_, err := e.db.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, aPID)
	require.NoError(t, err)
	tb := recv(t, tbc, "b taking over")
	// When the successor starts, the old leader has already stopped.
	require.ErrorIs(t, ta.Err(), ErrLeadershipLost, "the old leader did not notice the end of its presence session")
	require.ErrorIs(t, ta.Lost().Err(), context.Canceled)
	require.False(t, ta.Valid(time.Now()))
	require.Equal(t, int64(2), tb.Epoch())

	// The old leader's move moves nothing; the new leader's moves the row.
	_, err = NewStore(e.db).Move(context.Background(), queues[0], 10, true, ta)
	require.ErrorIs(t, err, ErrLeadershipLost)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_pending_queue`))
	rows, err := NewStore(e.db).Move(context.Background(), queues[0], 10, true, tb)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.True(t, tb.Valid(time.Now()))

	// A clean release gives the row up: the next relay needs no grace.
	tb.Release(context.Background())
	require.Equal(t, 0, e.count(`SELECT count(*) FROM data_sync_leader WHERE holder_pid IS NOT NULL OR holder IS NOT NULL`))
	require.NoError(t, tb.Err())
}

// A takeover that commits while the old leader's move waits for the leader row: the move then
// moves nothing (forced: the takeover's transaction is held open until the move waits).
func TestLeaderFenceTakeoverFirstMovesNothing(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	e.queueCust("7")

	tx, err := e.db.Begin(context.Background())
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(context.Background(), `UPDATE data_sync_leader SET epoch = epoch + 1, holder = 'other', holder_pid = pg_backend_pid()`)
	require.NoError(t, err)

	moved := make(chan error, 1)
	go func() {
		_, err := NewStore(e.db).Move(context.Background(), queues[0], 10, true, ta)
		moved <- err
	}()
	e.waitLockWait("data_sync_leader_fence")
	require.NoError(t, tx.Commit(context.Background()))
	require.ErrorIs(t, recv(t, moved, "the fenced move"), ErrLeadershipLost)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM data_sync_cust_pending_queue`))
	require.Equal(t, 0, e.count(`SELECT count(*) FROM data_sync_cust_progress_queue`))
	require.ErrorIs(t, ta.Err(), ErrLeadershipLost)
}

// A move of the old leader that began before the takeover: the takeover waits for it, and the
// successor finds the moved rows in progress (forced: the move's transaction is held open).
func TestLeaderFenceMoveFirstCommitsBeforeTakeover(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	b, bStandby := e.leader("relay-b", "", 30*time.Second, 0)
	ta := e.acquire(a)
	aPID := e.holderPID()
	e.queueCust("8")

	tx, err := e.db.Begin(context.Background())
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	got, err := NewStore(tx).Move(context.Background(), queues[0], 10, true, ta)
	require.NoError(t, err)
	require.Len(t, got, 1)

	tbc := e.acquireAsync(b)
	require.Equal(t, "relay-a", recv(t, bStandby, "b waiting as standby"))
	_, err = e.db.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, aPID)
	require.NoError(t, err)
	e.waitLockWait("holder_pid = pg_backend_pid()") // the takeover waits for the move
	require.NoError(t, tx.Commit(context.Background()))
	tb := recv(t, tbc, "b taking over")
	loaded, err := NewStore(e.db).Load(context.Background(), queues[0], 0, 10)
	require.NoError(t, err)
	require.Len(t, loaded, 1, "the successor finds the old leader's last move in progress")
	require.Equal(t, got[0].id, loaded[0].id)
	require.Equal(t, ta.Epoch()+1, tb.Epoch())
}

// A holder whose presence backend lives on but whose lease ran out (its host cut off) is taken
// over; a leader that cannot renew its lease stops by itself before it runs out.
func TestLeaderLeaseExpiry(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	_, err := e.db.Exec(context.Background(), `UPDATE data_sync_leader SET lease_until = now() - interval '1 second'`)
	require.NoError(t, err)
	b, _ := e.leader("relay-b", "", 30*time.Second, 0)
	tb := e.acquire(b)
	require.Equal(t, ta.Epoch()+1, tb.Epoch())
	_, err = NewStore(e.db).Move(context.Background(), queues[0], 10, true, ta)
	require.ErrorIs(t, err, ErrLeadershipLost)

	// Self-fence: the row is locked (as a database that cannot be reached would leave the
	// renewal hanging), so the watcher's renewal cannot complete; the term ends on its own.
	e2 := newLeaderEnv(t)
	c, _ := e2.leader("relay-c", "", time.Second, 0)
	tc := e2.acquire(c)
	tx, err := e2.db.Begin(context.Background())
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(context.Background(), `SELECT 1 FROM data_sync_leader FOR UPDATE`)
	require.NoError(t, err)
	select {
	case <-tc.Lost().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a leader that could not renew its lease did not stop")
	}
	require.ErrorIs(t, tc.Err(), ErrLeadershipLost)
	require.Contains(t, tc.Err().Error(), "lease")
	require.False(t, tc.Valid(time.Now()))
}

// Moves renew the lease when it is due, so a relay that moves at least every quarter lease
// never sends a renewal of its own; the lease in the row moves forward.
func TestLeaderLeaseRidesOnMoves(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	cc, err := pgx.ParseConfig(e.url)
	require.NoError(t, err)
	var presenceStatements atomic.Int64
	cc.Tracer = countTracer{&presenceStatements}
	// The lease leaves the watcher's renewal 0.15 of it (0.9 s) to complete: with a 2 s lease
	// (0.3 s) a renewal delayed by a busy machine ended the term, and the test with it.
	l, err := NewLeader(LeaderConfig{Name: "relay-a", Lease: 6 * time.Second, Logger: zaptest.NewLogger(t)}, cc)
	require.NoError(t, err)
	ta := e.acquire(l)
	after := presenceStatements.Load() // SET and the takeover
	var first time.Time
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT lease_until FROM data_sync_leader`).Scan(&first))
	tick := time.NewTicker(100 * time.Millisecond) // the relay's moves: far more often than 3/4 lease
	defer tick.Stop()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-tick.C { // moves renew after 1.5 s
		_, err := NewStore(e.db).Move(context.Background(), queues[0], 10, true, ta)
		require.NoError(t, err)
	}
	require.NoError(t, ta.Err())
	require.True(t, ta.Valid(time.Now()))
	require.Equal(t, after, presenceStatements.Load(), "the presence session renewed the lease although moves did")
	var last time.Time
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT lease_until FROM data_sync_leader`).Scan(&last))
	require.True(t, last.After(first), "moves did not renew the lease")

	// Without moves the watcher renews it and the term goes on past the lease.
	renewedBefore := presenceStatements.Load()
	require.Eventually(t, func() bool { return presenceStatements.Load() > renewedBefore+1 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, ta.Err())
}

type countTracer struct{ n *atomic.Int64 }

func (c countTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (countTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Two relays logged in as different members of cdc_relay: the standby sees the leader's backend
// in pg_stat_activity (its pid, though not its query), waits while it lives, and takes over
// once it is gone.
func TestLeaderAcrossLoginsOfCdcRelay(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1e9)
	login := func(name string) string {
		role := "leader_" + name + "_" + suffix
		pgtest.Exec(t, e.url, `CREATE ROLE `+pgx.Identifier{role}.Sanitize()+` LOGIN IN ROLE cdc_relay`)
		t.Cleanup(func() {
			e.db.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize())
		})
		u, err := url.Parse(e.url)
		require.NoError(t, err)
		u.User = url.User(role)
		return u.String()
	}
	aURL, bURL := login("a"), login("b")
	a, _ := e.leader("relay-a", aURL, 30*time.Second, 0)
	b, bStandby := e.leader("relay-b", bURL, 30*time.Second, 0)
	ta := e.acquire(a)
	aPID := e.holderPID()

	bconn, err := pgx.Connect(context.Background(), bURL)
	require.NoError(t, err)
	defer bconn.Close(context.Background())
	var seen int
	var query *string
	require.NoError(t, bconn.QueryRow(context.Background(), `SELECT count(*), min(query) FROM pg_stat_activity WHERE pid = $1`, aPID).Scan(&seen, &query))
	require.Equal(t, 1, seen, "another login's backend pid is not visible to a cdc_relay member")
	require.True(t, query == nil || strings.Contains(*query, "insufficient privilege"), "query text of another login visible: %v", query)

	tbc := e.acquireAsync(b)
	require.Equal(t, "relay-a", recv(t, bStandby, "b waiting as standby"))
	_, err = e.db.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, aPID)
	require.NoError(t, err)
	tb := recv(t, tbc, "b taking over")
	require.Equal(t, ta.Epoch()+1, tb.Epoch())
	require.ErrorIs(t, ta.Err(), ErrLeadershipLost)
}

// An install older than the relay (no fence function) is refused with the fix, and the row is
// not taken.
func TestLeaderRefusesAnInstallWithoutTheFence(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	pgtest.Exec(t, e.url, `DROP FUNCTION data_sync_leader_fence(bigint, interval)`)
	l, _ := e.leader("relay-a", "", 30*time.Second, 0)
	_, err := l.Acquire(context.Background())
	require.ErrorIs(t, err, ErrSettings)
	require.ErrorContains(t, err, "run cdc-relay install")
	require.Equal(t, 0, e.count(`SELECT count(*) FROM data_sync_leader WHERE holder_pid IS NOT NULL OR epoch <> 0`))
}

// A database-wide idle_session_timeout does not end the presence session, which is idle by
// design: an idle connection with the same defaults is ended by the server, the term goes on.
func TestLeaderPresenceOutlivesIdleSessionTimeout(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	cc, err := pgx.ParseConfig(e.url)
	require.NoError(t, err)
	pgtest.Exec(t, e.url, `ALTER DATABASE `+pgx.Identifier{cc.Database}.Sanitize()+` SET idle_session_timeout = '300ms'`)
	a, _ := e.leader("relay-a", "", 30*time.Second, 0)
	ta := e.acquire(a)
	idle, err := pgx.Connect(context.Background(), e.url)
	require.NoError(t, err)
	defer idle.Close(context.Background())
	require.Eventually(t, func() bool {
		return idle.PgConn().WaitForNotification(context.Background()) != nil // the server's FATAL
	}, 30*time.Second, time.Millisecond)
	require.NoError(t, ta.Err(), "the presence session was ended by idle_session_timeout")
	require.True(t, ta.Valid(time.Now()))
	_, err = NewStore(e.db).Move(context.Background(), queues[0], 10, true, ta)
	require.NoError(t, err)
}

// blockingPoster holds its first request until its context ends, as a receiver that never
// answers; later requests are answered 200.
type blockingPoster struct {
	started   chan struct{}
	cancelled chan struct{}
	calls     atomic.Int64
}

func (p *blockingPoster) Post(ctx context.Context, _ []byte) (Response, error) {
	if p.calls.Add(1) > 1 {
		return Response{Status: 200}, nil
	}
	select {
	case p.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	select {
	case p.cancelled <- struct{}{}:
	default:
	}
	return Response{}, ctx.Err()
}

// A relay whose presence session ends cancels its requests in flight at once, not after
// ShutdownTimeout (five minutes here): a successor may be about to send the same keys.
func TestRelayLosingLeadershipCancelsRequestsInFlight(t *testing.T) {
	t.Parallel()
	e := newLeaderEnv(t)
	pgtest.Exec(t, e.url, `UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/datasync' WHERE name = 'DataSyncApiUrl';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/token' WHERE name = 'DataSyncTokenUrl';`)
	e.queueCust("42")
	p := &blockingPoster{started: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
	r, err := New(Config{SweepInterval: time.Hour, ShutdownTimeout: 5 * time.Minute, Logger: zaptest.NewLogger(t)}, e.db,
		func(context.Context, Settings) (Poster, func(), error) { return p, func() {}, nil }, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay: %v", err)
			}
		case <-time.After(6 * time.Minute):
			t.Errorf("the relay did not stop")
		}
	})

	recv(t, p.started, "a request in flight")
	_, err = e.db.Exec(context.Background(), `SELECT pg_terminate_backend(holder_pid) FROM data_sync_leader`)
	require.NoError(t, err)
	recv(t, p.cancelled, "the request in flight cancelled")
}
