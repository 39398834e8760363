package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// custJSON returns the appendix's customer sample payload with customerID set to id.
func custJSON(t testing.TB, id string) string {
	t.Helper()
	b, err := os.ReadFile("../testdata/customer-update.payload.json")
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	m["customerID"] = id
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return string(out)
}

// trnJSON returns the appendix's transaction sample payload with retailTransactionId set to id.
func trnJSON(t testing.TB, id string) string {
	t.Helper()
	b, err := os.ReadFile("../testdata/transaction-create.payload.json")
	require.NoError(t, err)
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	require.NoError(t, d.Decode(&m))
	m["retailTransactionId"] = id
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return string(out)
}

// delivery is one message as the test poster saw it.
type delivery struct {
	msg     mapping.Message
	request int
}

// poster is a test double of the HTTP sender: it decodes each body and answers with the
// status chosen by answer (200 when nil).
type poster struct {
	mu       sync.Mutex
	got      []delivery
	requests int
	inflight int
	maxIn    int
	answer   func(msgs []mapping.Message, n int) (relay.Response, error)
	posted   chan struct{}
}

func newPoster() *poster { return &poster{posted: make(chan struct{}, 1)} }

func (p *poster) Post(ctx context.Context, body []byte) (relay.Response, error) {
	env, err := mapping.DecodeEnvelope(body)
	if err != nil {
		return relay.Response{}, fmt.Errorf("test poster: bad body: %w", err)
	}
	p.mu.Lock()
	p.requests++
	n := p.requests
	p.inflight++
	p.maxIn = max(p.maxIn, p.inflight)
	answer := p.answer
	p.mu.Unlock()
	resp, aerr := relay.Response{Status: 200}, error(nil)
	if answer != nil {
		resp, aerr = answer(env.Messages, n)
	}
	p.mu.Lock()
	p.inflight--
	if resp.Status == 200 && aerr == nil {
		for _, m := range env.Messages {
			p.got = append(p.got, delivery{msg: m, request: n})
		}
	}
	p.mu.Unlock()
	select {
	case p.posted <- struct{}{}:
	default:
	}
	return resp, aerr
}

func (p *poster) setAnswer(f func(msgs []mapping.Message, n int) (relay.Response, error)) {
	p.mu.Lock()
	p.answer = f
	p.mu.Unlock()
}

// refuse answers status to every request whose first message is row id, 200 to the others.
func (p *poster) refuse(id int64, status int) {
	uniqueID := strconv.FormatInt(id, 10)
	p.setAnswer(func(msgs []mapping.Message, n int) (relay.Response, error) {
		if msgs[0].UniqueID == uniqueID {
			return relay.Response{Status: status}, nil
		}
		return relay.Response{Status: 200}, nil
	})
}

func (p *poster) delivered() []delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]delivery(nil), p.got...)
}

func (p *poster) factory() relay.PosterFactory {
	return func(ctx context.Context, s relay.Settings) (relay.Poster, func(), error) {
		if err := s.CheckDelivery(true); err != nil {
			return nil, nil, err
		}
		return p, func() {}, nil
	}
}

// env is one test's database, relay and doubles.
type env struct {
	t      *testing.T
	url    string
	db     *pgxpool.Pool
	bell   *relay.Bell
	poster *poster
	cancel context.CancelFunc
	done   chan error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := pgtest.NewDB(t)
	e := &env{t: t, url: url, db: pgtest.Pool(t, url), bell: relay.NewBell(), poster: newPoster()}
	e.exec(`UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/datasync' WHERE name = 'DataSyncApiUrl';
		UPDATE data_sync_config SET value = 'https://127.0.0.1:1/token' WHERE name = 'DataSyncTokenUrl';`)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	_, err := e.db.Exec(context.Background(), sql, args...)
	require.NoError(e.t, err, sql)
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

// queueCust queues a customer change by hand (as the triggers would) and returns its id.
func (e *env) queueCust(customer, action string) int64 {
	e.t.Helper()
	var payload *string
	if action != "DELETE" {
		s := custJSON(e.t, customer)
		payload = &s
	}
	var id int64
	require.NoError(e.t, e.db.QueryRow(context.Background(),
		`INSERT INTO data_sync_cust_pending_queue (unique_id, action, json_object) VALUES ($1, $2, $3) RETURNING id`,
		customer, action, payload).Scan(&id))
	return id
}

// deleteCustomer does to the queues what a customer's delete does (the delete trigger): it
// purges the customer's progress rows and queues its DELETE, whose id it returns.
func (e *env) deleteCustomer(customer string) int64 {
	e.t.Helper()
	e.exec(`DELETE FROM data_sync_cust_progress_queue WHERE unique_id = $1`, customer)
	return e.queueCust(customer, "DELETE")
}

func (e *env) queueTrn(trn string) int64 {
	e.t.Helper()
	var id int64
	require.NoError(e.t, e.db.QueryRow(context.Background(),
		`INSERT INTO data_sync_trn_pending_queue (unique_id, action, json_object) VALUES ($1, 'CREATE', $2) RETURNING id`,
		trn, trnJSON(e.t, trn)).Scan(&id))
	return id
}

// leaveInProgress moves customer rows from pending to progress, as an earlier run that stopped
// after moving them leaves them: the rows with the given ids, or every row when none is given.
func (e *env) leaveInProgress(ids ...int64) {
	e.t.Helper()
	e.exec(`WITH m AS (DELETE FROM data_sync_cust_pending_queue WHERE $1::bigint[] IS NULL OR id = ANY($1)
			RETURNING id, obj_name, unique_id, action, json_object, created_at)
		INSERT INTO data_sync_cust_progress_queue (id, obj_name, unique_id, action, json_object, created_at) SELECT * FROM m`, ids)
}

// start runs a relay with cfg (fast backoff by default) until the test ends.
func (e *env) start(cfg relay.Config) *relay.Relay {
	e.t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour
	}
	cfg.Logger = zaptest.NewLogger(e.t)
	r, err := relay.New(cfg, e.db, e.poster.factory(), e.bell)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- r.Run(ctx) }()
	e.t.Cleanup(func() { e.stop() })
	return r
}

// stop stops the relay and checks it returned nil.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		require.NoError(e.t, err)
	case <-time.After(30 * time.Second):
		e.t.Fatal("relay did not stop")
	}
}

// waitDelivered waits until n messages were delivered and the progress queues are empty.
func (e *env) waitDelivered(n int) []delivery {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		return len(e.poster.delivered()) >= n &&
			e.count(`SELECT (SELECT count(*) FROM data_sync_cust_progress_queue) + (SELECT count(*) FROM data_sync_trn_progress_queue)
				+ (SELECT count(*) FROM data_sync_cust_pending_queue) + (SELECT count(*) FROM data_sync_trn_pending_queue)`) == 0
	}, 60*time.Second, 5*time.Millisecond, "delivered %d of %d", len(e.poster.delivered()), n)
	return e.poster.delivered()
}

func idOf(t testing.TB, d delivery) int64 {
	id, err := strconv.ParseInt(d.msg.UniqueID, 10, 64)
	require.NoError(t, err)
	return id
}
