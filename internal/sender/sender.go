// Package sender POSTs Data Sync messages to the receiver over HTTPS, authenticated with an
// OAuth2 client-credentials token, as the appendix requires (TLS 1.2+, application/json, OAuth 2.0).
//
// One Sender holds one tuned connection pool (the default two idle connections per host cost a
// TLS handshake per request under concurrency), a token cache that a 401 invalidates exactly once,
// and a client that never follows redirects, so the bearer token only ever goes to the configured
// URL. Errors name the fix and never contain the client secret, the token or a payload.
package sender

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultRequestTimeout       = 10 * time.Second
	DefaultMaxConns             = 64
	DefaultTokenTTL             = 5 * time.Minute
	DefaultUserAgent            = "cdc-relay"
	excerptBytes                = 512
	drainCap              int64 = 1 << 20
)

var (
	// ErrInsecureURL is returned by New for an http:// URL without AllowInsecureHTTP: the token and
	// customer data would cross the network in clear text.
	ErrInsecureURL = errors.New("insecure URL")
	// ErrBadURL is returned by New for a URL that is missing, not absolute http(s), or carries a
	// user and password.
	ErrBadURL = errors.New("bad URL")
	// ErrToken wraps every failure to obtain an OAuth2 token, so callers can tell a credential or
	// token-endpoint problem from a receiver problem.
	ErrToken = errors.New("OAuth2 token error")
	// ErrRedirect is returned with a 3xx Result: cdc-relay never follows redirects, so the bearer
	// token and the payload cannot be sent somewhere else.
	ErrRedirect = errors.New("receiver redirected")
	// ErrTLS wraps certificate, handshake and protocol-version failures and an unusable --ca-file,
	// which retrying will not fix and which need an operator.
	ErrTLS = errors.New("TLS error")
)

// Config configures a Sender.
type Config struct {
	APIURL   string // DataSyncApiUrl: where messages are POSTed
	TokenURL string // DataSyncTokenUrl: the OAuth2 token endpoint
	// Credential is the OAuth2 client id and secret (and the optional client certificate and
	// signing secrets), used when Source is nil.
	Credential credentials.Credential
	// Source, when set, gives the credential at each token fetch and request instead, so a
	// secret, store or certificate rotated on disk is used without a restart.
	Source CredentialSource
	// TokenScope is the space-separated OAuth2 scope asked for (DataSyncTokenScope).
	TokenScope string
	// TokenAudience is sent as the token request's audience parameter (DataSyncTokenAudience).
	TokenAudience string
	// TokenAuthStyle (DataSyncTokenAuthStyle) is AuthStyleBasic (the default here: RFC 6749
	// requires servers to accept it, and a refused request is not sent twice), AuthStyleBody, or
	// AuthStyleAuto (Basic, then the body if refused; the style that worked is remembered).
	TokenAuthStyle string
	// Sign adds Standard Webhooks signature headers made with every signing secret of the
	// credential (DataSyncSigning = standard-webhooks).
	Sign bool
	// CAFile is an optional PEM bundle added to the system roots (so SSL_CERT_FILE still works),
	// for receivers with a private CA.
	CAFile string
	// AllowInsecureHTTP permits http:// URLs, for local testing only; New logs a warning.
	AllowInsecureHTTP bool
	// RequestTimeout bounds each request, token requests included (default 10s).
	RequestTimeout time.Duration
	// MaxConns bounds the connections to each host (default 64): dialling, busy and idle
	// together, so a burst never opens more than this many TLS sessions. It should be at least
	// the number of requests in flight, or requests wait for a free connection; token requests
	// to the same host and port share the bound (they hold no connection while a POST waits
	// for its token, so they cannot deadlock).
	MaxConns int
	// DefaultTokenTTL is how long a token without expires_in is reused (default 5m).
	DefaultTokenTTL time.Duration
	// UserAgent is sent with every request (default "cdc-relay").
	UserAgent string
	// Logger receives warnings; nil discards them.
	Logger *zap.Logger
	// OnClose, when set, is called by Close (to stop what was started for this sender).
	OnClose func()
	// Metrics are the sender's and its token cache's instruments (the daemon's, served on
	// /metrics); default instruments of its own that nothing serves.
	Metrics *metrics.Sender
}

// Result describes the receiver's answer to one Post.
type Result struct {
	Status         int           // HTTP status, 0 when no response
	RetryAfter     time.Duration // parsed Retry-After (delta-seconds or HTTP-date), 0 if none
	Excerpt        string        // first 512 bytes of the response body, for diagnostics
	Location       string        // Location header on 3xx
	TokenRefreshed bool          // a 401 made us fetch a new token and resend
	Duration       time.Duration // time spent in Post, token fetches and resend included
	Signed         *Signed       // the Standard Webhooks headers of the last request, when signing
}

// Sender POSTs messages to one receiver. It is safe for concurrent use.
type Sender struct {
	apiURL    string
	userAgent string
	timeout   time.Duration
	transport *http.Transport
	client    *http.Client
	tokens    *tokenCache
	src       CredentialSource
	cur       atomic.Pointer[identity]
	identMu   sync.Mutex // serialises rebuilding the identity
	tokenURL  string
	scope     string
	audience  string
	authStyle string
	sign      bool
	cancel    context.CancelFunc
	onClose   func()
	metrics   *metrics.Sender
	log       *zap.Logger
	now       func() time.Time
}

// New validates cfg and builds the Sender: one tuned transport, a client that never follows
// redirects, and a token cache whose token endpoint client obeys the same TLS rules.
func New(cfg Config) (*Sender, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.DefaultTokenTTL <= 0 {
		cfg.DefaultTokenTTL = DefaultTokenTTL
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSender(nil)
	}
	for _, u := range []struct{ name, value string }{
		{"DataSyncApiUrl", cfg.APIURL}, {"DataSyncTokenUrl", cfg.TokenURL},
	} {
		insecure, err := checkURL(u.name, u.value, cfg.AllowInsecureHTTP)
		if err != nil {
			return nil, err
		}
		if insecure {
			log.Warn("sending over plain http because --allow-insecure-http is set; use this for local testing only",
				zap.String("setting", u.name), zap.String("url", u.value))
		}
	}
	if cfg.Source == nil {
		if !cfg.Credential.Complete() {
			return nil, fmt.Errorf("%w: no OAuth2 client id and secret: run cdc-relay credentials set", credentials.ErrIncomplete)
		}
		cfg.Source = staticSource{cfg.Credential}
	}
	if _, err := authStyle(cfg.TokenAuthStyle); err != nil {
		return nil, err
	}
	roots, err := rootCAs(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: min(cfg.RequestTimeout, 10*time.Second), KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		DialContext:     dialer.DialContext,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		// GetClientCertificate (set below) sends the current client certificate, if any.
		TLSHandshakeTimeout:   min(cfg.RequestTimeout, 10*time.Second),
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          0, // no total cap, so an idle token connection never evicts an API one; per host, see below
		MaxIdleConnsPerHost:   cfg.MaxConns,
		MaxConnsPerHost:       cfg.MaxConns,
		IdleConnTimeout:       90 * time.Second,
		// HTTP/2 when the receiver offers it (ALPN): one connection carries many requests at
		// once, which an adaptive concurrency of hundreds needs; HTTP/1.1 otherwise.
		ForceAttemptHTTP2: true,
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client := &http.Client{Transport: transport, CheckRedirect: noRedirect, Timeout: cfg.RequestTimeout}
	tokenClient := &http.Client{Transport: transport, CheckRedirect: noRedirect, Timeout: cfg.RequestTimeout}

	base, cancel := context.WithCancel(context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient))
	s := &Sender{
		apiURL:    cfg.APIURL,
		userAgent: cfg.UserAgent,
		timeout:   cfg.RequestTimeout,
		transport: transport,
		client:    client,
		cancel:    cancel,
		log:       log,
		now:       time.Now,
		src:       cfg.Source,
		tokenURL:  cfg.TokenURL,
		scope:     strings.Join(strings.Fields(cfg.TokenScope), " "),
		audience:  cfg.TokenAudience,
		authStyle: cfg.TokenAuthStyle,
		sign:      cfg.Sign,
		onClose:   cfg.OnClose,
		metrics:   cfg.Metrics,
	}
	if s.authStyle == "" {
		s.authStyle = AuthStyleBasic
	}
	transport.TLSClientConfig.GetClientCertificate = s.clientCertificate
	s.tokens = &tokenCache{
		tokenURL:   cfg.TokenURL,
		ident:      s.identity,
		base:       base,
		timeout:    cfg.RequestTimeout,
		defaultTTL: cfg.DefaultTokenTTL,
		now:        func() time.Time { return s.now() },
		log:        log,
		fetches:    cfg.Metrics.TokenFetches,
	}
	// Check the credential now: a missing secret, an unusable certificate or signing secret is
	// a configuration fault to report before anything is sent.
	if _, err := s.identity(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// checkURL validates an absolute http(s) URL; insecure reports an allowed http:// URL.
func checkURL(name, raw string, allowHTTP bool) (insecure bool, err error) {
	if raw == "" {
		return false, fmt.Errorf("%w: %s is not set: set it to the receiver's https URL with cdc-relay config set %s https://...", ErrBadURL, name, name)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return false, fmt.Errorf("%w: %s %q is not an absolute http(s) URL: set it to the receiver's https URL such as https://receiver.example.com/datasync", ErrBadURL, name, raw)
	}
	if u.User != nil {
		return false, fmt.Errorf("%w: %s must not contain a user or password: put the credentials in the credential store with cdc-relay credentials set", ErrBadURL, name)
	}
	if u.Scheme == "http" {
		if !allowHTTP {
			return false, fmt.Errorf("%w: %s %s is not https: set an https URL, or pass --allow-insecure-http for local testing only", ErrInsecureURL, name, raw)
		}
		return true, nil
	}
	return false, nil
}

// rootCAs returns the system roots plus the certificates in caFile, if any.
func rootCAs(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil // nil means the system roots
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: reading --ca-file: %w", ErrTLS, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: --ca-file %s holds no PEM certificates: give a PEM bundle (-----BEGIN CERTIFICATE-----)", ErrTLS, caFile)
	}
	return pool, nil
}

// Token fetches a token now if none is cached, to check the credentials at start-up and before
// a sample message.
func (s *Sender) Token(ctx context.Context) error {
	_, err := s.tokens.get(ctx)
	return err
}

// Close closes idle connections and abandons any token fetch in progress.
func (s *Sender) Close() {
	s.cancel()
	s.transport.CloseIdleConnections()
	if s.onClose != nil {
		s.onClose()
	}
}

// Post sends body to the receiver. On a 401 it drops the token it used, fetches a new one and
// resends once; a second 401 is returned as is. err is nil whenever a response arrived, except
// for a 3xx (err wraps ErrRedirect) and a failure to fetch the token for the resend.
func (s *Sender) Post(ctx context.Context, body []byte) (Result, error) {
	start := time.Now()
	res, err := s.post(ctx, body)
	res.Duration = time.Since(start)
	return res, err
}

func (s *Sender) post(ctx context.Context, body []byte) (Result, error) {
	_, err := s.identity()
	if err != nil {
		return Result{}, err
	}
	var sig *signing
	if s.sign {
		wid, err := webhookID(body)
		if err != nil {
			return Result{}, err
		}
		sig = &signing{id: wid}
	}
	tok, err := s.tokens.get(ctx)
	if err != nil {
		return Result{}, err
	}
	res, err := s.send(ctx, body, tok, sig)
	if err != nil || res.Status != http.StatusUnauthorized {
		return res, err
	}
	s.tokens.invalidate(tok)
	tok, err = s.tokens.get(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("after the receiver answered 401: %w", err)
	}
	res, err = s.send(ctx, body, tok, sig)
	res.TokenRefreshed = true
	return res, err
}

// signing is a request's stable webhook-id; send signs each attempt with the current keys.
type signing struct{ id string }

// send makes one POST and reads the answer so the connection can be reused.
func (s *Sender) send(ctx context.Context, body []byte, tok string, sig *signing) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("building request to %s: %w", redactURL(s.apiURL), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", s.userAgent)
	var signed *Signed
	if sig != nil {
		id := s.cur.Load()
		sg := sign(req.Header, id.signKeys, sig.id, time.Now(), body)
		signed = &sg
	}

	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		s.metrics.RequestDuration.Observe(time.Since(start).Seconds())
		return Result{}, s.describe(ctx, err)
	}
	res := Result{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), s.now()), Signed: signed}
	excerpt := make([]byte, excerptBytes)
	n, _ := io.ReadFull(resp.Body, excerpt)
	res.Excerpt = string(excerpt[:n])
	// Drain up to the cap so the connection goes back to the pool; past the cap, closing the
	// body closes the connection, which is cheaper than reading a huge body.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainCap-excerptBytes))
	resp.Body.Close()
	s.metrics.RequestDuration.Observe(time.Since(start).Seconds())

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		res.Location = resp.Header.Get("Location")
		return res, fmt.Errorf("%w to %s (HTTP %d); cdc-relay never follows redirects: set DataSyncApiUrl to the final URL",
			ErrRedirect, locationHost(resp), resp.StatusCode)
	}
	return res, nil
}

// describe explains a failed POST (no response) and names the fix.
func (s *Sender) describe(ctx context.Context, err error) error {
	target := redactURL(s.apiURL)
	if tlsErr := classifyTLS(err); tlsErr != nil {
		return fmt.Errorf("posting to %s: %w", target, tlsErr)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("posting to %s: %w", target, ctxErr)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("posting to %s: no answer within the %s request timeout: check the receiver, or raise the timeout: %w", target, s.timeout, err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is named already
	}
	return fmt.Errorf("posting to %s: %w", target, err)
}

// classifyTLS returns an error wrapping ErrTLS that names the fix, or nil when err is not a TLS
// problem.
func classifyTLS(err error) error {
	var hostErr x509.HostnameError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var op *net.OpError
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("%w: the receiver's certificate does not name this host (%w): check the host in the URL, or ask the receiver for a certificate that names it", ErrTLS, err)
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: the receiver's certificate is signed by an unknown authority (%w): pass --ca-file with the receiver's CA certificate in PEM", ErrTLS, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("%w: the receiver's certificate has expired or is not yet valid (%w): the receiver must renew it; check this machine's clock too", ErrTLS, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w: the receiver's certificate is invalid (%w): the receiver must fix its certificate", ErrTLS, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w: the receiver answered with plain HTTP (%w): check the URL's scheme and port", ErrTLS, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: the receiver did not answer with TLS (%w): check the URL's scheme and port", ErrTLS, err)
	case errors.As(err, &alert) || (errors.As(err, &op) && op.Op == "remote error"):
		if strings.Contains(err.Error(), "protocol version") {
			return fmt.Errorf("%w: the receiver does not support TLS 1.2 or later (%w): the receiver must enable TLS 1.2+", ErrTLS, err)
		}
		return fmt.Errorf("%w: the receiver refused the TLS handshake (%w): if it requires a client certificate, store one it trusts with cdc-relay credentials set --client-cert FILE --client-key FILE", ErrTLS, err)
	}
	return nil
}

// locationHost names where a redirect pointed, host only: a Location may carry tokens in its query.
func locationHost(resp *http.Response) string {
	loc, err := resp.Location()
	if err != nil || loc.Host == "" {
		return "an unnamed location"
	}
	return loc.Host
}

// redactURL drops the query and fragment, which may carry secrets, from a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the receiver"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP-date. Negative, past or
// unparsable values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
