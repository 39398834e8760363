//go:build fault

package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// startWriters runs n writer sessions sharing one writer state until total changes are
// committed; the returned function waits for them.
func startWriters(ctx context.Context, e *env, w *writer, customers []int64, total, n, perTx int) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runWorkers(ctx, e.dbURL, customers, total, perTx, 0, n)
	}()
	return func() { <-done }
}

// checkVerdict asserts nothing was lost and first deliveries kept per-customer order.
func checkVerdict(t *testing.T, v verdict) {
	t.Helper()
	require.Zerof(t, v.Lost, "committed changes never delivered (first %v)", v.LostIDs)
	require.Zerof(t, v.OrderViolations, "per-customer order broken: %v", v.OrderExamples)
	require.Equal(t, v.Committed, v.Delivered)
}

// TestCrashes commits 20,000 changes (×CDC_FAULT_SCALE) through the triggers across 2,000
// customers while the relay is SIGKILLed at random instants 20 times and restarted. After the
// last run drains, every committed change arrived at least once and each customer's first
// deliveries came in queue order; duplicates are counted.
func TestCrashes(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(scaled(2000, 200))
	total, kills := scaled(20000, 2000), 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &writer{}
	writersDone := startWriters(ctx, e, w, customers, total, 2, 5)

	var maxRSS int64
	for k := range kills {
		p := e.startRelay()
		// Kill at a random instant once this run has delivered something new.
		before, _ := e.rec.stats()
		ok := waitFor(60*time.Second, func() bool {
			n, _ := e.rec.stats()
			return n > before || (w.count() >= total && mustQueued(t, e) == 0) || p.exited()
		})
		require.True(t, ok, "relay run %d delivered nothing within 60 s:\n%s", k, tail(p.output(), 4000))
		require.False(t, p.exited(), "relay exited by itself:\n%s", tail(p.output(), 4000))
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond) // the random kill instant (fault injection, not a wait)
		p.kill()
		maxRSS = max(maxRSS, p.MaxRSS())
	}
	p := e.startRelay()
	writersDone()
	require.GreaterOrEqual(t, w.count(), total, "writer failed: %d errors", w.errors)
	ids := w.ids()
	e.waitDrained(p, ids, 3*time.Minute)
	p.stop()
	require.NoError(t, p.err, "final relay did not stop cleanly:\n%s", tail(p.output(), 4000))
	maxRSS = max(maxRSS, p.MaxRSS())

	v := e.rec.verify(w.committed)
	_, allDups := e.rec.stats()
	t.Logf("crashes: committed %d, delivered %d, lost %d, duplicates %d (receiver-wide %d), kills %d, order violations %d, max RSS %d KiB",
		v.Committed, v.Delivered, v.Lost, v.Duplicates, allDups, kills, v.OrderViolations, maxRSS)
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		KillsSurvived: kills, FaultsInjected: kills, MaxRSSKiB: maxRSS,
		Notes: fmt.Sprintf("%d customers, 2 writers x 5 customers/tx", len(customers))})
	checkVerdict(t, v)
	require.Zero(t, e.failedRows(), "no row should be dead-lettered")
}

func mustQueued(t *testing.T, e *env) int64 {
	n, err := e.queued()
	if err != nil {
		return -1
	}
	return n
}

// terminateRelaySessions terminates every session of the test database except the writer's:
// the relay's pool (application_name cdc-relay) and its replication connection (walsender).
// It returns how many sessions, and how many walsenders, it terminated.
func terminateRelaySessions(t *testing.T, e *env) (sessions, walsenders int) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), e.dbURL)
	require.NoError(t, err)
	defer c.Close(context.Background())
	err = c.QueryRow(context.Background(), `
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)), count(*) FILTER (WHERE backend_type = 'walsender')
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (application_name = 'cdc-relay' OR backend_type = 'walsender')`).Scan(&sessions, &walsenders)
	require.NoError(t, err)
	return sessions, walsenders
}

// TestDatabaseRestarts stops PostgreSQL fast and immediate mid-run and terminates the relay's
// sessions (the replication connection included) with pg_terminate_backend, while a writer keeps
// committing. The relay recovers by itself and nothing committed is lost.
func TestDatabaseRestarts(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(scaled(500, 100))
	// The writer commits for the whole fault sequence (at least minTotal changes), so commits
	// overlap every restart and termination.
	minTotal := scaled(6000, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &writer{}
	writersDone := startWriters(ctx, e, w, customers, 1<<40, 1, 5)
	total := 1 << 40
	p := e.startRelay()

	progressed := func(what string) {
		t.Helper()
		before, _ := e.rec.stats()
		ok := waitFor(90*time.Second, func() bool {
			n, _ := e.rec.stats()
			return n >= before+50 || (w.count() >= total && mustQueued(t, e) == 0)
		})
		require.True(t, ok, "no deliveries after %s within 90 s:\n%s", what, tail(p.output(), 6000))
		require.False(t, p.exited(), "relay exited after %s:\n%s", what, tail(p.output(), 6000))
	}
	progressed("start")
	restarts, terminations, walTerminated := 0, 0, 0
	for _, mode := range []string{"fast", "immediate", "fast", "immediate"} {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		require.NoError(t, cluster.StopServer(sctx, mode))
		require.NoError(t, cluster.StartServer(sctx))
		scancel()
		restarts++
		progressed("a " + mode + " restart")
		// Wait for the doorbell to be back before terminating it.
		require.True(t, waitFor(60*time.Second, func() bool {
			n, err := e.queryInt(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'walsender'`)
			return err == nil && n > 0
		}), "replication connection not re-established after a %s restart:\n%s", mode, tail(p.output(), 4000))
		s, ws := terminateRelaySessions(t, e)
		terminations += s
		walTerminated += ws
		progressed("pg_terminate_backend")
	}
	require.True(t, waitFor(3*time.Minute, func() bool { return w.count() >= minTotal }), "writer stalled at %d commits", w.count())
	cancel()
	writersDone()
	resolved := w.resolveUncertain(e)
	ids := w.ids()
	e.waitDrained(p, ids, 3*time.Minute)
	require.False(t, p.exited(), "relay exited:\n%s", tail(p.output(), 4000))
	p.stop()
	var afters []string
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, "relay session ended") {
			if i := strings.Index(line, `"after":`); i >= 0 {
				afters = append(afters, strings.TrimRight(strings.SplitN(line[i+8:], ",", 2)[0], "}"))
			}
		}
	}
	t.Logf("relay session restarts and their logged backoff: %v", afters)
	v := e.rec.verify(w.committed)
	t.Logf("database restarts: %d restarts, %d sessions terminated (%d walsenders), writer errors %d, uncertain commits found committed %d; committed %d delivered %d lost %d dups %d",
		restarts, terminations, walTerminated, w.errors, resolved, v.Committed, v.Delivered, v.Lost, v.Duplicates)
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		RestartsSurvived: restarts, FaultsInjected: restarts + terminations, MaxRSSKiB: p.MaxRSS(),
		Notes: fmt.Sprintf("2 fast + 2 immediate stops; 4 rounds of pg_terminate_backend (%d sessions, %d walsenders)", terminations, walTerminated)})
	require.GreaterOrEqual(t, walTerminated, 4, "the replication connection should have been terminated each round")
	checkVerdict(t, v)
}

// TestReceiverFaults delivers through 30 % 503s, delays beyond --request-timeout, connection
// resets and a receiver down for 12 s (standing in for "a minute", to fit CI time): everything
// arrives once the receiver recovers, and the relay's RSS stays bounded.
func TestReceiverFaults(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(scaled(500, 100))
	p := e.startRelay("--request-timeout", "1s")
	w := &writer{}
	batch := scaled(1500, 300)
	write := func() {
		t.Helper()
		target := w.count() + batch
		w.run(context.Background(), e.dbURL, customers, target, 5, target)
		require.Equal(t, target, w.count())
	}
	phases := []struct {
		name   string
		faults receiver.Faults
		// hold keeps the fault on until it returns true (the relay has felt it).
		hold func() bool
	}{
		{"30% 503", receiver.Faults{FailRate: 0.3}, nil},
		{"delay 1.5s > request timeout 1s", receiver.Faults{Delay: 1500 * time.Millisecond}, func() bool {
			return strings.Contains(p.output(), "request timeout")
		}},
		{"30% connection resets", receiver.Faults{ResetRate: 0.3}, nil},
		{"10% 503 + 10% resets + 200ms delay", receiver.Faults{FailRate: 0.1, ResetRate: 0.1, Delay: 200 * time.Millisecond}, nil},
		{"down " + outage().String(), receiver.Faults{Down: true}, nil},
	}
	for _, ph := range phases {
		e.rcv.SetFaults(ph.faults)
		start := time.Now()
		write()
		if ph.hold != nil {
			require.True(t, waitFor(60*time.Second, ph.hold), "phase %s: the relay never felt the fault:\n%s", ph.name, tail(p.output(), 4000))
		}
		if ph.faults.Down {
			// The outage itself lasts CDC_FAULT_OUTAGE (default 12 s, a scaled-down "minute");
			// this is the fault's duration, not a synchronisation wait.
			time.Sleep(time.Until(start.Add(outage())))
		}
		e.rcv.SetFaults(receiver.Faults{})
		e.waitDrained(p, w.ids(), 3*time.Minute)
		t.Logf("phase %q drained: %d committed so far, max RSS %d KiB", ph.name, w.count(), p.MaxRSS())
	}
	require.False(t, p.exited())
	p.stop()
	st := e.rcv.Stats()
	v := e.rec.verify(w.committed)
	t.Logf("receiver faults: %d faults injected, committed %d, delivered %d, lost %d, duplicates %d, max RSS %d KiB",
		st.FaultsInjected, v.Committed, v.Delivered, v.Lost, v.Duplicates, p.MaxRSS())
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		FaultsInjected: st.FaultsInjected, MaxRSSKiB: p.MaxRSS(), Notes: "503 30%, delay>timeout, resets 30%, mixed, down " + outage().String()})
	checkVerdict(t, v)
	require.Less(t, p.MaxRSS(), int64(400<<10), "relay RSS should stay bounded")
}

// TestTokenEndpointFaults takes the token endpoint down, makes it answer garbage, and revokes
// then restores the client credentials, revoking issued tokens each time so the relay must come
// back to the endpoint. Each fault produces a clear log line; nothing is lost and the relay
// recovers without a restart.
func TestTokenEndpointFaults(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(scaled(300, 50))
	p := e.startRelay()
	w := &writer{}
	write := func(n int) {
		target := w.count() + n
		w.run(context.Background(), e.dbURL, customers, target, 5, target)
	}
	write(200)
	e.waitDrained(p, w.ids(), time.Minute)
	faults := 0
	cases := []struct {
		name  string
		apply func()
		undo  func()
		want  []string
	}{
		{"token endpoint down", func() { e.rcv.SetFaults(receiver.Faults{TokenDown: true}) }, func() { e.rcv.SetFaults(receiver.Faults{}) },
			[]string{"OAuth2 token error", "HTTP 503"}},
		{"token endpoint answers garbage", func() { e.rcv.SetFaults(receiver.Faults{TokenGarbage: true}) }, func() { e.rcv.SetFaults(receiver.Faults{}) },
			[]string{"OAuth2 token error", "not a valid OAuth2 token"}},
		{"credentials revoked", func() { e.rcv.SetCredentials(clientID, "revoked-"+clientSecret[:4]) }, func() { e.rcv.SetCredentials(clientID, clientSecret) },
			[]string{"OAuth2 token error", "rejected the client credentials"}},
	}
	for _, c := range cases {
		c.apply()
		e.rcv.RevokeTokens()
		faults++
		mark := len(p.output())
		write(100)
		ok := waitFor(60*time.Second, func() bool {
			out := p.output()[mark:]
			for _, line := range strings.Split(out, "\n") {
				if containsAll(line, c.want) {
					return true
				}
			}
			return false
		})
		require.True(t, ok, "%s: no log line with %q:\n%s", c.name, c.want, tail(p.output(), 4000))
		// The failure is also visible in the queue status (last_error on the progress rows).
		var lastErr string
		require.True(t, waitFor(30*time.Second, func() bool {
			c2, err := pgx.Connect(context.Background(), e.dbURL)
			if err != nil {
				return false
			}
			defer c2.Close(context.Background())
			return c2.QueryRow(context.Background(), `SELECT coalesce(string_agg(last_error, ' | '), '') FROM data_sync_status WHERE stage = 'progress'`).Scan(&lastErr) == nil &&
				strings.Contains(lastErr, "OAuth2 token error")
		}), "%s: data_sync_status does not show the token error (last_error %q)", c.name, lastErr)
		t.Logf("%s: status last_error: %s", c.name, lastErr)
		c.undo()
		e.waitDrained(p, w.ids(), 2*time.Minute)
		require.False(t, p.exited(), "relay exited during %s", c.name)
	}
	p.stop()
	v := e.rec.verify(w.committed)
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		FaultsInjected: faults, MaxRSSKiB: p.MaxRSS(), Notes: "token down, garbage, credentials revoked+restored; no restart"})
	checkVerdict(t, v)
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestWALSafety stops the relay (SIGTERM, then SIGKILL in a second round) during heavy writes
// to other tables: its slot is temporary, so afterwards no cdc_relay slot exists and
// pg_replication_slots retains nothing for this database. While it runs, its slot keeps up.
func TestWALSafety(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.conn()
	ctx := context.Background()
	_, err := c.Exec(ctx, `CREATE TABLE filler (id bigserial PRIMARY KEY, pad text)`)
	require.NoError(t, err)
	heavy := func() {
		_, err := c.Exec(ctx, `INSERT INTO filler (pad) SELECT repeat(md5(g::text), 16) FROM generate_series(1, $1) g`, scaled(50000, 10000))
		require.NoError(t, err)
	}
	slots := func() int64 {
		n, err := e.queryInt(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database() OR slot_name LIKE 'cdc_relay%'`)
		require.NoError(t, err)
		return n
	}
	for round, stop := range []string{"SIGTERM", "SIGKILL"} {
		p := e.startRelay()
		require.True(t, waitFor(60*time.Second, func() bool { return slots() == 1 }), "no slot while running:\n%s", tail(p.output(), 4000))
		var temporary bool
		require.NoError(t, c.QueryRow(ctx, `SELECT temporary FROM pg_replication_slots WHERE slot_name LIKE 'cdc_relay%'`).Scan(&temporary))
		require.True(t, temporary, "the relay's slot must be temporary")
		heavy()
		// While running, the slot acknowledges keepalives: it retains little WAL. A logical
		// slot's restart_lsn moves only at a running-transactions record, which the server
		// writes every 15 s by itself and at each checkpoint: one a second brings the next sooner.
		var retained int64
		require.True(t, waitEvery(60*time.Second, time.Second, func() bool {
			if _, err := c.Exec(ctx, "CHECKPOINT"); err != nil {
				return false
			}
			retained, err = e.queryInt(`SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0)::bigint FROM pg_replication_slots WHERE slot_name LIKE 'cdc_relay%'`)
			return err == nil && retained < 16<<20
		}), "round %d: running slot retains %d bytes of WAL", round, retained)
		done := make(chan struct{})
		go func() { defer close(done); heavy() }() // heavy writes during the stop
		if stop == "SIGTERM" {
			p.stop()
		} else {
			p.kill()
		}
		<-done
		heavy()
		require.True(t, waitFor(60*time.Second, func() bool { return slots() == 0 }), "round %d (%s): a replication slot outlived the relay", round, stop)
		n, err := e.queryInt(`SELECT count(*) FROM pg_replication_slots WHERE restart_lsn IS NOT NULL AND database = current_database()`)
		require.NoError(t, err)
		require.Zero(t, n, "pg_replication_slots retains WAL for this database after %s", stop)
	}
	report(t, summaryRow{KillsSurvived: 1, FaultsInjected: 2, Notes: "no cdc_relay slot after SIGTERM or SIGKILL; running slot retained < 16 MiB"})
}

// TestBacklog queues 200,000 rows (×CDC_FAULT_SCALE; the spec's 1 M does not fit the CI budget
// on 2 shared cores) with the receiver down, then brings it up: everything drains and the
// relay's RSS stays flat (bounded by its window, not by the backlog).
func TestBacklog(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(2000)
	per := max(1, scaled(200000, 20000)/len(customers))
	c := e.conn()
	ctx := context.Background()
	_, err := c.Exec(ctx, `INSERT INTO data_sync_cust_pending_queue (obj_name, unique_id, action, json_object)
SELECT 'Customer', j.customer_id::text, 'UPDATE', j.json_object
FROM generate_series(1, $1) g CROSS JOIN data_sync_customers_json(ARRAY(SELECT customer_id FROM customer)) j
ORDER BY g, j.customer_id`, per)
	require.NoError(t, err)
	rows, err := c.Query(ctx, `SELECT id, unique_id FROM data_sync_cust_pending_queue ORDER BY id`)
	require.NoError(t, err)
	var changes []change
	for rows.Next() {
		var ch change
		require.NoError(t, rows.Scan(&ch.ID, &ch.Key))
		changes = append(changes, ch)
	}
	require.NoError(t, rows.Err())
	ids := make([]int64, len(changes))
	for i, ch := range changes {
		ids[i] = ch.ID
	}
	t.Logf("backlog: %d rows queued for %d customers", len(ids), len(customers))

	e.rcv.SetFaults(receiver.Faults{Down: true})
	p := e.startRelay()
	require.True(t, waitFor(2*time.Minute, func() bool { return e.rcv.Stats().FaultsInjected >= 200 }),
		"the relay never tried the down receiver:\n%s", tail(p.output(), 4000))
	downRSS := p.MaxRSS()
	e.rcv.SetFaults(receiver.Faults{})
	start := time.Now()
	e.waitDrained(p, ids, 4*time.Minute)
	took := time.Since(start)
	p.stop()
	v := e.rec.verify(changes)
	t.Logf("backlog: %d rows drained in %s (%.0f/s); max RSS %d KiB (while down %d KiB); duplicates %d",
		len(ids), took.Round(time.Millisecond), float64(len(ids))/took.Seconds(), p.MaxRSS(), downRSS, v.Duplicates)
	report(t, summaryRow{ChangesCommitted: v.Committed, Delivered: v.Delivered, Lost: v.Lost, Duplicates: v.Duplicates,
		FaultsInjected: e.rcv.Stats().FaultsInjected, MaxRSSKiB: p.MaxRSS(),
		Notes: fmt.Sprintf("%d rows (spec: 1M), receiver down then up; drained in %s", len(ids), took.Round(time.Second))})
	checkVerdict(t, v)
	require.Less(t, p.MaxRSS(), int64(400<<10), "relay RSS should stay flat with a large backlog")
}

// TestReconnectBackoffResetsAfterRecovery shows a bug in relay.Run: the delay before starting a
// new session doubles on every lost session (0.1 s, 0.2 s, ... 30 s) and is never reset after a
// session that recovered and delivered. After eight database blips, however far apart, every
// later blip stalls delivery for 25–30 s. The test loses the relay's session seven times, each
// time only after the relay is delivering again, and expects each logged backoff to have started
// over (at most 1.6 s). It fails until Run resets the delay after a healthy session.
func TestReconnectBackoffResetsAfterRecovery(t *testing.T) {
	e := newEnv(t, envOptions{})
	customers := e.createCustomers(20)
	p := e.startRelay()
	w := &writer{}
	for i := range 7 {
		target := w.count() + 1
		w.run(context.Background(), e.dbURL, customers, target, 1, i)
		e.waitDrained(p, w.ids(), 2*time.Minute) // the relay is delivering again
		ended := strings.Count(p.output(), "relay session ended")
		terminateRelaySessions(t, e)
		require.True(t, waitFor(time.Minute, func() bool { return strings.Count(p.output(), "relay session ended") > ended }),
			"terminating the relay's sessions did not end its session:\n%s", tail(p.output(), 3000))
	}
	target := w.count() + 1
	w.run(context.Background(), e.dbURL, customers, target, 1, 99)
	e.waitDrained(p, w.ids(), 2*time.Minute)
	p.stop()
	var afters []float64
	for _, line := range strings.Split(p.output(), "\n") {
		if i := strings.Index(line, `"after":`); i >= 0 && strings.Contains(line, "relay session ended") {
			var f float64
			fmt.Sscanf(line[i+8:], "%g", &f)
			afters = append(afters, f)
		}
	}
	t.Logf("logged reconnect delays (s): %v", afters)
	require.NotEmpty(t, afters)
	for i, a := range afters {
		require.LessOrEqualf(t, a, 1.6, "session loss %d waited %gs although the previous session had recovered and delivered: relay.Run never resets its reconnect backoff (delays %v)", i+1, a, afters)
	}
}
