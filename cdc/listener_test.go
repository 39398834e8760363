package cdc

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

func TestQueuedRingsAfterCommitNotBefore(t *testing.T) {
	t.Parallel()
	tables := map[string]string{insertCust: "data_sync_cust_pending_queue", insertTrn: "data_sync_trn_pending_queue"}
	for name, insert := range map[string]string{"customer": insertCust, "transaction": insertTrn} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			r := start(t, Config{ConnString: db})
			tx := begin(t, db, insert)
			var xid int64
			require.NoError(t, tx.QueryRow(context.Background(), "SELECT pg_current_xact_id()::text::bigint % 4294967296").Scan(&xid))

			barrier(t, db, r.l) // committed after our open insert: the stream has passed it
			requireSilent(t, r.l.Queued(), "Queued before commit")

			require.NoError(t, tx.Commit(context.Background()))
			waitRing(t, r.l.Queued(), "Queued after commit")
			requireSilent(t, r.l.ConfigChanged(), "ConfigChanged for a queue insert")
			xids, written := r.l.TakeQueued()
			require.Equal(t, []uint32{uint32(xid)}, xids)
			require.Equal(t, []string{tables[insert]}, written, "the ring names the table written")
		})
	}
}

// A resync request rings Queued and says so (TakeResync), so the relay looks for it at once;
// a queue insert does not.
func TestResyncRequestRingsResync(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	pgtest.Exec(t, db, "UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'")
	r := start(t, Config{ConnString: db})

	pgtest.Exec(t, db, insertCust)
	waitRing(t, r.l.Queued(), "Queued after a queue insert")
	assert.False(t, r.l.TakeResync(), "a queue insert is not a resync request")

	pgtest.Exec(t, db, "INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)")
	waitRing(t, r.l.Queued(), "Queued after a resync request")
	assert.True(t, r.l.TakeResync(), "TakeResync after a resync request")
	assert.False(t, r.l.TakeResync(), "TakeResync forgets what it returned")
}

// A committed customer DELETE row names its customer and row id (TakeDeleted), the highest id
// when a transaction queued two; other rows, DELETE rows of transactions, and rolled-back ones
// name nothing.
func TestCustomerDeleteRowsAreNamed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db})
	ctx := context.Background()
	conn := connect(t, db)
	queue := func(tx pgx.Tx, key, action string) int64 {
		t.Helper()
		var id int64
		require.NoError(t, tx.QueryRow(ctx, `INSERT INTO data_sync_cust_pending_queue (unique_id, action) VALUES ($1, $2) RETURNING id`,
			key, action).Scan(&id))
		return id
	}
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	queue(tx, "7", "UPDATE")
	queue(tx, "8", "DELETE")
	last := queue(tx, "8", "DELETE")
	del9 := queue(tx, "9", "DELETE")
	_, err = tx.Exec(ctx, `INSERT INTO data_sync_trn_pending_queue (unique_id, action) VALUES ('10', 'DELETE')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	waitRing(t, r.l.Queued(), "Queued after the deletes")
	require.Equal(t, map[string]int64{"8": last, "9": del9}, r.l.TakeDeleted())
	require.Empty(t, r.l.TakeDeleted(), "TakeDeleted forgets what it returned")

	tx, err = conn.Begin(ctx)
	require.NoError(t, err)
	queue(tx, "11", "DELETE")
	require.NoError(t, tx.Rollback(ctx))
	barrier(t, db, r.l)
	require.Empty(t, r.l.TakeDeleted(), "a rolled-back DELETE row was named")
}

func TestRolledBackInsertRingsNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db})
	tx := begin(t, db, insertCust)
	require.NoError(t, tx.Rollback(context.Background()))

	barrier(t, db, r.l)
	requireSilent(t, r.l.Queued(), "Queued after rollback")
}

func TestBurstCoalesces(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db})
	ctx := context.Background()
	conn := connect(t, db)
	for i := 0; i < 1000; i++ {
		_, err := conn.Exec(ctx, insertTrn)
		require.NoError(t, err)
	}
	barrier(t, db, r.l)
	assert.LessOrEqual(t, len(r.l.Queued()), 1, "rings pile up")
	waitRing(t, r.l.Queued(), "Queued after burst")
	requireSilent(t, r.l.Queued(), "Queued after one receive")
}

func TestConfigChangeRingsConfigOnly(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db})
	for _, stmt := range []string{
		"UPDATE data_sync_config SET value = 'https://example.invalid/' WHERE name = 'DataSyncApiUrl'",
		"DELETE FROM data_sync_config WHERE name = 'DataSyncSnapshotMode'",
		"INSERT INTO data_sync_config (name, value) VALUES ('DataSyncSnapshotMode', 'capture')",
	} {
		pgtest.Exec(t, db, stmt)
		waitRing(t, r.l.ConfigChanged(), "ConfigChanged after "+stmt)
		// Queued would have rung before ConfigChanged for the same commit.
		requireSilent(t, r.l.Queued(), "Queued after "+stmt)
	}
}

// A transaction bigger than logical_decoding_work_mem is streamed before it commits (protocol 2):
// the doorbell must ring at stream commit, and not for a streamed transaction that aborts.
func TestStreamedTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	pgtest.Exec(t, db, "CREATE TABLE unrelated (id int, pad text)")
	// logical_decoding_work_mem is read by the walsender itself: set it for our session only.
	r := start(t, Config{ConnString: withParam(t, db, "logical_decoding_work_mem", "64kB")})
	ctx := context.Background()
	admin := connect(t, db)
	streamTxns := func() int64 {
		var n int64
		if err := admin.QueryRow(ctx,
			"SELECT coalesce(sum(stream_txns), 0)::bigint FROM pg_stat_replication_slots WHERE slot_name = $1",
			r.l.Status().SlotName).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	big := func(end func(pgx.Tx) error) {
		tx := begin(t, db, insertCust, "INSERT INTO unrelated SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g", insertTrn)
		require.NoError(t, end(tx))
	}

	big(func(tx pgx.Tx) error { return tx.Rollback(ctx) })
	barrier(t, db, r.l)
	requireSilent(t, r.l.Queued(), "Queued after an aborted streamed transaction")

	before := streamTxns()
	require.GreaterOrEqual(t, before, int64(0))
	big(func(tx pgx.Tx) error { return tx.Commit(ctx) })
	waitRing(t, r.l.Queued(), "Queued after stream commit")
	_, written := r.l.TakeQueued()
	require.ElementsMatch(t, []string{"data_sync_cust_pending_queue", "data_sync_trn_pending_queue"}, written)
	require.Eventually(t, func() bool { return streamTxns() > before }, wait, 20*time.Millisecond,
		"the transaction was not streamed: the test does not exercise stream commit")
}

func TestTerminatedWalsenderReconnects(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	ctx := context.Background()
	admin := connect(t, db)
	first := r.l.Status()
	require.True(t, first.Connected)
	require.Zero(t, first.Reconnects)

	var ok bool
	require.NoError(t, admin.QueryRow(ctx,
		"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", first.SlotName).Scan(&ok))
	require.True(t, ok)

	waitRing(t, r.l.Queued(), "Queued after reconnect")
	waitRing(t, r.l.ConfigChanged(), "ConfigChanged after reconnect")
	st := r.l.Status()
	assert.True(t, st.Connected)
	assert.Equal(t, 1, st.Reconnects)
	assert.NotEqual(t, first.SlotName, st.SlotName)
	assert.NotEmpty(t, st.LastError)

	pgtest.Exec(t, db, insertCust)
	waitRing(t, r.l.Queued(), "Queued on the new stream")
}

// A dedicated cluster, since stopping the server would disturb every other test.
func TestServerRestartReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl := startCluster(t, nil)
	db := installedDB(t, cl)

	r := start(t, Config{ConnString: db, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	for i, mode := range []string{"fast", "immediate"} {
		require.NoError(t, cl.StopServer(ctx, mode))
		require.Eventually(t, func() bool { return !r.l.Status().Connected }, wait, 5*time.Millisecond, mode)
		require.NoError(t, cl.StartServer(ctx))
		waitRing(t, r.l.Queued(), "Queued after "+mode+" restart")
		st := r.l.Status()
		require.True(t, st.Connected, mode)
		require.Equal(t, i+1, st.Reconnects, mode)
		pgtest.Exec(t, db, insertTrn)
		waitRing(t, r.l.Queued(), "Queued after insert following "+mode+" restart")
	}
}

func TestWALLevelReplicaFailsAtOnce(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, map[string]string{"wal_level": "replica"})
	_, err := runFailing(t, Config{ConnString: cl.URL("postgres"), SlotPrefix: uniquePrefix()})
	require.ErrorIs(t, err, ErrWALLevel)
	require.ErrorIs(t, err, schema.ErrWALLevel)
	assert.Contains(t, err.Error(), "ALTER SYSTEM SET wal_level = logical")
	assert.Contains(t, err.Error(), "--poll")
}

func TestMissingPublicationFailsAtOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	l, err := runFailing(t, Config{ConnString: db, SlotPrefix: uniquePrefix()})
	require.ErrorIs(t, err, ErrNoPublication)
	assert.Contains(t, err.Error(), "data_sync_pending_pub")
	assert.Contains(t, err.Error(), "cdc-relay install")
	assert.Contains(t, l.Status().LastError, "cdc-relay install")
}

func TestRoleWithoutReplicationFailsAtOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	role := "norepl_" + uniquePrefix()
	pgtest.Exec(t, pgtest.AdminURL(), "CREATE ROLE "+role+" LOGIN NOREPLICATION")
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), pgtest.AdminURL())
		if err == nil {
			conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
			conn.Close(context.Background())
		}
	})
	_, err := runFailing(t, Config{ConnString: withUser(t, db, role), SlotPrefix: uniquePrefix()})
	require.ErrorIs(t, err, ErrReplicationPrivilege)
	assert.Contains(t, err.Error(), "ALTER ROLE "+role+" REPLICATION")
}

// An unreachable server is not a configuration fault: Run keeps retrying until cancelled.
func TestUnreachableServerRetriesUntilCancelled(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	l, err := New(Config{ConnString: "postgres://postgres@" + addr + "/x?sslmode=disable&connect_timeout=5",
		ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	require.Eventually(t, func() bool { return l.Status().LastError != "" }, wait, 5*time.Millisecond)
	assert.Contains(t, l.Status().LastError, "opening replication connection")
	assert.False(t, l.Status().Connected)
	cancel()
	requireReturned(t, done)
}

func TestRunTwiceIsRefused(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db})
	err := r.l.Run(context.Background())
	require.ErrorIs(t, err, ErrAlreadyRunning)
}

// The WAL-safety property: with the queue tables quiet and the rest of the database busy, the
// slot's confirmed position follows the server, so it pins no WAL.
func TestSlotDoesNotRetainWAL(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	prefix := uniquePrefix()
	m := metrics.NewDoorbell(nil)
	m.SlotLagBytes.Set(-1) // unset: the doorbell sets it on each confirmation
	r := start(t, Config{ConnString: db, SlotPrefix: prefix, StandbyInterval: time.Second, Metrics: m})
	ctx := context.Background()
	admin := connect(t, db)

	var startLSN string
	require.NoError(t, admin.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&startLSN))
	_, err := admin.Exec(ctx, "CREATE TABLE filler (id int, pad text)")
	require.NoError(t, err)
	// Many ordinary transactions, none streamed and none touching a published table: pgoutput
	// sends nothing for them, so only the keepalives' ServerWALEnd can move the slot forward.
	for i := 0; i < 20; i++ {
		_, err = admin.Exec(ctx, "INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 3300) g")
		require.NoError(t, err)
	}
	var written int64
	require.NoError(t, admin.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", startLSN).Scan(&written))
	require.Greater(t, written, int64(50<<20), "the test did not write enough WAL to mean anything")

	var last []SlotInfo
	ok := assert.Eventually(t, func() bool {
		last, err = SlotLag(ctx, admin, prefix)
		return err == nil && len(last) == 1 && last[0].LagBytes < 16<<20
	}, wait, 20*time.Millisecond)
	require.True(t, ok, "slot lag stayed high: %+v (err %v)", last, err)
	assert.Equal(t, r.l.Status().SlotName, last[0].Name)
	assert.True(t, last[0].Active)
	assert.True(t, last[0].Temporary)
	assert.NotZero(t, last[0].ActivePID)
	assert.NotZero(t, r.l.Status().LastAcked)
	assert.GreaterOrEqual(t, r.l.Status().LastAcked, r.l.Status().LastServerWALEnd)
	require.Eventually(t, func() bool { return r.l.Status().LastServerWALEnd > 0 }, wait, 5*time.Millisecond)
	// The gauge served on /metrics says the same, from the positions the stream reported.
	lag := testutil.ToFloat64(m.SlotLagBytes)
	assert.True(t, lag >= 0 && lag < 16<<20, "cdc_relay_slot_lag_bytes = %v", lag)
}

func TestSlotGoneAfterCancel(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	prefix := uniquePrefix()
	r := start(t, Config{ConnString: db, SlotPrefix: prefix})
	ctx := context.Background()
	admin := connect(t, db)
	slots, err := SlotLag(ctx, admin, prefix)
	require.NoError(t, err)
	require.Len(t, slots, 1)

	r.cancel()
	requireReturned(t, r.done)
	r.done <- nil // for the cleanup
	assert.False(t, r.l.Status().Connected)
	ok := assert.Eventually(t, func() bool {
		slots, err = SlotLag(ctx, admin, prefix)
		return err == nil && len(slots) == 0
	}, wait, 10*time.Millisecond)
	require.True(t, ok, "temporary slot survived its session: %+v (err %v)", slots, err)
}

func TestSlotLagQueryError(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn, err := pgx.Connect(context.Background(), db)
	require.NoError(t, err)
	require.NoError(t, conn.Close(context.Background()))
	_, err = SlotLag(context.Background(), conn, "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "replication slot lag")
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"empty conn string":    {},
		"unparseable":          {ConnString: "postgres://%zz"},
		"quoted publication":   {ConnString: "postgres://localhost/x", Publications: []string{`a"b`}},
		"empty publication":    {ConnString: "postgres://localhost/x", Publications: []string{""}},
		"upper-case prefix":    {ConnString: "postgres://localhost/x", SlotPrefix: "Relay"},
		"long prefix":          {ConnString: "postgres://localhost/x", SlotPrefix: "a234567890123456789012345678901234567890123456789"},
		"min above max":        {ConnString: "postgres://localhost/x", ReconnectMin: time.Minute, ReconnectMax: time.Second},
		"negative standby gap": {ConnString: "postgres://localhost/x", StandbyInterval: -time.Second},
	} {
		_, err := New(cfg)
		assert.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	l, err := New(Config{ConnString: "postgres://localhost/x"})
	require.NoError(t, err)
	assert.Equal(t, DefaultPublications, l.cfg.Publications)
	assert.Equal(t, DefaultSlotPrefix, l.cfg.SlotPrefix)
	assert.Equal(t, DefaultStandbyInterval, l.cfg.StandbyInterval)
	assert.Equal(t, "database", l.pgcfg.RuntimeParams["replication"])
}

// A failure to create the slot (here: no free slot) is not a configuration fault: Run retries and
// starts as soon as a slot is free.
func TestSlotCreationFailureIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl := startCluster(t, map[string]string{"max_replication_slots": "1"})
	db := installedDB(t, cl)
	conn := connect(t, db)
	_, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('blocker', 'pgoutput')")
	require.NoError(t, err)

	l, err := New(Config{ConnString: db, SlotPrefix: uniquePrefix(), ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()
	require.Eventually(t, func() bool { return l.Status().LastError != "" }, wait, 5*time.Millisecond)
	assert.Contains(t, l.Status().LastError, "creating temporary replication slot")
	requireSilent(t, l.Ready(), "Ready before a slot exists")

	_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot('blocker')")
	require.NoError(t, err)
	waitRing(t, l.Ready(), "Ready after the slot was freed")
	waitRing(t, l.Queued(), "Queued after connect")
	assert.True(t, l.Status().Connected)
	assert.Zero(t, l.Status().Reconnects)
}

// A publication dropped while the listener runs breaks the stream; since the listener had
// streamed before, it keeps retrying (logging ErrNoPublication) and resumes once it is back.
func TestPublicationDroppedWhileRunningIsRetried(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	r := start(t, Config{ConnString: db, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	pgtest.Exec(t, db, "DROP PUBLICATION data_sync_pending_pub")
	pgtest.Exec(t, db, insertCust) // decoding it fails: the publication no longer exists
	require.Eventually(t, func() bool {
		return strings.Contains(r.l.Status().LastError, ErrNoPublication.Error())
	}, wait, 5*time.Millisecond, "listener did not notice the missing publication")
	select {
	case err := <-r.done:
		t.Fatalf("Run returned instead of retrying: %v", err)
	default:
	}
	pgtest.Exec(t, db, `CREATE PUBLICATION data_sync_pending_pub
		FOR TABLE data_sync_cust_pending_queue, data_sync_trn_pending_queue WITH (publish = 'insert')`)
	require.Eventually(t, func() bool { st := r.l.Status(); return st.Connected && st.Reconnects == 1 }, wait, 5*time.Millisecond)
	waitRing(t, r.l.Queued(), "Queued after reconnect")
	pgtest.Exec(t, db, insertTrn)
	waitRing(t, r.l.Queued(), "Queued after insert on the resumed stream")
}
