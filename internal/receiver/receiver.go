// Package receiver is a reference Data Sync receiver: a real HTTPS server with an OAuth2
// client-credentials token endpoint and the /datasync endpoint, which validates and records what
// it receives. People building the other side can read it as a specification; cdc-relay's tests,
// demo and benchmark use it as the far end, with faults (errors, delays, rate limits, resets,
// outages) switchable at runtime. It can also play stricter partners: a token endpoint that
// demands a scope, an audience, one client authentication style or a client certificate, an API
// that demands a client certificate, and Standard Webhooks signature verification.
package receiver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// ErrConfig reports an unusable Config; the message names the field and the fix.
var ErrConfig = errors.New("receiver config")

// MaxBodyBytes is the largest request body /datasync accepts (413 beyond).
const MaxBodyBytes = 64 << 20

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Addr is the listen address; default "127.0.0.1:0" (a free port).
	Addr string
	// CertFile and KeyFile are a PEM certificate (chain) and key. When both are empty a
	// self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost is generated.
	CertFile, KeyFile string
	// Hostnames are extra DNS names for the generated certificate (e.g. "receiver" in Docker
	// Compose, where the relay reaches it by service name).
	Hostnames []string
	// MinTLSVersion defaults to TLS 1.2, as the appendix requires; MaxTLSVersion 0 means the
	// highest supported. A test sets Min TLS 1.0 and Max TLS 1.1 to play a legacy receiver.
	MinTLSVersion, MaxTLSVersion uint16
	// HTTP2 offers HTTP/2 (ALPN h2) beside HTTP/1.1, as most partners' servers do. Off by
	// default: the connection-reset fault needs HTTP/1.1 connections.
	HTTP2 bool
	// ClientID and ClientSecret are the client credentials the token endpoint accepts (required).
	ClientID, ClientSecret string
	// TokenTTL is the lifetime of issued tokens (expires_in); default 1h.
	TokenTTL time.Duration
	// RequiredScope, when set, is the space-separated scopes a token request must ask for (each
	// of them; others may be asked too), as Azure AD / Entra ID, Okta or Keycloak require:
	// 400 invalid_scope otherwise.
	RequiredScope string
	// RequiredAudience, when set, is the audience parameter a token request must carry, as
	// Auth0 requires: 400 invalid_request otherwise.
	RequiredAudience string
	// TokenAuthStyle is how the token endpoint accepts client credentials: "basic" (HTTP Basic
	// only), "body" (client_id and client_secret in the form only), or "" for both.
	TokenAuthStyle string
	// ClientCAPEM, when set, is the PEM CA bundle client certificates are verified against; a
	// certificate that does not verify fails the TLS handshake.
	ClientCAPEM []byte
	// ClientCertForToken and ClientCertForAPI require a verified client certificate (mTLS) on
	// the token endpoint and on /datasync; they need ClientCAPEM.
	ClientCertForToken, ClientCertForAPI bool
	// SigningSecrets, when set, makes /datasync verify Standard Webhooks signatures (webhook-id,
	// webhook-timestamp, webhook-signature): a request is accepted when one of its v1 signatures
	// matches one of these whsec_ secrets and its timestamp is within SignatureTolerance.
	SigningSecrets []string
	// SignatureTolerance is how far webhook-timestamp may be from now; default 5 minutes.
	SignatureTolerance time.Duration
	// Strict validates every payload with mapping.CheckMessage (400 on failure).
	Strict bool
	// Log, when set, receives one JSON line per accepted message: time, action, type, uniqueId,
	// payload length, duplicate. Never tokens or payloads.
	Log io.Writer
	// OnMessage, when set, is called for each accepted message, after the response is decided
	// and before it is written.
	OnMessage func(Received)
}

// Received is one accepted message as seen by the receiver.
type Received struct {
	Message mapping.Message
	// At is when the request carrying the message arrived.
	At time.Time
	// UserAgent is the request's User-Agent (cdc-relay sends its host and pid).
	UserAgent string
	// Proto is the request's protocol: HTTP/1.1 or HTTP/2.0.
	Proto string
	// WebhookID is the request's verified webhook-id header, when SigningSecrets are set.
	WebhookID string
	// Duplicate is true when a message with the same uniqueId was accepted before.
	Duplicate bool
	// Sample is true for the "Send Sample Message" connectivity test (payload "Test message",
	// uniqueId "0"), which is not counted as data.
	Sample bool
}

// Faults are failures the receiver injects, switchable at runtime with SetFaults, so the relay's
// retry, backoff, token refresh and connection handling can be exercised against real HTTPS.
type Faults struct {
	// FailRate is the fraction (0..1) of authorised, well-formed message POSTs answered
	// FailStatus (default 503) instead of 200.
	FailRate   float64
	FailStatus int
	// RetryAfter, when positive, is sent as Retry-After (whole seconds, rounded up) with every
	// injected failure and 429.
	RetryAfter time.Duration
	// Delay is slept before answering each POST (cut short if the client goes away): the
	// latency of a remote partner.
	Delay time.Duration
	// MaxInflight is the number of POSTs handled at once (0: unlimited); a POST beyond it is
	// answered 429 at once, with Retry-After when RetryAfter is set.
	MaxInflight int
	// RateLimit is the number of messages per second accepted (0: unlimited); excess POSTs are
	// answered 429 with Retry-After. The burst is one second's worth (at least one message).
	RateLimit float64
	// ResetRate is the fraction of POSTs whose TCP connection is reset instead of answered.
	ResetRate float64
	// Down answers every POST 503.
	Down bool
	// TokenDown answers the token endpoint 503; TokenGarbage answers it 200 text/html garbage.
	TokenDown, TokenGarbage bool
	// RedirectTo, when set, answers POSTs 307 with this Location.
	RedirectTo string
}

// Stats counts what the receiver saw, for assertions and the demo.
type Stats struct {
	Requests       int            // POSTs to /datasync
	Messages       int            // accepted data messages (samples excluded), duplicates included
	Unique         int            // distinct uniqueIds accepted
	Duplicates     int            // accepted messages whose uniqueId was seen before
	Samples        int            // accepted "Send Sample Message" connectivity tests
	TokensIssued   int            // access tokens issued
	Rejected       map[string]int // refusals by reason (auth, content_type, envelope, payload, ...)
	FaultsInjected int            // responses changed by Faults
	OverInflight   int            // POSTs answered 429 for exceeding MaxInflight
}

// Server is the reference receiver. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	cert    tls.Certificate
	certPEM []byte
	tlsConf *tls.Config

	inflight atomic.Int64 // POSTs being handled

	mu        sync.Mutex
	faults    Faults
	limiter   *rate.Limiter
	clientID  string
	secret    string
	tokens    map[string]time.Time // token -> expiry
	signKeys  [][]byte
	signedIDs []string // webhook-id of every request whose signature verified, in order
	seen      map[string]struct{}
	stats     Stats
	logMu     sync.Mutex

	startOnce sync.Once
	startErr  error
	ln        net.Listener
	srv       *http.Server
	served    chan struct{}
	serveErr  error
	closeOnce sync.Once
}

// New validates cfg and prepares a Server; it does not listen yet (see Start).
func New(cfg Config) (*Server, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, fmt.Errorf("%w: client credentials are required: set ClientID and ClientSecret (--client-id, --client-secret-file)", ErrConfig)
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, fmt.Errorf("%w: CertFile and KeyFile go together: give both, or neither for a generated certificate", ErrConfig)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.MinTLSVersion == 0 {
		cfg.MinTLSVersion = tls.VersionTLS12
	}
	if cfg.MaxTLSVersion != 0 && cfg.MaxTLSVersion < cfg.MinTLSVersion {
		return nil, fmt.Errorf("%w: MaxTLSVersion %s is below MinTLSVersion %s: raise the maximum or lower the minimum",
			ErrConfig, tls.VersionName(cfg.MaxTLSVersion), tls.VersionName(cfg.MinTLSVersion))
	}
	if cfg.TokenTTL < 0 {
		return nil, fmt.Errorf("%w: TokenTTL %s is negative: use a positive duration such as 1h", ErrConfig, cfg.TokenTTL)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Hour
	}
	switch cfg.TokenAuthStyle {
	case "", "basic", "body":
	default:
		return nil, fmt.Errorf("%w: TokenAuthStyle %q: use basic, body, or empty for both", ErrConfig, cfg.TokenAuthStyle)
	}
	if (cfg.ClientCertForToken || cfg.ClientCertForAPI) && len(cfg.ClientCAPEM) == 0 {
		return nil, fmt.Errorf("%w: requiring client certificates needs ClientCAPEM (--client-ca-file), the CA they must be issued by", ErrConfig)
	}
	if cfg.SignatureTolerance <= 0 {
		cfg.SignatureTolerance = 5 * time.Minute
	}
	var signKeys [][]byte
	for i, secret := range cfg.SigningSecrets {
		key, err := credentials.SigningKey(secret)
		if err != nil {
			return nil, fmt.Errorf("%w: signing secret %d: %w", ErrConfig, i+1, err)
		}
		signKeys = append(signKeys, key)
	}
	s := &Server{
		cfg:      cfg,
		clientID: cfg.ClientID,
		secret:   cfg.ClientSecret,
		tokens:   map[string]time.Time{},
		seen:     map[string]struct{}{},
		signKeys: signKeys,
		stats:    Stats{Rejected: map[string]int{}},
		served:   make(chan struct{}),
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: load certificate %s and key %s: %w", ErrConfig, cfg.CertFile, cfg.KeyFile, err)
		}
		certPEM, err := os.ReadFile(cfg.CertFile)
		if err != nil {
			return nil, fmt.Errorf("%w: read certificate %s: %w", ErrConfig, cfg.CertFile, err)
		}
		s.cert, s.certPEM = cert, certPEM
	} else {
		cert, certPEM, err := selfSigned(cfg.Hostnames)
		if err != nil {
			return nil, err
		}
		s.cert, s.certPEM = cert, certPEM
	}
	s.tlsConf = &tls.Config{
		Certificates: []tls.Certificate{s.cert},
		MinVersion:   cfg.MinTLSVersion,
		MaxVersion:   cfg.MaxTLSVersion,
		NextProtos:   nextProtos(cfg.HTTP2),
	}
	if len(cfg.ClientCAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.ClientCAPEM) {
			return nil, fmt.Errorf("%w: ClientCAPEM holds no PEM certificate: give the CA that issues client certificates", ErrConfig)
		}
		s.tlsConf.ClientCAs = pool
		s.tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth/token", s.handleToken)
	mux.HandleFunc("/datasync", s.handleDataSync)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute, // 64 MiB bodies over slow links
		WriteTimeout:      10 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return s, nil
}

// Start listens on Addr (so the URLs are known) and serves in the background.
func (s *Server) Start() error {
	s.startOnce.Do(func() {
		ln, err := net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			s.startErr = fmt.Errorf("receiver listen on %s: %w (pick a free address with --addr)", s.cfg.Addr, err)
			close(s.served)
			return
		}
		s.mu.Lock()
		s.ln = ln
		s.mu.Unlock()
		go func() {
			err := s.srv.Serve(tls.NewListener(ln, s.tlsConf))
			if !errors.Is(err, http.ErrServerClosed) {
				s.serveErr = fmt.Errorf("receiver serve: %w", err)
			}
			close(s.served)
		}()
	})
	return s.startErr
}

// Run starts the server if needed and serves until ctx is done, then shuts down gracefully
// (in-flight requests get 5 s). It returns nil on a clean stop.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	select {
	case <-s.served:
		return s.serveErr
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shutCtx); err != nil {
		_ = s.srv.Close()
	}
	<-s.served
	return s.serveErr
}

// Close stops the server at once, dropping open connections.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.srv.Close()
		if s.listener() != nil {
			<-s.served
		}
	})
	if err != nil {
		return fmt.Errorf("close receiver: %w", err)
	}
	return nil
}

func (s *Server) listener() net.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln
}

func (s *Server) baseURL() string {
	ln := s.listener()
	if ln == nil {
		return ""
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// APIURL is the Data Sync endpoint (DataSyncApiUrl), e.g. https://127.0.0.1:PORT/datasync;
// empty before Start.
func (s *Server) APIURL() string {
	if b := s.baseURL(); b != "" {
		return b + "/datasync"
	}
	return ""
}

// TokenURL is the OAuth2 token endpoint (DataSyncTokenUrl); empty before Start.
func (s *Server) TokenURL() string {
	if b := s.baseURL(); b != "" {
		return b + "/oauth/token"
	}
	return ""
}

// CAPEM returns the PEM certificate clients must trust: the generated self-signed certificate,
// or the contents of CertFile.
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.certPEM...) }

// WriteCAFile writes CAPEM to path (mode 0644) for clients in other processes.
func (s *Server) WriteCAFile(path string) error {
	if err := os.WriteFile(path, s.certPEM, 0o644); err != nil {
		return fmt.Errorf("write receiver CA file: %w", err)
	}
	return nil
}

// SetFaults replaces the injected faults; it applies to the next request.
func (s *Server) SetFaults(f Faults) {
	if f.FailStatus == 0 {
		f.FailStatus = http.StatusServiceUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.RateLimit != s.faults.RateLimit || s.limiter == nil {
		s.limiter = nil
		if f.RateLimit > 0 {
			s.limiter = rate.NewLimiter(rate.Limit(f.RateLimit), burst(f.RateLimit))
		}
	}
	s.faults = f
}

func burst(r float64) int {
	if r < 1 {
		return 1
	}
	return int(r)
}

// RevokeTokens invalidates every token issued so far: later requests with them get 401.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// SetCredentials changes the accepted client credentials (e.g. to revoke the client, then
// restore it). Tokens already issued stay valid; call RevokeTokens to drop them too.
func (s *Server) SetCredentials(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientID, s.secret = id, secret
}

// SignedIDs returns the webhook-id of every request whose Standard Webhooks signature verified,
// in arrival order, including requests then answered with an injected failure: a resend of
// the same records shows the same id again.
func (s *Server) SignedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.signedIDs...)
}

// Stats returns a copy of the counters.
// Inflight returns the POSTs to /datasync being handled now.
func (s *Server) Inflight() int { return int(s.inflight.Load()) }

func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Unique = len(s.seen)
	st.Rejected = make(map[string]int, len(s.stats.Rejected))
	for k, v := range s.stats.Rejected {
		st.Rejected[k] = v
	}
	return st
}

// nextProtos is what the receiver offers in ALPN.
func nextProtos(http2 bool) []string {
	if http2 {
		return []string{"h2", "http/1.1"}
	}
	return []string{"http/1.1"}
}
