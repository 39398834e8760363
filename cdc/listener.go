// Package cdc is the relay's logical-replication doorbell.
//
// The queue tables are the source of truth: the relay never reads changes from the stream.
// The stream exists only to wake the relay within a millisecond of any commit that queued
// something, and to tell it when data_sync_config changed. Because nothing is read from it, the
// listener uses a TEMPORARY slot (gone with its session) and acknowledges everything it has seen,
// including the keepalive's ServerWALEnd, so the slot never retains WAL even when the queue
// tables are quiet and the rest of the database is busy.
package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/backoff"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

// Default configuration values, exported so the CLI can show them in its help.
const (
	// DefaultSlotPrefix names the relay's slots so `cdc-relay status` can find them.
	DefaultSlotPrefix = "cdc_relay"
	// DefaultStandbyInterval is the idle status-update period, well inside wal_sender_timeout (60s).
	DefaultStandbyInterval = 10 * time.Second
	// DefaultReconnectMin is the first reconnect delay: short, since most drops are transient.
	DefaultReconnectMin = 100 * time.Millisecond
	// DefaultReconnectMax caps the reconnect delay so a long outage is noticed within 30s of its end.
	DefaultReconnectMax = 30 * time.Second
)

// DefaultPublications are the publications created by `cdc-relay install`: inserts into both
// pending tables, and every change of data_sync_config.
var DefaultPublications = []string{"data_sync_pending_pub", "data_sync_config_pub"}

// ErrWALLevel is returned by Run when the server's wal_level is not logical. It is the same value
// as schema.ErrWALLevel, so errors.Is matches either.
var ErrWALLevel = schema.ErrWALLevel

// ErrNoPublication is returned by Run when a configured publication does not exist in the
// database; `cdc-relay install` creates them.
var ErrNoPublication = errors.New("replication publication missing")

// ErrReplicationPrivilege is returned by Run when the role may not open a replication
// connection (it lacks the REPLICATION attribute).
var ErrReplicationPrivilege = errors.New("role lacks the REPLICATION privilege")

// ErrInvalidConfig is returned by New when the Config cannot work, naming the field to fix.
var ErrInvalidConfig = errors.New("invalid replication listener configuration")

// ErrAlreadyRunning is returned by Run when Run is already running on the same Listener: one
// Listener owns one replication session.
var ErrAlreadyRunning = errors.New("replication listener is already running")

// Config tunes a Listener. Only ConnString is required.
type Config struct {
	// ConnString is an ordinary PostgreSQL URL or keyword/value string; the listener adds
	// replication=database itself.
	ConnString string
	// Publications to subscribe to; default DefaultPublications.
	Publications []string
	// SlotPrefix names the temporary slot: prefix + "_" + random suffix. Default "cdc_relay".
	// Lower-case letters, digits and underscores, at most 46 characters.
	SlotPrefix string
	// StandbyInterval is how often a status update is sent even when idle; default 10s.
	StandbyInterval time.Duration
	// ReconnectMin and ReconnectMax bound the exponential, jittered reconnect delay; default
	// 100ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives connection events (never row contents); default none.
	Logger *zap.Logger
	// Metrics are the doorbell's instruments (the daemon's, served on /metrics); default
	// instruments of its own that nothing serves.
	Metrics *metrics.Doorbell
}

// Status is a snapshot of the listener's state, for `cdc-relay status` and health checks.
type Status struct {
	Connected        bool          // streaming right now
	SlotName         string        // current (or last) temporary slot
	LastServerWALEnd pglogrepl.LSN // ServerWALEnd of the last keepalive
	LastAcked        pglogrepl.LSN // last position acknowledged to the server
	Reconnects       int           // times the stream was re-established after being lost
	LastError        string        // last connection or stream error, "" if none yet
}

// Listener is the replication doorbell. Create it with New and call Run once.
type Listener struct {
	cfg     Config
	pgcfg   *pgconn.Config
	log     *zap.Logger
	queued  chan struct{}
	config  chan struct{}
	ready   chan struct{}
	readyMu sync.Once
	running atomic.Bool
	// queuedXids are the ids of committed transactions that queued something, since the last
	// TakeQueued (the latest maxQueuedXids), and queuedTables the tables they wrote.
	queuedMu     sync.Mutex
	queuedXids   []uint32
	queuedTables []string
	resync       bool // a committed transaction inserted a resync request since TakeResync
	// deleted maps the customers whose DELETE row committed transactions queued since the last
	// TakeDeleted to the highest such row id.
	deleted map[string]int64

	mu     sync.Mutex
	status Status
}

var slotPrefixRE = regexp.MustCompile(`^[a-z0-9_]{1,46}$`)

// New validates cfg, fills in defaults and returns a Listener that is not yet connected.
func New(cfg Config) (*Listener, error) {
	if cfg.ConnString == "" {
		return nil, fmt.Errorf("%w: ConnString is empty: pass the database URL", ErrInvalidConfig)
	}
	pgcfg, err := pgconn.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing ConnString: %w", ErrInvalidConfig, err)
	}
	pgcfg.RuntimeParams["replication"] = "database"
	if len(cfg.Publications) == 0 {
		cfg.Publications = DefaultPublications
	}
	cfg.Publications = append([]string(nil), cfg.Publications...)
	for _, p := range cfg.Publications {
		if p == "" || strings.ContainsAny(p, "\"',\x00") {
			return nil, fmt.Errorf("%w: publication name %q: use a name without quotes or commas", ErrInvalidConfig, p)
		}
	}
	if cfg.SlotPrefix == "" {
		cfg.SlotPrefix = DefaultSlotPrefix
	}
	if !slotPrefixRE.MatchString(cfg.SlotPrefix) {
		return nil, fmt.Errorf("%w: slot prefix %q: use 1 to 46 lower-case letters, digits or underscores", ErrInvalidConfig, cfg.SlotPrefix)
	}
	if cfg.StandbyInterval == 0 {
		cfg.StandbyInterval = DefaultStandbyInterval
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = DefaultReconnectMin
	}
	if cfg.ReconnectMax == 0 {
		cfg.ReconnectMax = DefaultReconnectMax
	}
	if cfg.StandbyInterval < 0 || cfg.ReconnectMin < 0 || cfg.ReconnectMax < cfg.ReconnectMin {
		return nil, fmt.Errorf("%w: durations must be positive and ReconnectMin (%s) at most ReconnectMax (%s)", ErrInvalidConfig, cfg.ReconnectMin, cfg.ReconnectMax)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewDoorbell(nil)
	}
	return &Listener{
		cfg:    cfg,
		pgcfg:  pgcfg,
		log:    cfg.Logger.Named("cdc"),
		queued: make(chan struct{}, 1),
		config: make(chan struct{}, 1),
		ready:  make(chan struct{}),
	}, nil
}

// Queued rings after every commit (or streamed commit) that inserted into a pending table, and
// once after every (re)connect, since commits may have happened while disconnected. It has
// capacity 1: rings coalesce, so one receive drains any number of commits. Each ring that was
// not coalesced counts in cdc_relay_wakeups_total{source="replication"}; consumers need not
// count it.
func (l *Listener) Queued() <-chan struct{} { return l.queued }

// maxQueuedXids bounds the transaction ids kept between two TakeQueued calls; older ones were
// decoded long enough ago to be visible.
const maxQueuedXids = 1024

func (l *Listener) noteQueued(xid uint32, tables []string) {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	if len(l.queuedXids) >= maxQueuedXids {
		n := copy(l.queuedXids, l.queuedXids[len(l.queuedXids)-maxQueuedXids/2:])
		l.queuedXids = l.queuedXids[:n]
	}
	l.queuedXids = append(l.queuedXids, xid)
	l.addTables(tables...)
}

// noteTables notes tables written by commits the stream did not show.
func (l *Listener) noteTables(tables ...string) {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	l.addTables(tables...)
}

func (l *Listener) addTables(tables ...string) {
	for _, t := range tables {
		if !slices.Contains(l.queuedTables, t) {
			l.queuedTables = append(l.queuedTables, t)
		}
	}
}

// TakeQueued returns the ids of the transactions that rang Queued since the last call and the
// tables they wrote, and forgets them. The walsender decodes a commit an instant before the
// committing backend makes it visible to new snapshots (commits also become visible out of WAL
// order): the relay waits for exactly these transactions before it looks at pending, and looks
// only at the queues they wrote. "" stands for tables the stream did not name: after a
// connect, commits to any table. Nothing at all: the rings since the last call were for
// commits an earlier call returned already (rings coalesce, and a ring can follow the take).
func (l *Listener) TakeQueued() (xids []uint32, tables []string) {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	x, t := l.queuedXids, l.queuedTables
	l.queuedXids, l.queuedTables = nil, nil
	return x, t
}

// maxDeleted bounds the customers noted between two TakeDeleted calls; beyond it the oldest
// notes are dropped (the relay's look at pending finds those DELETE rows too, a little later).
const maxDeleted = 4096

func (l *Listener) noteDeleted(dels map[string]int64) {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	if l.deleted == nil {
		l.deleted = map[string]int64{}
	}
	for k, id := range dels {
		if len(l.deleted) >= maxDeleted {
			break
		}
		l.deleted[k] = max(l.deleted[k], id)
	}
}

// TakeDeleted returns the customers whose DELETE row (data_sync_cust_pending_queue, action
// DELETE) a committed transaction queued since the last call, each with the highest such row id,
// and forgets them. The customer's delete purged its earlier queue rows; the relay re-checks
// the rows of these customers it holds before it sends them, without waiting for the DELETE
// row to be moved (which a backlog can delay). A DELETE row of a rolled-back subtransaction of
// a streamed transaction may be named too: it only costs a re-check.
func (l *Listener) TakeDeleted() map[string]int64 {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	d := l.deleted
	l.deleted = nil
	return d
}

func (l *Listener) noteResync() {
	l.queuedMu.Lock()
	l.resync = true
	l.queuedMu.Unlock()
}

// TakeResync reports whether a committed transaction inserted a resync request
// (data_sync_resync) since the last call, which also rang Queued: the relay then looks for the
// request at once rather than at its next sweep.
func (l *Listener) TakeResync() bool {
	l.queuedMu.Lock()
	defer l.queuedMu.Unlock()
	r := l.resync
	l.resync = false
	return r
}

// ConfigChanged rings after a committed transaction touched data_sync_config, and after every
// connect, since the configuration may have changed while no stream was listening. It has
// capacity 1, like Queued, and counts in cdc_relay_wakeups_total{source="config"}.
func (l *Listener) ConfigChanged() <-chan struct{} { return l.config }

// Ready is closed after the first successful START_REPLICATION, for readiness probes and tests.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

// Status returns a snapshot of the listener's state.
func (l *Listener) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *Listener) update(f func(*Status)) {
	l.mu.Lock()
	f(&l.status)
	l.mu.Unlock()
}

func (l *Listener) ring(ch chan struct{}, source string) {
	select {
	case ch <- struct{}{}:
		l.cfg.Metrics.WakeUps.WithLabelValues(source).Inc()
	default:
	}
}

// Run connects, checks the server, creates the temporary slot and streams until ctx is
// cancelled, when it returns nil. A dropped stream is re-established with exponential, jittered
// backoff. Configuration faults found before the stream first started (wal_level not logical,
// a missing publication, a role without REPLICATION) are returned at once, since retrying cannot
// fix them.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer l.running.Store(false)
	defer l.cfg.Metrics.ReplicationConnected.Set(0)
	everStarted := false
	failures := 0
	for {
		started, err := l.session(ctx, everStarted)
		if ctx.Err() != nil {
			return nil
		}
		if started {
			everStarted = true
			failures = 0
		}
		if !everStarted && (errors.Is(err, ErrWALLevel) || errors.Is(err, ErrNoPublication) || errors.Is(err, ErrReplicationPrivilege)) {
			l.update(func(s *Status) { s.LastError = err.Error() })
			l.log.Error("replication doorbell cannot start", zap.Error(err))
			return err
		}
		delay := backoff.Delay(failures+1, l.cfg.ReconnectMin, l.cfg.ReconnectMax)
		failures++
		l.update(func(s *Status) { s.LastError = err.Error() })
		l.log.Warn("replication stream lost; reconnecting", zap.Error(err), zap.Int("attempt", failures), zap.Duration("delay", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session runs one replication connection until it fails or ctx is cancelled. started reports
// whether START_REPLICATION succeeded.
func (l *Listener) session(ctx context.Context, reconnect bool) (started bool, err error) {
	conn, err := pgconn.ConnectConfig(ctx, l.pgcfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return false, fmt.Errorf("opening replication connection: %w: %s: run ALTER ROLE %s REPLICATION; as a superuser, or connect as a role that has it: %w",
				ErrReplicationPrivilege, pgErr.Message, l.pgcfg.User, err)
		}
		return false, fmt.Errorf("opening replication connection: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
		if started {
			l.cfg.Metrics.ReplicationConnected.Set(0)
			l.update(func(s *Status) { s.Connected = false })
		}
	}()
	l.log.Info("replication connection opened", zap.String("host", l.pgcfg.Host), zap.String("database", l.pgcfg.Database))

	if err := l.checkServer(ctx, conn); err != nil {
		return false, err
	}

	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return false, fmt.Errorf("generating slot name: %w", err)
	}
	slot := l.cfg.SlotPrefix + "_" + hex.EncodeToString(suffix[:])
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "NOEXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
	})
	if err != nil {
		return false, fmt.Errorf("creating temporary replication slot %s: %w", slot, err)
	}
	l.log.Info("temporary replication slot created", zap.String("slot", slot), zap.String("consistent_point", res.ConsistentPoint))

	quoted := make([]string, len(l.cfg.Publications))
	for i, p := range l.cfg.Publications {
		quoted[i] = `"` + p + `"`
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '2'",
			"streaming 'true'",
			"publication_names '" + strings.Join(quoted, ",") + "'",
		},
	})
	if err != nil {
		return false, fmt.Errorf("starting replication on slot %s: %w", slot, err)
	}
	started = true
	l.cfg.Metrics.ReplicationConnected.Set(1)
	l.update(func(s *Status) {
		s.Connected = true
		s.SlotName = slot
		if reconnect {
			s.Reconnects++
		}
	})
	l.log.Info("replication stream started", zap.String("slot", slot), zap.Bool("reconnect", reconnect))
	// Commits may have happened while we were not listening, including before the first
	// slot's consistent point (the relay may have read its settings before then): to any
	// table ("", unnamed).
	l.noteTables("")
	l.ring(l.queued, "replication")
	l.ring(l.config, "config")
	l.readyMu.Do(func() { close(l.ready) })

	return true, l.stream(ctx, conn)
}

// checkServer finds the configuration faults that would otherwise surface as obscure errors
// later: wal_level and missing publications (which pgoutput reports only when a change arrives).
func (l *Listener) checkServer(ctx context.Context, conn *pgconn.PgConn) error {
	res, err := conn.Exec(ctx, "SHOW wal_level").ReadAll()
	if err != nil {
		return fmt.Errorf("reading wal_level: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return fmt.Errorf("reading wal_level: unexpected result shape")
	}
	if level := string(res[0].Rows[0][0]); level != "logical" {
		return fmt.Errorf("%w (it is %q): run ALTER SYSTEM SET wal_level = logical; as a superuser and restart PostgreSQL, or run cdc-relay with --poll (latency then equals the sweep interval)", ErrWALLevel, level)
	}

	lits := make([]string, len(l.cfg.Publications))
	for i, p := range l.cfg.Publications {
		lits[i] = "'" + p + "'" // New rejected names containing quotes
	}
	res, err = conn.Exec(ctx, "SELECT pubname FROM pg_catalog.pg_publication WHERE pubname IN ("+strings.Join(lits, ",")+")").ReadAll()
	if err != nil {
		return fmt.Errorf("looking up publications: %w", err)
	}
	found := map[string]bool{}
	for _, r := range res {
		for _, row := range r.Rows {
			found[string(row[0])] = true
		}
	}
	var missing []string
	for _, p := range l.cfg.Publications {
		if !found[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found in database %q: run cdc-relay install against this database (it creates them)", ErrNoPublication, strings.Join(missing, ", "), l.pgcfg.Database)
	}
	return nil
}

type relKind uint8

const (
	relQueue relKind = iota
	relConfig
	relResync
)

const (
	flagQueued uint8 = 1 << iota
	flagConfig
	flagResync
)

// relation is what the doorbell knows of a published table: its kind and name, and for the
// customer pending queue the positions of the columns a DELETE row is read from (-1: absent).
type relation struct {
	kind                  relKind
	name                  string
	idCol, keyCol, actCol int
}

// custPending is the customer pending queue, whose DELETE rows the doorbell reads.
const custPending = "data_sync_cust_pending_queue"

// deleteOf returns the row id and customer of an inserted customer DELETE row (ok false for
// any other row, or columns sent other than as text).
func (r relation) deleteOf(t *pglogrepl.TupleData) (id int64, key string, ok bool) {
	if r.name != custPending || t == nil || r.idCol < 0 || r.keyCol < 0 || r.actCol < 0 {
		return 0, "", false
	}
	text := func(i int) (string, bool) {
		if i >= len(t.Columns) || t.Columns[i].DataType != pglogrepl.TupleDataTypeText {
			return "", false
		}
		return string(t.Columns[i].Data), true
	}
	act, ok1 := text(r.actCol)
	key, ok2 := text(r.keyCol)
	ids, ok3 := text(r.idCol)
	if !ok1 || !ok2 || !ok3 || act != "DELETE" {
		return 0, "", false
	}
	id, err := strconv.ParseInt(ids, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return id, key, true
}

// txState is what one transaction did that the doorbell rings for: flags, and the tables it
// queued into ("" for a relation the stream did not name).
type txState struct {
	flags   uint8
	tables  []string
	deletes map[string]int64 // customer DELETE rows queued: customer -> highest row id
}

// decoder holds the only state the doorbell keeps: what each relation is, and what the open
// transaction (or each streamed transaction id) did.
type decoder struct {
	rels      map[uint32]relation
	inStream  bool
	streamXid uint32
	tx        txState
	txXid     uint32 // the open (non-streamed) transaction's id, from its Begin
	streamed  map[uint32]*txState
}

func (d *decoder) mark(rel uint32, truncate bool) *txState {
	r, ok := d.rels[rel]
	if !ok {
		r.kind = relQueue // unknown relation: a spurious wake-up costs less than a missed one
	}
	var f uint8
	switch {
	case r.kind == relConfig:
		f = flagConfig
	case r.kind == relResync && !truncate:
		f = flagQueued | flagResync
	case !truncate:
		f = flagQueued
	}
	s := &d.tx
	if d.inStream {
		if s = d.streamed[d.streamXid]; s == nil {
			s = &txState{}
			d.streamed[d.streamXid] = s
		}
	}
	s.flags |= f
	if f&flagQueued != 0 && !slices.Contains(s.tables, r.name) {
		s.tables = append(s.tables, r.name)
	}
	return s
}

// handle processes one pgoutput message and returns what a transaction that just committed
// did, its id and its end LSN.
func (d *decoder) handle(data []byte) (fired txState, xid uint32, end pglogrepl.LSN, err error) {
	if len(data) == 0 {
		return txState{}, 0, 0, nil
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeBegin, pglogrepl.MessageTypeRelation, pglogrepl.MessageTypeCommit,
		pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete,
		pglogrepl.MessageTypeTruncate, pglogrepl.MessageTypeStreamStart, pglogrepl.MessageTypeStreamStop,
		pglogrepl.MessageTypeStreamCommit, pglogrepl.MessageTypeStreamAbort:
	default:
		return txState{}, 0, 0, nil // types, origins, logical messages: nothing to ring for
	}
	msg, err := pglogrepl.ParseV2(data, d.inStream)
	if err != nil {
		return txState{}, 0, 0, fmt.Errorf("decoding pgoutput message %q: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		d.tx, d.txXid = txState{}, m.Xid
	case *pglogrepl.RelationMessageV2:
		r := relation{kind: relQueue, name: m.RelationName, idCol: -1, keyCol: -1, actCol: -1}
		switch m.RelationName {
		case "data_sync_config":
			r.kind = relConfig
		case "data_sync_resync":
			r.kind = relResync
		}
		for i, c := range m.Columns {
			switch c.Name {
			case "id":
				r.idCol = i
			case "unique_id":
				r.keyCol = i
			case "action":
				r.actCol = i
			}
		}
		d.rels[m.RelationID] = r
	case *pglogrepl.InsertMessageV2:
		s := d.mark(m.RelationID, false)
		if id, key, ok := d.rels[m.RelationID].deleteOf(m.Tuple); ok {
			if s.deletes == nil {
				s.deletes = map[string]int64{}
			}
			s.deletes[key] = max(s.deletes[key], id)
		}
	case *pglogrepl.UpdateMessageV2:
		d.mark(m.RelationID, false)
	case *pglogrepl.DeleteMessageV2:
		d.mark(m.RelationID, false)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			d.mark(id, true)
		}
	case *pglogrepl.CommitMessage:
		fired, d.tx = d.tx, txState{}
		return fired, d.txXid, m.TransactionEndLSN, nil
	case *pglogrepl.StreamStartMessageV2:
		d.inStream, d.streamXid = true, m.Xid
	case *pglogrepl.StreamStopMessageV2:
		d.inStream = false
	case *pglogrepl.StreamCommitMessageV2:
		if s := d.streamed[m.Xid]; s != nil {
			fired = *s
		}
		delete(d.streamed, m.Xid)
		return fired, m.Xid, m.TransactionEndLSN, nil
	case *pglogrepl.StreamAbortMessageV2:
		// Only a top-level abort discards the flags; a rolled-back subtransaction may leave a
		// spurious ring, which is harmless.
		if m.SubXid == m.Xid {
			delete(d.streamed, m.Xid)
		}
	}
	return txState{}, 0, 0, nil
}

// stream reads the replication stream, rings the doorbells and acknowledges positions.
func (l *Listener) stream(ctx context.Context, conn *pgconn.PgConn) error {
	d := &decoder{rels: map[uint32]relation{}, streamed: map[uint32]*txState{}}
	// serverEnd is the server's WAL end as its last message said: the slot lag gauge is what
	// lies between it and the position confirmed, known without a query.
	var seen, acked, serverEnd pglogrepl.LSN
	ack := func() error {
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: seen, WALFlushPosition: seen, WALApplyPosition: seen,
		}); err != nil {
			return fmt.Errorf("sending standby status update: %w", err)
		}
		acked = seen
		l.update(func(s *Status) { s.LastAcked = acked })
		l.cfg.Metrics.SlotLagBytes.Set(float64(max(serverEnd, acked) - acked))
		return nil
	}
	next := time.Now().Add(l.cfg.StandbyInterval)
	for {
		if !time.Now().Before(next) {
			if err := ack(); err != nil {
				return err
			}
			next = time.Now().Add(l.cfg.StandbyInterval)
		}
		rctx, cancel := context.WithDeadline(ctx, next)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receiving replication stream: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication stream: server ended the stream")
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				// While other databases of the cluster write WAL, the walsender sends a keepalive
				// each time it reads past what we confirmed (measured: 24,000 in 30 s of an idle
				// relay after the bench's backlog runs, 0.9 CPU-s). Confirming each at once keeps
				// that rate lowest: confirming at most every 100 ms doubled it.
				l.cfg.Metrics.ReplicationMessages.WithLabelValues("keepalive").Inc()
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing keepalive: %w", err)
				}
				seen = max(seen, ka.ServerWALEnd)
				serverEnd = max(serverEnd, ka.ServerWALEnd)
				l.update(func(s *Status) { s.LastServerWALEnd = ka.ServerWALEnd })
				if err := ack(); err != nil {
					return err
				}
				next = time.Now().Add(l.cfg.StandbyInterval)
			case pglogrepl.XLogDataByteID:
				l.cfg.Metrics.ReplicationMessages.WithLabelValues("data").Inc()
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing XLogData: %w", err)
				}
				serverEnd = max(serverEnd, x.ServerWALEnd)
				fired, xid, end, err := d.handle(x.WALData)
				if err != nil {
					return err
				}
				seen = max(seen, end)
				if fired.flags&flagResync != 0 {
					l.noteResync()
				}
				if len(fired.deletes) > 0 {
					l.noteDeleted(fired.deletes)
				}
				if fired.flags&flagQueued != 0 {
					l.noteQueued(xid, fired.tables)
					l.ring(l.queued, "replication")
				}
				if fired.flags&flagConfig != 0 {
					l.ring(l.config, "config")
				}
			}
		}
	}
}
