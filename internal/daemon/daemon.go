// Package daemon assembles `cdc-relay run`: the replication doorbell, the relay, and the admin
// HTTP server, under one errgroup, on one connection pool.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/cdc-relay/cdc-relay/cdc"
	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
	"github.com/cdc-relay/cdc-relay/internal/schema"
	"github.com/cdc-relay/cdc-relay/internal/sender"
	"github.com/cdc-relay/cdc-relay/internal/status"
	"github.com/cdc-relay/cdc-relay/relay"
)

// DefaultAdminAddr is where the admin server listens unless told otherwise: localhost only.
const DefaultAdminAddr = "127.0.0.1:9187"

// Config is everything `cdc-relay run` takes. Zero values take the documented defaults.
type Config struct {
	// DatabaseURL is the CE database (required).
	DatabaseURL string
	// Relay tunes delivery (see relay.Config).
	Relay relay.Config
	// Poll runs without the replication doorbell: the relay wakes only on its sweep. For servers
	// whose wal_level cannot be logical.
	Poll bool
	// AdminAddr serves /metrics, /livez and /readyz. Default "127.0.0.1:9187" (localhost only);
	// "off" disables it.
	AdminAddr string
	// CAFile is an extra PEM bundle trusted for the receiver and token endpoint.
	CAFile string
	// CredentialsPath is the credential store; default credentials.DefaultPath.
	CredentialsPath string
	// ClientCertFile and ClientKeyFile are an mTLS client certificate and key (PEM) that replace
	// the stored pair; read again when they change.
	ClientCertFile, ClientKeyFile string
	// AllowInsecureHTTP permits http:// URLs (local testing only).
	AllowInsecureHTTP bool
	// RequestTimeout bounds each request to the receiver and token endpoint. Default 10s.
	RequestTimeout time.Duration
	// Getenv reads the environment (credential overrides); default none.
	Getenv func(string) string
	// Logger receives the daemon's logs.
	Logger *zap.Logger
	// Metrics tunes the queue gauges read for /metrics (cache period, statement timeout); its
	// ConnString is DatabaseURL. See status.GaugesConfig for the defaults.
	Metrics status.GaugesConfig
	// OnAdminListen, when set, is told the admin server's address once it listens (tests).
	OnAdminListen func(addr string)
	// Registry receives the daemon's metrics (metrics.New: the relay's, the doorbell's, the
	// senders', the queue gauges and the statement counter) and is what /metrics serves.
	// Default metrics.NewRegistry(), which adds the Go runtime and process collectors.
	Registry *prometheus.Registry
}

// Run runs the daemon until ctx is cancelled (nil) or a part fails for good (its error).
// Configuration faults are reported at once, before anything is delivered. A stop asked for
// while it starts (a signal during its first statements) is a clean stop too: nil.
func Run(ctx context.Context, cfg Config) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			cfg.Logger.Debug("start-up step ended by the stop", zap.Error(err))
			err = nil
		}
	}()
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Getenv == nil {
		cfg.Getenv = func(string) string { return "" }
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.CredentialsPath == "" {
		cfg.CredentialsPath = credentials.DefaultPath(cfg.Getenv)
	}
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewRegistry()
	}
	m := metrics.New(cfg.Registry)
	defer holdSIGHUP()()
	log := cfg.Logger
	// The admin address is bound before anything else: a relay that cannot serve it must refuse
	// to start, not wait as a standby and fail the moment it should take over.
	var ln net.Listener
	if cfg.AdminAddr != "off" {
		var err error
		if ln, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return fmt.Errorf("listening on --admin-addr %s: %w (is another cdc-relay or program using it? choose another address with --admin-addr, or --admin-addr off)", cfg.AdminAddr, err)
		}
		defer ln.Close()
		if cfg.OnAdminListen != nil {
			cfg.OnAdminListen(ln.Addr().String())
		}
	}
	cfg.Relay.Logger = log.Named("relay")
	cfg.Relay.Metrics = m.Relay
	rcfg := cfg.Relay.WithDefaults()
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parsing --database-url: %w", err)
	}
	poolCfg.MaxConns = int32(min(rcfg.MaxInFlight()+4, 32))
	relay.ConfigurePool(poolCfg)
	poolCfg.ConnConfig.Tracer = m.Queries
	db, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer db.Close()

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := relay.NewStore(db).Settings(startCtx); err != nil {
		return err
	}
	var listener *cdc.Listener
	if !cfg.Poll {
		conn, err := db.Acquire(startCtx)
		if err != nil {
			return fmt.Errorf("connecting to the database: %w", err)
		}
		err = schema.CheckWALLevel(startCtx, conn.Conn())
		conn.Release()
		if err != nil {
			return err
		}
		listener, err = cdc.New(cdc.Config{ConnString: cfg.DatabaseURL, Logger: log.Named("cdc"), Metrics: m.Doorbell})
		if err != nil {
			return err
		}
	} else {
		log.Warn("running without the replication doorbell (--poll): changes wait for the sweep", zap.Duration("sweep_interval", rcfg.SweepInterval))
	}
	var bell relay.Doorbell
	if listener != nil {
		bell = listener
	}
	r, err := relay.New(cfg.Relay, db, Posters(cfg, m.Sender), bell)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	if listener != nil {
		g.Go(func() error { return listener.Run(gctx) })
	}
	g.Go(func() error { return r.Run(gctx) })
	if ln != nil {
		mcfg := cfg.Metrics
		mcfg.ConnString, mcfg.Logger, mcfg.Metrics = cfg.DatabaseURL, log.Named("metrics"), m.Queue
		if mcfg.Tracer == nil {
			mcfg.Tracer = m.Queries
		}
		gauges := status.NewGauges(mcfg)
		defer gauges.Close()
		srv := &http.Server{Handler: adminHandler(cfg.Registry, gauges, r, listener), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shut)
		})
		log.Info("admin server listening", zap.String("addr", ln.Addr().String()))
	}
	return g.Wait()
}

// Posters returns the relay's PosterFactory: settings and credentials checked, then one
// sender per settings version, all recording in m. The sender reads the credential again when
// its files change and on SIGHUP, so a rotated secret or certificate needs no restart.
func Posters(cfg Config, m *metrics.Sender) relay.PosterFactory {
	return func(ctx context.Context, s relay.Settings) (relay.Poster, func(), error) {
		snd, err := NewSender(cfg, s, m)
		if err != nil {
			return nil, nil, err
		}
		return poster{snd}, snd.Close, nil
	}
}

// NewSender checks the settings and builds the sender for them, with a credential source that
// follows rotations (and a SIGHUP handler, stopped by the sender's Close). It records in m
// (nil: instruments of its own that nothing serves).
func NewSender(cfg Config, s relay.Settings, m *metrics.Sender) (*sender.Sender, error) {
	if err := s.CheckDelivery(cfg.AllowInsecureHTTP); err != nil {
		return nil, err
	}
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	path := cfg.CredentialsPath
	if path == "" {
		path = credentials.DefaultPath(getenv)
	}
	src, err := credentials.NewSource(credentials.SourceConfig{Getenv: getenv, Path: path,
		MapName: s.CredentialMapName, Key: s.CredentialKeyName, CertFile: cfg.ClientCertFile, KeyFile: cfg.ClientKeyFile})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	rcfg := cfg.Relay.WithDefaults()
	stopHUP := reloadOnSIGHUP(src, log)
	snd, err := sender.New(sender.Config{
		APIURL: s.APIURL, TokenURL: s.TokenURL, Source: src, CAFile: cfg.CAFile,
		TokenScope: s.TokenScope, TokenAudience: s.TokenAudience, TokenAuthStyle: s.TokenAuthStyle,
		Sign:              s.Signing == "standard-webhooks",
		AllowInsecureHTTP: cfg.AllowInsecureHTTP, RequestTimeout: cfg.RequestTimeout,
		MaxConns: max(64, 2*rcfg.MaxInFlight()), Logger: log.Named("sender"),
		UserAgent: userAgent(),
		OnClose:   stopHUP,
		Metrics:   m,
	})
	if err != nil {
		stopHUP()
		return nil, err
	}
	return snd, nil
}

// holdSIGHUP keeps SIGHUP from stopping the process (its default action) while the daemon runs,
// including while it has no sender (Data Sync disabled, settings unusable): operators send it to
// make the relay read its credential again, never to stop it. The senders' own handlers
// (reloadOnSIGHUP) do the reading.
func holdSIGHUP() (stop func()) { return onSIGHUP(func() {}) }

// reloadOnSIGHUP makes src read the credential again on every SIGHUP until the returned
// function is called.
func reloadOnSIGHUP(src *credentials.Source, log *zap.Logger) func() {
	return onSIGHUP(func() {
		log.Info("SIGHUP: reading the credential again")
		src.Reload()
	})
}

// onSIGHUP calls fn on every SIGHUP until the returned function is called (once or more).
func onSIGHUP(fn func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				fn()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(hup)
			close(done)
		})
	}
}

// userAgent names this relay process to the receiver (host and pid), so a receiver's log shows
// which relay sent each request.
func userAgent() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s (%s; pid %d)", sender.DefaultUserAgent, host, os.Getpid())
}

// poster adapts the sender to the relay's Poster.
type poster struct{ s *sender.Sender }

func (p poster) Post(ctx context.Context, body []byte) (relay.Response, error) {
	res, err := p.s.Post(ctx, body)
	return relay.Response{Status: res.Status, RetryAfter: res.RetryAfter, Excerpt: res.Excerpt,
		Location: res.Location, TokenRefreshed: res.TokenRefreshed}, err
}

// adminHandler serves reg on /metrics, and /livez and /readyz. The queue gauges are read at
// scrape time (an idle relay issues no queries unless scraped), at most once per cache period
// and on their own connection (status.Gauges); when the read fails or times out, the previous
// values are served.
func adminHandler(reg prometheus.Gatherer, gauges *status.Gauges, r *relay.Relay, l *cdc.Listener) http.Handler {
	mux := http.NewServeMux()
	prom := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, req *http.Request) {
		_ = gauges.Refresh(req.Context()) // failures are logged by Gauges; stale values are served
		prom.ServeHTTP(w, req)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := r.State()
		ready, state := st.Phase.Ready(), st.String()
		if l != nil && !l.Status().Connected {
			ready, state = false, state+"; replication doorbell not connected"
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, state)
	})
	return mux
}
