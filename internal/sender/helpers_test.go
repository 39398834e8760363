package sender

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
)

const (
	testClientID = "relay-client"
	testSecret   = "TOP-SECRET-client-secret-9f8e7d"
	tokenPrefix  = "ACCESS-TOKEN-"
)

// testCA is a throwaway certificate authority for the test servers.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

var serial atomic.Int64

// makeCA creates a CA and writes its certificate as PEM into dir.
func makeCA(dir string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: "cdc-relay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	f := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, pemFile: f}, nil
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := makeCA(t.TempDir())
	require.NoError(t, err)
	return ca
}

// issue creates a server certificate for the given names, valid in [notBefore, notAfter).
func (ca *testCA) issue(dnsNames []string, ips []net.IP, notBefore, notAfter time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: "receiver"},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}, nil
}

func (ca *testCA) leaf(t testing.TB, dnsNames []string, ips []net.IP, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	c, err := ca.issue(dnsNames, ips, notBefore, notAfter)
	require.NoError(t, err)
	return c
}

var localIPs = []net.IP{net.ParseIP("127.0.0.1")}

func (ca *testCA) localLeaf(t testing.TB) tls.Certificate {
	return ca.leaf(t, []string{"localhost"}, localIPs, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// The CA most tests trust through Config.CAFile, and its certificate for 127.0.0.1; made by TestMain.
var (
	sharedCA   *testCA
	sharedLeaf tls.Certificate
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sender-ca-")
	if err != nil {
		panic(err)
	}
	sharedCA, err = makeCA(dir)
	if err == nil {
		sharedLeaf, err = sharedCA.issue([]string{"localhost"}, localIPs, time.Now().Add(-time.Hour), time.Now().Add(2*time.Hour))
	}
	if err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func defaultCA(testing.TB) (*testCA, tls.Certificate) { return sharedCA, sharedLeaf }

// tlsServer starts an HTTPS server with cert (TLS 1.2+ unless cfg says otherwise) and counts new
// connections.
type tlsServer struct {
	*httptest.Server
	newConns atomic.Int64
}

func startTLS(t testing.TB, h http.Handler, cfg *tls.Config) *tlsServer {
	t.Helper()
	s := &tlsServer{Server: httptest.NewUnstartedServer(h)}
	if cfg == nil {
		_, leaf := defaultCA(t)
		cfg = &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	}
	s.TLS = cfg
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.newConns.Add(1)
		}
	}
	s.Config.ErrorLog = nil
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// tokenEndpoint is a real OAuth2 client-credentials token endpoint.
type tokenEndpoint struct {
	*tlsServer
	fetches   atomic.Int64
	expiresIn atomic.Int64 // 0 omits expires_in
	// respond, when set, replaces the normal answer.
	respond func(w http.ResponseWriter, r *http.Request) bool
}

func newTokenEndpoint(t testing.TB) *tokenEndpoint {
	te := &tokenEndpoint{}
	te.expiresIn.Store(3600)
	te.tlsServer = startTLS(t, http.HandlerFunc(te.serve), nil)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	n := te.fetches.Add(1)
	if te.respond != nil && te.respond(w, r) {
		return
	}
	id, secret, ok := r.BasicAuth()
	if r.Method != http.MethodPost || !ok || id != testClientID || secret != testSecret ||
		r.PostFormValue("grant_type") != "client_credentials" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	resp := map[string]any{"access_token": fmt.Sprintf("%s%d", tokenPrefix, n), "token_type": "Bearer"}
	if e := te.expiresIn.Load(); e != 0 {
		resp["expires_in"] = e
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (te *tokenEndpoint) tokenURL() string { return te.URL + "/oauth2/token" }

// fakeClock is a controllable clock for token expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// useFakeClock makes s read the time from a new fake clock, and returns the clock.
func useFakeClock(s *Sender) *fakeClock {
	c := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.now = c.Now
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testConfig returns a Config for apiURL and the token endpoint, trusting the shared CA and
// logging to an observer that the cleanup checks for leaked secrets and tokens.
func testConfig(t testing.TB, apiURL, tokenURL string) (Config, *observer.ObservedLogs) {
	t.Helper()
	ca, _ := defaultCA(t)
	core, logs := observer.New(zap.DebugLevel)
	t.Cleanup(func() { assertNoSecretsInLogs(t, logs) })
	return Config{
		APIURL:     apiURL,
		TokenURL:   tokenURL,
		Credential: credentials.Credential{ClientID: testClientID, ClientSecret: testSecret},
		CAFile:     ca.pemFile,
		Logger:     zap.New(core),
	}, logs
}

func newSender(t testing.TB, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// newSenderTo starts an HTTPS server running h (with the shared CA's certificate) and returns it
// with a Sender in the test configuration (testConfig) that posts to it and takes its tokens
// from te.
func newSenderTo(t testing.TB, te *tokenEndpoint, h http.Handler) (*Sender, *tlsServer) {
	t.Helper()
	srv := startTLS(t, h, nil)
	cfg, _ := testConfig(t, srv.URL, te.tokenURL())
	return newSender(t, cfg), srv
}

func assertNoSecretsInLogs(t testing.TB, logs *observer.ObservedLogs) {
	t.Helper()
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		assert.NotContains(t, line, testSecret)
		assert.NotContains(t, line, tokenPrefix)
	}
}

// assertClean checks an error names no secret, token or payload.
func assertClean(t testing.TB, err error, payload string) {
	t.Helper()
	require.Error(t, err)
	msg := err.Error()
	assert.NotContains(t, msg, testSecret)
	assert.NotContains(t, msg, tokenPrefix)
	if payload != "" {
		assert.NotContains(t, msg, payload)
	}
}

// receiver is a Data Sync receiver that accepts tokens for which accept returns true.
type receiver struct {
	requests atomic.Int64
	accept   func(token string) bool
	mu       sync.Mutex
	lastAuth []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.requests.Add(1)
	auth := r.Header.Get("Authorization")
	rc.mu.Lock()
	rc.lastAuth = append(rc.lastAuth, auth)
	rc.mu.Unlock()
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || (rc.accept != nil && !rc.accept(tok)) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	fmt.Fprint(w, `{"status":"ok"}`)
}

// postConcurrently makes n POSTs of the sample payload at once, checks that each was answered
// 200, and returns their results.
func postConcurrently(t testing.TB, s *Sender, n int) []Result {
	t.Helper()
	results := make([]Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := s.Post(context.Background(), []byte(samplePayload))
			assert.NoError(t, err)
			assert.Equal(t, http.StatusOK, res.Status)
			results[i] = res
		})
	}
	wg.Wait()
	return results
}

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

const samplePayload = `{"messages":[{"action":"CUSTOMERCRE","payload":"PAYLOAD-MARKER","type":"CUSTOMER","uniqueId":"0"}]}`
