package receiver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/cdc-relay/cdc-relay/mapping"
)

const (
	testID     = "relay-client"
	testSecret = "s3cret/with+specials&="
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID, cfg.ClientSecret = testID, testSecret
	}
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// client returns a real HTTPS client trusting only the receiver's certificate, not following
// redirects.
func client(t *testing.T, s *Server, mod func(*tls.Config)) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(s.CAPEM()))
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if mod != nil {
		mod(tc)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func ccConfig(s *Server, style oauth2.AuthStyle) *clientcredentials.Config {
	return &clientcredentials.Config{ClientID: testID, ClientSecret: testSecret, TokenURL: s.TokenURL(), AuthStyle: style}
}

func token(t *testing.T, s *Server, c *http.Client) string {
	t.Helper()
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, c)
	tok, err := ccConfig(s, oauth2.AuthStyleInHeader).Token(ctx)
	require.NoError(t, err)
	return tok.AccessToken
}

type reply struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, s *Server, c *http.Client, tok, contentType string, body []byte) reply {
	t.Helper()
	r, err := postErr(t.Context(), s, c, tok, contentType, body)
	require.NoError(t, err)
	return r
}

func postErr(ctx context.Context, s *Server, c *http.Client, tok, contentType string, body []byte) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.APIURL(), bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	require.NoError(t, err)
	return b
}

func body(msgs ...mapping.Message) []byte { return mapping.AppendEnvelope(nil, msgs) }

func msg(id string) mapping.Message {
	return mapping.Message{Action: mapping.ActionCustomerDelete, Type: mapping.TypeCustomer, Payload: "2142", UniqueID: id}
}

func TestTokenIssueAndReuse(t *testing.T) {
	t.Parallel()
	s := start(t, Config{TokenTTL: 90 * time.Second})
	base := client(t, s, nil)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		ctx := context.WithValue(t.Context(), oauth2.HTTPClient, base)
		ts := ccConfig(s, style).TokenSource(ctx)
		c := &http.Client{Transport: &oauth2.Transport{Source: ts, Base: base.Transport}}
		for i := range 3 {
			r := post(t, s, c, "", "application/json", body(msg(string(rune('a'+i)))))
			require.Equal(t, http.StatusOK, r.status, r.body)
		}
		tok, err := ts.Token()
		require.NoError(t, err)
		require.Equal(t, "Bearer", tok.TokenType)
		require.WithinDuration(t, time.Now().Add(90*time.Second), tok.Expiry, time.Minute, "expires_in honoured")
	}
	st := s.Stats()
	require.Equal(t, 2, st.TokensIssued, "one token per source, reused for every POST")
	require.Equal(t, 6, st.Messages)
	require.Equal(t, 3, st.Unique)
	require.Equal(t, 3, st.Duplicates)
}

func TestTokenEndpointRejects(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c := client(t, s, nil)
	do := func(method string, form url.Values, basicID, basicSecret string) reply {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, s.TokenURL(), strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basicID != "" {
			req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return reply{resp.StatusCode, resp.Header, string(b)}
	}
	grant := url.Values{"grant_type": {"client_credentials"}}

	r := do(http.MethodPost, grant, testID, "wrong")
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.body, `"invalid_client"`)
	require.Equal(t, `Basic realm="oauth"`, r.header.Get("WWW-Authenticate"))
	require.NotContains(t, r.body, testSecret)

	r = do(http.MethodPost, url.Values{"grant_type": {"client_credentials"}, "client_id": {"other"}, "client_secret": {testSecret}}, "", "")
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.body, `"invalid_client"`)

	r = do(http.MethodPost, url.Values{"grant_type": {"password"}}, testID, testSecret)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "unsupported_grant_type")

	r = do(http.MethodGet, nil, testID, testSecret)
	require.Equal(t, http.StatusMethodNotAllowed, r.status)

	r = do(http.MethodPost, url.Values{"grant_type": {"client_credentials"}, "client_id": {testID}, "client_secret": {testSecret}}, "", "")
	require.Equal(t, http.StatusOK, r.status, "form credentials work too")
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &tr))
	require.NotEmpty(t, tr.AccessToken)
	require.Equal(t, "Bearer", tr.TokenType)
	require.Equal(t, 3600, tr.ExpiresIn, "default TTL is 1h")

	// A real OAuth2 client sees the refusal as an error.
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, c)
	bad := ccConfig(s, oauth2.AuthStyleInHeader)
	bad.ClientSecret = "wrong"
	_, err := bad.Token(ctx)
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	require.Equal(t, http.StatusUnauthorized, re.Response.StatusCode)

	st := s.Stats()
	require.Equal(t, 3, st.Rejected[reasonTokenClient])
	require.Equal(t, 1, st.Rejected[reasonTokenGrant])
	require.Equal(t, 1, st.Rejected[reasonMethod])
	require.Equal(t, 1, st.TokensIssued)
}

func TestDataSyncAuth(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c := client(t, s, nil)

	r := post(t, s, c, "", "application/json", body(msg("1")))
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Equal(t, `Bearer realm="datasync"`, r.header.Get("WWW-Authenticate"))

	r = post(t, s, c, "not-a-token", "application/json", body(msg("1")))
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`)

	tok := token(t, s, c)
	require.Equal(t, http.StatusOK, post(t, s, c, tok, "application/json", body(msg("1"))).status)
	s.RevokeTokens()
	r = post(t, s, c, tok, "application/json", body(msg("2")))
	require.Equal(t, http.StatusUnauthorized, r.status, "revoked token")
	require.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`)

	// Revoke the client, then restore it.
	s.SetCredentials(testID, "rotated")
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, c)
	_, err := ccConfig(s, oauth2.AuthStyleInHeader).Token(ctx)
	require.Error(t, err)
	s.SetCredentials(testID, testSecret)
	tok = token(t, s, c)
	require.Equal(t, http.StatusOK, post(t, s, c, tok, "application/json", body(msg("2"))).status)

	st := s.Stats()
	require.Equal(t, 3, st.Rejected[reasonAuth])
	require.Equal(t, 2, st.Messages)
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	s := start(t, Config{TokenTTL: time.Nanosecond})
	c := client(t, s, nil)
	tok := token(t, s, c) // expired by the time it is used
	r := post(t, s, c, tok, "application/json", body(msg("1")))
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.header.Get("WWW-Authenticate"), "expired")
}

func TestDataSyncAccepts(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []Received
	var logBuf bytes.Buffer
	s := start(t, Config{Strict: true, Log: &syncWriter{w: &logBuf}, OnMessage: func(r Received) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	}})
	c := client(t, s, nil)
	tok := token(t, s, c)
	before := time.Now()
	for _, name := range []string{"customer-update.body.json", "transaction-create.body.json", "customer-update.body.json"} {
		r := post(t, s, c, tok, "application/json; charset=utf-8", testdata(t, name))
		require.Equal(t, http.StatusOK, r.status, r.body)
		require.JSONEq(t, `{"status":"ok","accepted":1}`, r.body)
	}
	mu.Lock()
	require.Len(t, got, 3)
	require.Equal(t, "26764466", got[0].Message.UniqueID)
	require.Equal(t, "POSTRNCRE", got[1].Message.Action)
	require.False(t, got[0].Duplicate)
	require.True(t, got[2].Duplicate)
	require.False(t, got[0].At.Before(before.Add(-time.Second)))
	mu.Unlock()

	st := s.Stats()
	require.Equal(t, 3, st.Requests)
	require.Equal(t, 3, st.Messages)
	require.Equal(t, 2, st.Unique)
	require.Equal(t, 1, st.Duplicates)

	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	require.Len(t, lines, 3)
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
	require.Equal(t, "26764466", line["uniqueId"])
	require.Equal(t, "CUSTOMERMOD", line["action"])
	require.NotZero(t, line["payloadBytes"])
	require.NotContains(t, logBuf.String(), "Vzxcv", "payloads are never logged")
	require.NotContains(t, logBuf.String(), tok, "tokens are never logged")
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestSampleMessage(t *testing.T) {
	t.Parallel()
	var samples int
	var mu sync.Mutex
	s := start(t, Config{Strict: true, OnMessage: func(r Received) {
		mu.Lock()
		defer mu.Unlock()
		if r.Sample {
			samples++
		}
	}})
	c := client(t, s, nil)
	r := post(t, s, c, token(t, s, c), "application/json", testdata(t, "send-sample-message.body.json"))
	require.Equal(t, http.StatusOK, r.status, r.body)
	st := s.Stats()
	require.Equal(t, 1, st.Samples)
	require.Zero(t, st.Messages)
	require.Zero(t, st.Unique)
	mu.Lock()
	require.Equal(t, 1, samples)
	mu.Unlock()
}

func TestDataSyncRejects(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Strict: true})
	c := client(t, s, nil)
	tok := token(t, s, c)

	r := post(t, s, c, tok, "text/plain", body(msg("1")))
	require.Equal(t, http.StatusUnsupportedMediaType, r.status)
	require.Contains(t, r.body, "application/json")
	r = post(t, s, c, tok, "", body(msg("1")))
	require.Equal(t, http.StatusUnsupportedMediaType, r.status)

	r = post(t, s, c, tok, "application/json", []byte(`{"messages":[]}`))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "messages")
	r = post(t, s, c, tok, "application/json", []byte(`{"messages":[{"action":"CUSTOMERDEL"}]}`))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "is missing")

	bad := mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERMOD", UniqueID: "5", Payload: `{"customerID":"2142","prospect":"yes-SECRET"}`}
	r = post(t, s, c, tok, "application/json", body(msg("4"), bad))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, `message 1 (uniqueId \"5\")`)
	require.Contains(t, r.body, `field \"prospect\": expected boolean`)
	require.NotContains(t, r.body, "SECRET")

	r = post(t, s, c, tok, "application/json", body(mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERDEL", UniqueID: "6", Payload: "abc"}))
	require.Equal(t, http.StatusBadRequest, r.status)
	r = post(t, s, c, tok, "application/json", body(mapping.Message{Type: "ORDER", Action: "ORDERCRE", UniqueID: "7", Payload: "{}"}))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "unknown object")

	huge := bytes.Repeat([]byte(" "), MaxBodyBytes+1)
	r = post(t, s, c, tok, "application/json", huge)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.APIURL(), nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	st := s.Stats()
	require.Zero(t, st.Messages, "a rejected POST records none of its messages")
	require.Equal(t, 2, st.Rejected[reasonContentType])
	require.Equal(t, 2, st.Rejected[reasonEnvelope])
	require.Equal(t, 3, st.Rejected[reasonPayload])
	require.Equal(t, 1, st.Rejected[reasonTooLarge])
	require.Equal(t, 1, st.Rejected[reasonMethod])
}

func TestNotStrictAcceptsAnyPayload(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c := client(t, s, nil)
	r := post(t, s, c, token(t, s, c), "application/json", body(mapping.Message{Type: "X", Action: "Y", UniqueID: "1", Payload: "not json"}))
	require.Equal(t, http.StatusOK, r.status)
}

func TestFaults(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, f Faults) (*Server, *http.Client, string) {
		s := start(t, Config{})
		c := client(t, s, nil)
		tok := token(t, s, c)
		s.SetFaults(f)
		return s, c, tok
	}
	t.Run("FailRate", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{FailRate: 1, RetryAfter: 1500 * time.Millisecond})
		for i := range 3 {
			r := post(t, s, c, tok, "application/json", body(msg("1")))
			require.Equal(t, http.StatusServiceUnavailable, r.status, "attempt %d", i)
			require.Equal(t, "2", r.header.Get("Retry-After"))
		}
		s.SetFaults(Faults{FailRate: 1, FailStatus: http.StatusInternalServerError})
		r := post(t, s, c, tok, "application/json", body(msg("1")))
		require.Equal(t, http.StatusInternalServerError, r.status)
		require.Empty(t, r.header.Get("Retry-After"))
		s.SetFaults(Faults{})
		require.Equal(t, http.StatusOK, post(t, s, c, tok, "application/json", body(msg("1"))).status)
		st := s.Stats()
		require.Equal(t, 4, st.FaultsInjected)
		require.Equal(t, 1, st.Messages)
	})
	t.Run("Delay", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{Delay: time.Hour})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := postErr(ctx, s, c, tok, "application/json", body(msg("1")))
			done <- err
		}()
		require.Eventually(t, func() bool { return s.Stats().Requests == 1 }, time.Minute, time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("answered despite an hour's delay: %v", err)
		default:
		}
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Zero(t, s.Stats().Messages)
	})
	t.Run("RateLimit", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{RateLimit: 0.001}) // burst 1, refill every 1000 s
		require.Equal(t, http.StatusOK, post(t, s, c, tok, "application/json", body(msg("1"), msg("2"))).status)
		r := post(t, s, c, tok, "application/json", body(msg("3")))
		require.Equal(t, http.StatusTooManyRequests, r.status)
		require.Equal(t, "1000", r.header.Get("Retry-After"))
		s.SetFaults(Faults{RateLimit: 0.002, RetryAfter: 3 * time.Second})
		r = post(t, s, c, tok, "application/json", body(msg("3")))
		require.Equal(t, http.StatusOK, r.status, "a new rate starts with a full bucket")
		r = post(t, s, c, tok, "application/json", body(msg("4")))
		require.Equal(t, http.StatusTooManyRequests, r.status)
		require.Equal(t, "3", r.header.Get("Retry-After"))
	})
	t.Run("ResetRate", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{ResetRate: 1})
		_, err := postErr(t.Context(), s, c, tok, "application/json", body(msg("1")))
		require.Error(t, err)
		var ne net.Error
		var opErr *net.OpError
		require.True(t, errors.As(err, &ne) || errors.As(err, &opErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF),
			"connection error, got %v", err)
		require.Zero(t, s.Stats().Messages)
		require.GreaterOrEqual(t, s.Stats().FaultsInjected, 1)
	})
	t.Run("Down", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{Down: true})
		require.Equal(t, http.StatusServiceUnavailable, post(t, s, c, tok, "application/json", body(msg("1"))).status)
		require.Equal(t, http.StatusServiceUnavailable, post(t, s, c, "", "text/plain", nil).status, "before any check")
	})
	t.Run("TokenDown", func(t *testing.T) {
		t.Parallel()
		s, c, _ := setup(t, Faults{TokenDown: true})
		ctx := context.WithValue(t.Context(), oauth2.HTTPClient, c)
		_, err := ccConfig(s, oauth2.AuthStyleInHeader).Token(ctx)
		var re *oauth2.RetrieveError
		require.ErrorAs(t, err, &re)
		require.Equal(t, http.StatusServiceUnavailable, re.Response.StatusCode)
	})
	t.Run("TokenGarbage", func(t *testing.T) {
		t.Parallel()
		s, c, _ := setup(t, Faults{TokenGarbage: true})
		ctx := context.WithValue(t.Context(), oauth2.HTTPClient, c)
		_, err := ccConfig(s, oauth2.AuthStyleInHeader).Token(ctx)
		require.Error(t, err)
		require.Contains(t, err.Error(), "cannot parse")
		require.Equal(t, 1, s.Stats().TokensIssued, "only the setup token")
	})
	t.Run("RedirectTo", func(t *testing.T) {
		t.Parallel()
		s, c, tok := setup(t, Faults{RedirectTo: "https://elsewhere.example/datasync"})
		r := post(t, s, c, tok, "application/json", body(msg("1")))
		require.Equal(t, http.StatusTemporaryRedirect, r.status)
		require.Equal(t, "https://elsewhere.example/datasync", r.header.Get("Location"))
		require.Zero(t, s.Stats().Messages)
	})
}

func TestLegacyTLSReceiver(t *testing.T) {
	t.Parallel()
	s := start(t, Config{MinTLSVersion: tls.VersionTLS10, MaxTLSVersion: tls.VersionTLS11})
	_, err := postErr(t.Context(), s, client(t, s, nil), "", "application/json", body(msg("1")))
	require.Error(t, err, "a TLS 1.2-minimum client refuses a TLS 1.1 receiver")
	require.Contains(t, err.Error(), "protocol version")

	legacy := client(t, s, func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 })
	r, err := postErr(t.Context(), s, legacy, "", "application/json", body(msg("1")))
	require.NoError(t, err, "the legacy receiver does serve TLS 1.1")
	require.Equal(t, http.StatusUnauthorized, r.status)
}

func TestModernReceiverRefusesLegacyClient(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	old := client(t, s, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 })
	_, err := postErr(t.Context(), s, old, "", "application/json", body(msg("1")))
	require.Error(t, err)
	require.Contains(t, err.Error(), "protocol version")
}

func TestGeneratedCertificate(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	block, _ := pem.Decode(s.CAPEM())
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	for _, h := range []string{"127.0.0.1", "localhost", "::1"} {
		require.NoError(t, cert.VerifyHostname(h), h)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	require.True(t, ok)
	require.Equal(t, elliptic.P256(), pub.Curve)

	// A client reaching it by name verifies it too.
	c := client(t, s, nil)
	u, err := url.Parse(s.APIURL())
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://localhost:"+u.Port()+"/healthz", nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "HTTP/1.1", resp.Proto)

	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, s.WriteCAFile(path))
	written, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, s.CAPEM(), written)
	require.Error(t, s.WriteCAFile(filepath.Join(t.TempDir(), "missing", "ca.pem")))
}

func TestCertFiles(t *testing.T) {
	t.Parallel()
	cert, certPEM, err := selfSigned(nil)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))

	s := start(t, Config{CertFile: certFile, KeyFile: keyFile})
	require.Equal(t, certPEM, s.CAPEM())
	c := client(t, s, nil)
	require.Equal(t, http.StatusOK, post(t, s, c, token(t, s, c), "application/json", body(msg("1"))).status)

	_, err = New(Config{ClientID: "a", ClientSecret: "b", CertFile: certFile})
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "give both")
	_, err = New(Config{ClientID: "a", ClientSecret: "b", CertFile: certFile, KeyFile: certFile})
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "load certificate")
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{ClientSecret: "x"}, "client credentials are required"},
		{Config{ClientID: "x"}, "--client-secret-file"},
		{Config{ClientID: "a", ClientSecret: "b", MinTLSVersion: tls.VersionTLS13, MaxTLSVersion: tls.VersionTLS12}, "below MinTLSVersion"},
		{Config{ClientID: "a", ClientSecret: "b", TokenTTL: -time.Second}, "negative"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		require.ErrorIs(t, err, ErrConfig)
		require.Contains(t, err.Error(), c.want)
	}
}

func TestStartAddressInUse(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	u, err := url.Parse(s.APIURL())
	require.NoError(t, err)
	other, err := New(Config{ClientID: "a", ClientSecret: "b", Addr: u.Host})
	require.NoError(t, err)
	err = other.Start()
	require.Error(t, err)
	require.Contains(t, err.Error(), "--addr")
	require.Error(t, other.Run(t.Context()), "Run reports the failed start")
	require.NoError(t, other.Close())
}

func TestRunStopsCleanly(t *testing.T) {
	t.Parallel()
	s, err := New(Config{ClientID: testID, ClientSecret: testSecret})
	require.NoError(t, err)
	require.Empty(t, s.APIURL(), "no URL before Start")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.Eventually(t, func() bool { return s.Stats().TokensIssued == 0 && s.TokenURL() != "" }, time.Minute, time.Millisecond)
	c := client(t, s, nil)
	require.Equal(t, http.StatusOK, post(t, s, c, token(t, s, c), "application/json", body(msg("1"))).status)
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, s.Close())
}
