package sender

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

func TestPostReusesOneToken(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	var gotBody atomic.Value
	rc := &receiver{}
	srv := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody.Store(string(b))
		assert.Equal(t, "cdc-relay", r.Header.Get("User-Agent"))
		rc.ServeHTTP(w, r)
	}), nil)
	cfg, _ := testConfig(t, srv.URL+"/datasync", te.tokenURL())
	s := newSender(t, cfg)

	require.NoError(t, s.Token(context.Background()))
	for range 20 {
		res, err := s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
		assert.False(t, res.TokenRefreshed)
		assert.Equal(t, `{"status":"ok"}`, res.Excerpt)
		assert.Positive(t, res.Duration)
	}
	postConcurrently(t, s, 16)
	assert.Equal(t, int64(1), te.fetches.Load(), "one token for every POST")
	assert.Equal(t, int64(36), rc.requests.Load())
	assert.Equal(t, samplePayload, gotBody.Load())
	assert.Equal(t, "Bearer "+tokenPrefix+"1", rc.lastAuth[0])
}

func TestConcurrentFirstCallersShareOneFetch(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	s, _ := newSenderTo(t, te, &receiver{})
	postConcurrently(t, s, 32)
	assert.Equal(t, int64(1), te.fetches.Load())
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expiresIn      int64
		stillValid     time.Duration // advancing this much keeps the token
		thenRefreshed  time.Duration // advancing this much more needs a new one
		wantExpiryNote string
	}{
		{expiresIn: 60, stillValid: 49 * time.Second, thenRefreshed: 2 * time.Second},
		{expiresIn: 1, stillValid: 400 * time.Millisecond, thenRefreshed: 200 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("expires_in=%d", tc.expiresIn), func(t *testing.T) {
			t.Parallel()
			te := newTokenEndpoint(t)
			te.expiresIn.Store(tc.expiresIn)
			rc := &receiver{}
			s, _ := newSenderTo(t, te, rc)
			clock := useFakeClock(s)

			_, err := s.Post(context.Background(), []byte(samplePayload))
			require.NoError(t, err)
			clock.Advance(tc.stillValid)
			_, err = s.Post(context.Background(), []byte(samplePayload))
			require.NoError(t, err)
			assert.Equal(t, int64(1), te.fetches.Load(), "token still valid")
			clock.Advance(tc.thenRefreshed)
			_, err = s.Post(context.Background(), []byte(samplePayload))
			require.NoError(t, err)
			assert.Equal(t, int64(2), te.fetches.Load(), "token refreshed before it expired")
			assert.Equal(t, "Bearer "+tokenPrefix+"2", rc.lastAuth[2])
		})
	}
}

func TestTokenWithoutExpiresInUsesDefaultTTL(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	te.expiresIn.Store(0)
	srv := startTLS(t, &receiver{}, nil)
	cfg, logs := testConfig(t, srv.URL, te.tokenURL())
	cfg.DefaultTokenTTL = 2 * time.Minute
	s := newSender(t, cfg)
	clock := useFakeClock(s)

	require.NoError(t, s.Token(context.Background()))
	clock.Advance(time.Minute + 49*time.Second)
	_, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, int64(1), te.fetches.Load())
	clock.Advance(2 * time.Second)
	_, err = s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, int64(2), te.fetches.Load())
	assert.Equal(t, 1, logs.FilterMessageSnippet("no expires_in").Len(), "warned once")
}

func TestFormEncodedTokenResponse(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	te.respond = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		fmt.Fprintf(w, "access_token=%sform&token_type=bearer&expires_in=60", tokenPrefix)
		return true
	}
	rc := &receiver{}
	s, _ := newSenderTo(t, te, rc)
	clock := useFakeClock(s)
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status)
	clock.Advance(30 * time.Second)
	require.NoError(t, s.Token(context.Background()))
	assert.Equal(t, int64(1), te.fetches.Load(), "expiry taken from the form's expires_in")
	clock.Advance(30 * time.Second)
	require.NoError(t, s.Token(context.Background()))
	assert.Equal(t, int64(2), te.fetches.Load())
}

func Test401RefreshesOnceAndResends(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	rc := &receiver{accept: func(tok string) bool { return tok != tokenPrefix+"1" }}
	s, _ := newSenderTo(t, te, rc)

	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status)
	assert.True(t, res.TokenRefreshed)
	assert.Equal(t, int64(2), te.fetches.Load())
	assert.Equal(t, int64(2), rc.requests.Load())

	res, err = s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.False(t, res.TokenRefreshed, "new token kept")
	assert.Equal(t, int64(2), te.fetches.Load())
}

func Test401Concurrent32CauseOneRefresh(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	// All 32 requests carry the first token and are held until every one has arrived, so they
	// all get their 401 together.
	var arrived atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	s, srv := newSenderTo(t, te, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+tokenPrefix+"1" {
			if arrived.Add(1) == 32 {
				once.Do(func() { close(release) })
			}
			<-release
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	require.NoError(t, s.Token(context.Background()))

	for _, res := range postConcurrently(t, s, 32) {
		assert.True(t, res.TokenRefreshed)
	}
	assert.Equal(t, int64(2), te.fetches.Load(), "the first token, then exactly one refresh")
	assert.LessOrEqual(t, srv.newConns.Load(), int64(32), "pool sized for 32 in flight")
}

func TestSecond401ReturnedAsIs(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	rc := &receiver{accept: func(string) bool { return false }}
	s, _ := newSenderTo(t, te, rc)

	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, res.Status)
	assert.True(t, res.TokenRefreshed)
	assert.Equal(t, int64(2), te.fetches.Load())
	assert.Equal(t, int64(2), rc.requests.Load(), "resent once, not more")
}

func Test401ThenTokenEndpointFails(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	te.respond = func(w http.ResponseWriter, r *http.Request) bool {
		if te.fetches.Load() == 1 {
			return false
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	s, _ := newSenderTo(t, te, &receiver{accept: func(string) bool { return false }})
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.ErrorIs(t, err, ErrToken)
	assert.Contains(t, err.Error(), "after the receiver answered 401")
	assert.Contains(t, err.Error(), "503")
	assert.Equal(t, 0, res.Status)
	assertClean(t, err, "PAYLOAD-MARKER")
}

func TestTokenEndpointFailures(t *testing.T) {
	t.Parallel()
	redirectTarget := newTokenEndpoint(t)
	for _, tc := range []struct {
		name    string
		respond func(w http.ResponseWriter, r *http.Request)
		want    string
	}{
		{"server error echoing the secret", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "<html>oops for %s</html>", testSecret)
		}, "answered HTTP 500"},
		{"html page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<html><body>login %s</body></html>", testSecret)
		}, "not a valid OAuth2 token"},
		{"garbage json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token": "%s`, tokenPrefix)
		}, "not a valid OAuth2 token"},
		{"no access_token", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3600}`)
		}, "has no access_token"},
		{"oauth2 error with 200", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"error":"unauthorized_client"}`)
		}, `"unauthorized_client"`},
		{"rejected credentials", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
		}, "rejected the client credentials"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.tokenURL(), http.StatusTemporaryRedirect)
		}, "never follows redirects: set DataSyncTokenUrl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTokenEndpoint(t)
			te.respond = func(w http.ResponseWriter, r *http.Request) bool { tc.respond(w, r); return true }
			rc := &receiver{}
			s, _ := newSenderTo(t, te, rc)
			res, err := s.Post(context.Background(), []byte(samplePayload))
			require.ErrorIs(t, err, ErrToken)
			assert.Contains(t, err.Error(), "fetching OAuth2 token from "+te.tokenURL())
			assert.Contains(t, err.Error(), tc.want)
			assertClean(t, err, "PAYLOAD-MARKER")
			assert.Equal(t, 0, res.Status)
			assert.Equal(t, int64(0), rc.requests.Load(), "nothing sent without a token")
			assert.Equal(t, int64(1), te.fetches.Load(), "one token request per failure")
		})
	}
	assert.Equal(t, int64(0), redirectTarget.fetches.Load(), "token redirect not followed")
}

func TestTokenEndpointDownAndTimeout(t *testing.T) {
	t.Parallel()
	t.Run("down", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		url := te.tokenURL()
		te.Close()
		cfg, _ := testConfig(t, "https://127.0.0.1:1/x", url)
		s := newSender(t, cfg)
		err := s.Token(context.Background())
		require.ErrorIs(t, err, ErrToken)
		assert.Contains(t, err.Error(), "connection refused")
		assertClean(t, err, "")
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		te.respond = func(w http.ResponseWriter, r *http.Request) bool {
			_ = r.ParseForm() // the server notices the client leaving only after the body
			<-r.Context().Done()
			return true
		}
		cfg, _ := testConfig(t, "https://127.0.0.1:1/x", te.tokenURL())
		cfg.RequestTimeout = 200 * time.Millisecond
		s := newSender(t, cfg)
		err := s.Token(context.Background())
		require.ErrorIs(t, err, ErrToken)
		assert.Contains(t, err.Error(), "no answer within 200ms")
		assertClean(t, err, "")
	})
	t.Run("TLS problem", func(t *testing.T) {
		t.Parallel()
		other := newCA(t)
		te := &tokenEndpoint{}
		te.tlsServer = startTLS(t, http.HandlerFunc(te.serve), &tls.Config{Certificates: []tls.Certificate{other.localLeaf(t)}})
		cfg, _ := testConfig(t, "https://127.0.0.1:1/x", te.tokenURL())
		s := newSender(t, cfg)
		err := s.Token(context.Background())
		require.ErrorIs(t, err, ErrToken)
		require.ErrorIs(t, err, ErrTLS)
		assert.Contains(t, err.Error(), "--ca-file")
	})
}

func TestWaitersShareOneFailedFetchAndMayGiveUp(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	te.respond = func(w http.ResponseWriter, r *http.Request) bool {
		close(entered)
		<-release
		w.WriteHeader(http.StatusBadGateway)
		return true
	}
	cfg, _ := testConfig(t, "https://127.0.0.1:1/x", te.tokenURL())
	s := newSender(t, cfg)

	errs := make(chan error, 11)
	go func() { errs <- s.Token(context.Background()) }()
	<-entered
	for range 10 {
		go func() { errs <- s.Token(context.Background()) }()
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- s.Token(ctx) }()
	waitFor(t, func() bool {
		s.tokens.mu.Lock()
		defer s.tokens.mu.Unlock()
		return s.tokens.waiters == 11
	})
	cancel()
	err := <-gaveUp
	require.ErrorIs(t, err, ErrToken)
	require.ErrorIs(t, err, context.Canceled)

	close(release)
	for range 11 {
		err := <-errs
		require.ErrorIs(t, err, ErrToken)
		assert.Contains(t, err.Error(), "HTTP 502")
	}
	assert.Equal(t, int64(1), te.fetches.Load(), "waiters shared the failed fetch")
}

func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	target := &receiver{}
	targetSrv := startTLS(t, target, nil)
	s, _ := newSenderTo(t, te, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", targetSrv.URL+"/elsewhere?sig=abc")
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.ErrorIs(t, err, ErrRedirect)
	assert.Equal(t, http.StatusTemporaryRedirect, res.Status)
	assert.Equal(t, targetSrv.URL+"/elsewhere?sig=abc", res.Location)
	assert.Contains(t, err.Error(), "receiver redirected to "+strings.TrimPrefix(targetSrv.URL, "https://"))
	assert.Contains(t, err.Error(), "set DataSyncApiUrl to the final URL")
	assert.NotContains(t, err.Error(), "sig=abc")
	assertClean(t, err, "PAYLOAD-MARKER")
	assert.Equal(t, int64(0), target.requests.Load(), "redirect target got nothing, so never saw the token")
}

func clientOnlyLeaf(t *testing.T) tls.Certificate {
	c := sharedCA.leaf(t, nil, localIPs, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	// Re-issue with only the client-auth usage.
	cert, err := x509.ParseCertificate(c.Certificate[0])
	require.NoError(t, err)
	cert.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, cert, sharedCA.cert, c.PrivateKey.(*ecdsa.PrivateKey).Public(), sharedCA.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der, sharedCA.cert.Raw}, PrivateKey: c.PrivateKey}
}

func TestRedirectWithoutLocation(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	s, _ := newSenderTo(t, te, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusFound)
	}))
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.ErrorIs(t, err, ErrRedirect)
	assert.Equal(t, http.StatusFound, res.Status)
	assert.Contains(t, err.Error(), "redirected to an unnamed location")
}

func TestNilLoggerAndNilContext(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	srv := startTLS(t, &receiver{}, nil)
	cfg, _ := testConfig(t, srv.URL, te.tokenURL())
	cfg.Logger = nil
	s := newSender(t, cfg)
	require.NoError(t, s.Token(context.Background()))
	//lint:ignore SA1012 a nil context is the one way to make building the request fail
	_, err := s.Post(nil, []byte(samplePayload)) //nolint:staticcheck
	require.Error(t, err)
	assert.Contains(t, err.Error(), "building request to "+srv.URL)
}

func TestNewValidatesURLs(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	for _, tc := range []struct {
		api, token string
		want       error
		msg        string
	}{
		{"http://receiver.example/x", te.tokenURL(), ErrInsecureURL, "DataSyncApiUrl http://receiver.example/x is not https: set an https URL, or pass --allow-insecure-http for local testing only"},
		{"https://receiver.example/x", "http://idp.example/token", ErrInsecureURL, "DataSyncTokenUrl http://idp.example/token is not https"},
		{"", te.tokenURL(), ErrBadURL, "DataSyncApiUrl is not set"},
		{"/relative", te.tokenURL(), ErrBadURL, "not an absolute http(s) URL"},
		{"ftp://receiver.example/x", te.tokenURL(), ErrBadURL, "not an absolute http(s) URL"},
		{"https://receiver.example/x", "https://user:" + testSecret + "@idp.example/token", ErrBadURL, "must not contain a user or password"},
	} {
		cfg, _ := testConfig(t, tc.api, tc.token)
		_, err := New(cfg)
		require.ErrorIs(t, err, tc.want, tc.api)
		assert.Contains(t, err.Error(), tc.msg)
		assert.NotContains(t, err.Error(), testSecret)
	}

	cfg, _ := testConfig(t, "https://receiver.example/x", te.tokenURL())
	cfg.Credential = credentials.Credential{ClientID: testClientID}
	_, err := New(cfg)
	require.ErrorIs(t, err, credentials.ErrIncomplete)
}

func TestAllowInsecureHTTP(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	rc := &receiver{}
	plain := httptest.NewServer(rc)
	t.Cleanup(plain.Close)
	cfg, logs := testConfig(t, plain.URL, te.tokenURL())
	cfg.AllowInsecureHTTP = true
	s := newSender(t, cfg)
	assert.Equal(t, 1, logs.FilterMessageSnippet("local testing only").Len())
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status)
}

func TestCAFileProblems(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	cfg, _ := testConfig(t, "https://receiver.example/x", te.tokenURL())
	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	_, err := New(cfg)
	require.ErrorIs(t, err, ErrTLS)
	require.ErrorIs(t, err, os.ErrNotExist)

	cfg.CAFile = filepath.Join(t.TempDir(), "junk.pem")
	require.NoError(t, os.WriteFile(cfg.CAFile, []byte("not a certificate"), 0o600))
	_, err = New(cfg)
	require.ErrorIs(t, err, ErrTLS)
	assert.Contains(t, err.Error(), "holds no PEM certificates")
}

func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	_, leaf := defaultCA(t)
	other := newCA(t)
	now := time.Now()
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		want string
	}{
		{"TLS 1.1 only", &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, "must enable TLS 1.2+"},
		{"wrong host", &tls.Config{Certificates: []tls.Certificate{sharedCA.leaf(t, []string{"receiver.invalid"}, nil, now.Add(-time.Hour), now.Add(time.Hour))}}, "does not name this host"},
		{"unknown authority", &tls.Config{Certificates: []tls.Certificate{other.localLeaf(t)}}, "pass --ca-file"},
		{"expired", &tls.Config{Certificates: []tls.Certificate{sharedCA.leaf(t, nil, localIPs, now.Add(-48*time.Hour), now.Add(-24*time.Hour))}}, "has expired"},
		{"client-auth-only certificate", &tls.Config{Certificates: []tls.Certificate{clientOnlyLeaf(t)}}, "certificate is invalid"},
		{"client certificate required", &tls.Config{Certificates: []tls.Certificate{leaf}, ClientAuth: tls.RequireAnyClientCert}, "refused the TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTokenEndpoint(t)
			rc := &receiver{}
			srv := startTLS(t, rc, tc.tls)
			cfg, _ := testConfig(t, srv.URL, te.tokenURL())
			s := newSender(t, cfg)
			res, err := s.Post(context.Background(), []byte(samplePayload))
			require.ErrorIs(t, err, ErrTLS)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, 0, res.Status)
			assertClean(t, err, "PAYLOAD-MARKER")
			assert.Equal(t, int64(0), rc.requests.Load())
		})
	}
	t.Run("plain HTTP server on an https URL", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		plain := httptest.NewServer(&receiver{})
		t.Cleanup(plain.Close)
		cfg, _ := testConfig(t, strings.Replace(plain.URL, "http://", "https://", 1), te.tokenURL())
		s := newSender(t, cfg)
		_, err := s.Post(context.Background(), []byte(samplePayload))
		require.ErrorIs(t, err, ErrTLS)
		assert.Contains(t, err.Error(), "answered with plain HTTP")
	})
	t.Run("something else than TLS on an https URL", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
				c.Close()
			}
		}()
		cfg, _ := testConfig(t, "https://"+ln.Addr().String()+"/x", te.tokenURL())
		s := newSender(t, cfg)
		_, err = s.Post(context.Background(), []byte(samplePayload))
		require.ErrorIs(t, err, ErrTLS)
		assert.Contains(t, err.Error(), "did not answer with TLS")
	})
	t.Run("system roots only", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		srv := startTLS(t, &receiver{}, nil)
		cfg, _ := testConfig(t, srv.URL, te.tokenURL())
		cfg.CAFile = ""
		s := newSender(t, cfg)
		_, err := s.Post(context.Background(), []byte(samplePayload))
		require.ErrorIs(t, err, ErrToken, "the token endpoint is checked against the system roots too")
		require.ErrorIs(t, err, ErrTLS)
		assert.Contains(t, err.Error(), "pass --ca-file")
	})
	t.Run("unknown authority accepted with its CA file", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		srv := startTLS(t, &receiver{}, &tls.Config{Certificates: []tls.Certificate{other.localLeaf(t)}})
		// A bundle holding both CAs: the token endpoint's and the receiver's.
		bundle := filepath.Join(t.TempDir(), "bundle.pem")
		a, err := os.ReadFile(sharedCA.pemFile)
		require.NoError(t, err)
		b, err := os.ReadFile(other.pemFile)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(bundle, append(a, b...), 0o600))
		cfg, _ := testConfig(t, srv.URL, te.tokenURL())
		cfg.CAFile = bundle
		s := newSender(t, cfg)
		res, err := s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
	})
	t.Run("wrong host accepted when the URL names the host", func(t *testing.T) {
		t.Parallel()
		te := newTokenEndpoint(t)
		srv := startTLS(t, &receiver{}, &tls.Config{Certificates: []tls.Certificate{
			sharedCA.leaf(t, []string{"localhost"}, nil, now.Add(-time.Hour), now.Add(time.Hour))}})
		cfg, _ := testConfig(t, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), te.tokenURL())
		s := newSender(t, cfg)
		res, err := s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
	})
}

func TestHugeResponseBodyIsNotReadPastTheCap(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	const huge = 50 << 20
	written := make(chan int64, 1)
	chunk := []byte(strings.Repeat("x", 64<<10))
	var calls atomic.Int64
	s, srv := newSenderTo(t, te, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 1 {
			fmt.Fprint(w, strings.Repeat("y", 100<<10)) // under the cap: drained, connection reused
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(huge))
		var n int64
		for n < huge {
			m, err := w.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		written <- n
	}))

	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status)
	assert.Len(t, res.Excerpt, excerptBytes)
	n := <-written
	assert.Less(t, n, int64(huge), "the client closed the connection instead of reading 50 MB")

	// The abandoned connection is not reused; the next POSTs work on a fresh one, which is
	// then reused because their bodies are drained.
	for range 3 {
		res, err = s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
		assert.Len(t, res.Excerpt, excerptBytes)
	}
	assert.Equal(t, int64(2), srv.newConns.Load())
}

func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	s, srv := newSenderTo(t, te, &receiver{})
	for range 200 {
		res, err := s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.Status)
	}
	assert.LessOrEqual(t, srv.newConns.Load(), int64(2), "200 sequential POSTs over one or two connections")

	round := func() {
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for range 10 {
					_, err := s.Post(context.Background(), []byte(samplePayload))
					assert.NoError(t, err)
				}
			})
		}
		wg.Wait()
	}
	round()
	warm := srv.newConns.Load()
	// The transport may dial spare connections while 32 requests race for the first ones (more
	// on a loaded machine, where handshakes are slow), but never more than the bound of 64, and
	// all of them fit the idle pool and are kept.
	assert.LessOrEqual(t, warm, int64(DefaultMaxConns))
	round()
	round()
	assert.LessOrEqual(t, srv.newConns.Load()-warm, int64(2), "640 more POSTs, 32 in flight, on the pooled connections")
	assert.LessOrEqual(t, te.newConns.Load(), int64(1))
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":      0,
		"7":     7 * time.Second,
		" 120 ": 2 * time.Minute,
		"0":     0,
		"-5":    0,
		"soon":  0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
		"99999999999999999999":                            0, // overflows int64: unparsable
		"9223372036854775807":                             time.Duration(1<<63 - 1).Truncate(time.Second),
	} {
		assert.Equal(t, want, parseRetryAfter(in, now), "Retry-After %q", in)
	}

	te := newTokenEndpoint(t)
	var header atomic.Value
	header.Store("7")
	s, _ := newSenderTo(t, te, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", header.Load().(string))
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	clock := useFakeClock(s)
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, http.StatusTooManyRequests, res.Status)
	assert.Equal(t, 7*time.Second, res.RetryAfter)
	header.Store(clock.Now().Add(3 * time.Minute).Format(http.TimeFormat))
	res, err = s.Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	assert.Equal(t, 3*time.Minute, res.RetryAfter)
}

func TestRequestTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	srv := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices the client leaving only after the body
		<-r.Context().Done()
	}), nil)
	cfg, _ := testConfig(t, srv.URL, te.tokenURL())
	cfg.RequestTimeout = 200 * time.Millisecond
	s := newSender(t, cfg)
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.Error(t, err)
	assert.Equal(t, 0, res.Status)
	assert.Contains(t, err.Error(), "no answer within the 200ms request timeout")
	assert.False(t, errors.Is(err, ErrTLS))
	assertClean(t, err, "PAYLOAD-MARKER")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Post(ctx, []byte(samplePayload))
	require.ErrorIs(t, err, context.Canceled)
}

func TestReceiverDown(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	srv := startTLS(t, &receiver{}, nil)
	url := srv.URL
	srv.Close()
	cfg, _ := testConfig(t, url, te.tokenURL())
	s := newSender(t, cfg)
	res, err := s.Post(context.Background(), []byte(samplePayload))
	require.Error(t, err)
	assert.Equal(t, 0, res.Status)
	assert.Contains(t, err.Error(), "posting to "+url)
	assert.Contains(t, err.Error(), "connection refused")
	assertClean(t, err, "PAYLOAD-MARKER")
}

func TestCloseStopsTokenFetches(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	cfg, _ := testConfig(t, "https://127.0.0.1:1/x", te.tokenURL())
	s := newSender(t, cfg)
	s.Close()
	err := s.Token(context.Background())
	require.ErrorIs(t, err, ErrToken)
	require.ErrorIs(t, err, context.Canceled)
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "https://r.example/p", redactURL("https://u:pw@r.example/p?key=secret#frag"))
	assert.Equal(t, "the receiver", redactURL("https://r.example/%zz"))
}

// TestMetrics: each POST to the receiver is timed once (a resend after a 401 is a POST of its
// own), and each token request is counted by result, in the sender's own instruments.
func TestMetrics(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t)
	srv := startTLS(t, &receiver{}, nil)
	cfg, _ := testConfig(t, srv.URL, te.tokenURL())
	m := metrics.NewSender(nil)
	cfg.Metrics = m
	s := newSender(t, cfg)

	for range 3 {
		_, err := s.Post(context.Background(), []byte(samplePayload))
		require.NoError(t, err)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(m.TokenFetches.WithLabelValues("ok")))
	assert.Equal(t, uint64(3), sampleCount(t, m.RequestDuration))

	// A 401 makes one Post two POSTs and two token requests.
	rc := &receiver{accept: func(tok string) bool { return tok != tokenPrefix+"1" }}
	te401 := newTokenEndpoint(t)
	cfg401, _ := testConfig(t, startTLS(t, rc, nil).URL, te401.tokenURL())
	m401 := metrics.NewSender(nil)
	cfg401.Metrics = m401
	res, err := newSender(t, cfg401).Post(context.Background(), []byte(samplePayload))
	require.NoError(t, err)
	require.True(t, res.TokenRefreshed)
	assert.Equal(t, 2.0, testutil.ToFloat64(m401.TokenFetches.WithLabelValues("ok")))
	assert.Equal(t, uint64(2), sampleCount(t, m401.RequestDuration))

	bad := newTokenEndpoint(t)
	bad.respond = func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(500); return true }
	cfg2, _ := testConfig(t, srv.URL, bad.tokenURL())
	cfg2.Metrics = m
	s2 := newSender(t, cfg2)
	require.Error(t, s2.Token(context.Background()))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.TokenFetches.WithLabelValues("error")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.TokenFetches.WithLabelValues("ok")))
}

// sampleCount is how many durations h observed.
func sampleCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var d dto.Metric
	require.NoError(t, h.Write(&d))
	return d.GetHistogram().GetSampleCount()
}

func BenchmarkPost(b *testing.B) {
	te := newTokenEndpoint(b)
	s, srv := newSenderTo(b, te, &receiver{})
	body := []byte(samplePayload)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Post(context.Background(), body); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(srv.newConns.Load()), "conns")
}
