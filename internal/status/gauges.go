package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/relay"
)

// Defaults of GaugesConfig.
const (
	DefaultGaugesTTL     = 5 * time.Second
	DefaultGaugesTimeout = 2 * time.Second
)

// ErrGaugesClosed is returned by Refresh after Close.
var ErrGaugesClosed = errors.New("queue gauges closed")

// GaugesConfig configures Gauges. Zero values take the documented defaults.
type GaugesConfig struct {
	// ConnString is the CE database (required). Gauges open their own connection on it, never
	// one of the relay's: a scrape cannot take a connection the relay needs.
	ConnString string
	// TTL is how long a reading is served before the next scrape reads again. Default 5s: at
	// most one statement per TTL, however many scrapers ask.
	TTL time.Duration
	// Timeout is the connection's statement_timeout; a refresh (connection included) is given
	// up after twice that. Default 2s. A slow or locked database delays a scrape by at most
	// that, after which the previous values are served.
	Timeout time.Duration
	// Tracer, when set, sees every statement (tests count them); default a metrics.QueryCounter
	// of its own. The daemon's counts them in cdc_relay_db_queries_total{by="scrape"}.
	Tracer pgx.QueryTracer
	// Metrics are the queue gauges to set (the daemon's, served on /metrics); default gauges of
	// their own that nothing serves.
	Metrics *metrics.Queue
	// Logger receives refresh failures; default none.
	Logger *zap.Logger
}

// Gauges refreshes the queue gauges (cdc_relay_queue_rows, cdc_relay_oldest_undelivered_seconds)
// for /metrics: at most once per TTL, one refresh at a time however many scrapes arrive
// together (they wait for the refresh in flight), on a connection of its own with a statement
// timeout.
type Gauges struct {
	cfg    GaugesConfig
	ctx    context.Context // ended by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	read    time.Time     // when the last refresh started; the next is due TTL later
	running chan struct{} // closed when the refresh in flight ends; nil when none runs
	lastErr error
	closed  bool
	conn    *pgx.Conn // used only by the refresh in flight
}

// NewGauges returns Gauges for cfg; it connects on the first refresh.
func NewGauges(cfg GaugesConfig) *Gauges {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultGaugesTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultGaugesTimeout
	}
	if cfg.Tracer == nil {
		cfg.Tracer = metrics.NewQueryCounter(nil)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewQueue(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(metrics.ForScrape(context.Background()))
	return &Gauges{cfg: cfg, ctx: ctx, cancel: cancel}
}

// Refresh brings the gauges up to date unless they were read less than TTL ago. It waits for
// the refresh in flight (starting one if due) or for ctx, whichever ends first, and returns the
// refresh's error. A scraper that leaves does not cancel the refresh others wait for.
func (g *Gauges) Refresh(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrGaugesClosed
	}
	if g.running == nil {
		if time.Since(g.read) < g.cfg.TTL {
			err := g.lastErr
			g.mu.Unlock()
			return err
		}
		g.read = time.Now()
		g.running = make(chan struct{})
		go g.refresh(g.running)
	}
	done := g.running
	g.mu.Unlock()
	select {
	case <-done:
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.lastErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Gauges) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(g.ctx, 2*g.cfg.Timeout)
	defer cancel()
	err := g.read1(ctx)
	if err != nil {
		g.cfg.Logger.Warn("reading the queue gauges for /metrics failed; serving the previous values", zap.Error(err))
	}
	g.mu.Lock()
	g.lastErr, g.running = err, nil
	g.mu.Unlock()
	close(done)
}

// read1 runs one query round on the gauges' connection, (re)connecting first when needed.
func (g *Gauges) read1(ctx context.Context) error {
	if g.conn == nil {
		cc, err := pgx.ParseConfig(g.cfg.ConnString)
		if err != nil {
			return fmt.Errorf("parsing the database URL for the queue gauges: %w", err)
		}
		relay.ConfigureConn(cc)
		cc.RuntimeParams["application_name"] = "cdc-relay metrics"
		cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(g.cfg.Timeout.Milliseconds(), 10)
		cc.Tracer = g.cfg.Tracer
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return fmt.Errorf("connecting for the queue gauges: %w", err)
		}
		g.conn = conn
	}
	qs, err := relay.NewStore(g.conn).QueueStatus(ctx)
	if err != nil {
		// The connection may be broken or mid-cancel: start afresh next time.
		g.conn.Close(context.Background())
		g.conn = nil
		return err
	}
	Export(g.cfg.Metrics, qs)
	return nil
}

// Close waits for the refresh in flight, if any, after cancelling it, and closes the connection.
func (g *Gauges) Close() {
	g.mu.Lock()
	g.closed = true
	done := g.running
	g.mu.Unlock()
	g.cancel()
	if done != nil {
		<-done
	}
	if g.conn != nil {
		g.conn.Close(context.Background())
		g.conn = nil
	}
}
