package sender

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	refrecv "github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// refReceiver starts the reference receiver (real HTTPS, real OAuth2 token endpoint) with cfg
// and the test's client credentials, and returns it with a sender Config that trusts it.
func refReceiver(t *testing.T, cfg refrecv.Config) (*refrecv.Server, Config, *observer.ObservedLogs) {
	t.Helper()
	cfg.ClientID, cfg.ClientSecret, cfg.Strict = testClientID, testSecret, true
	r, err := refrecv.New(cfg)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Close() })
	ca := filepath.Join(t.TempDir(), "receiver-ca.pem")
	require.NoError(t, r.WriteCAFile(ca))
	core, logs := observer.New(zap.DebugLevel)
	t.Cleanup(func() { assertNoSecretsInLogs(t, logs) })
	return r, Config{
		APIURL: r.APIURL(), TokenURL: r.TokenURL(), CAFile: ca, Logger: zap.New(core),
		Credential: credentials.Credential{ClientID: testClientID, ClientSecret: testSecret},
	}, logs
}

var customerDelete = mapping.Message{Action: mapping.ActionCustomerDelete, Type: mapping.TypeCustomer, Payload: "2142", UniqueID: "77"}

func oneMessage(m mapping.Message) []byte { return mapping.AppendEnvelope(nil, []mapping.Message{m}) }

func TestTokenScopeAndAudienceRequired(t *testing.T) {
	t.Parallel()
	const scope, audience = "api://partner-datasync/.default", "https://api.partner.example"
	r, cfg, _ := refReceiver(t, refrecv.Config{RequiredScope: scope, RequiredAudience: audience})

	// Neither: the endpoint's invalid_scope is quoted and the setting to fix is named.
	s := newSender(t, cfg)
	err := s.Token(context.Background())
	require.ErrorIs(t, err, ErrToken)
	assert.Contains(t, err.Error(), `error "invalid_scope": "the scope api://partner-datasync/.default is required"`)
	assert.Contains(t, err.Error(), "set DataSyncTokenScope")
	assertClean(t, err, "")

	// The scope but no audience: the endpoint's invalid_request is quoted, the audience named.
	cfg.TokenScope = "openid  " + scope
	s = newSender(t, cfg)
	err = s.Token(context.Background())
	require.ErrorIs(t, err, ErrToken)
	assert.Contains(t, err.Error(), `error "invalid_request": "the audience parameter must name this API"`)
	assert.Contains(t, err.Error(), "DataSyncTokenAudience")
	assertClean(t, err, "")

	// Both: a token, and the message delivered with it.
	cfg.TokenAudience = audience
	s = newSender(t, cfg)
	res, err := s.Post(context.Background(), oneMessage(customerDelete))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status, res.Excerpt)
	st := r.Stats()
	assert.Equal(t, 1, st.TokensIssued)
	assert.Equal(t, 1, st.Rejected["token_scope"])
	assert.Equal(t, 1, st.Rejected["token_audience"])
	assert.Equal(t, 1, st.Messages)
}

func TestTokenAuthStyles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		endpoint, client string
		ok               bool
	}{
		{"basic", AuthStyleBasic, true},
		{"basic", AuthStyleBody, false},
		{"basic", AuthStyleAuto, true},
		{"body", AuthStyleBody, true},
		{"body", AuthStyleBasic, false},
		{"body", AuthStyleAuto, true},
		{"", AuthStyleBody, true},
	} {
		t.Run(tc.endpoint+"/"+tc.client, func(t *testing.T) {
			t.Parallel()
			r, cfg, _ := refReceiver(t, refrecv.Config{TokenAuthStyle: tc.endpoint})
			cfg.TokenAuthStyle = tc.client
			s := newSender(t, cfg)
			res, err := s.Post(context.Background(), oneMessage(customerDelete))
			if !tc.ok {
				require.ErrorIs(t, err, ErrToken)
				assert.Contains(t, err.Error(), `error "invalid_client": "client authentication must use`)
				assert.Contains(t, err.Error(), "DataSyncTokenAuthStyle (now "+tc.client+")")
				assertClean(t, err, "")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, res.Status)
			// auto remembers the style that worked: a second token costs one request.
			before := r.Stats()
			s.tokens.drop()
			require.NoError(t, s.Token(context.Background()))
			after := r.Stats()
			assert.Equal(t, before.TokensIssued+1, after.TokensIssued)
			assert.Equal(t, sum(before.Rejected), sum(after.Rejected), "no refused token request once the style is known")
		})
	}
}

func sum(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

func TestAuthStyleSettingValidated(t *testing.T) {
	t.Parallel()
	_, cfg, _ := refReceiver(t, refrecv.Config{})
	cfg.TokenAuthStyle = "header"
	_, err := New(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "use auto, basic or body")
}

// clientPair issues a client certificate (client-auth usage) from ca, valid in [from, to), as PEM.
func clientPair(t *testing.T, ca *testCA, cn string, from, to time.Time) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"retailer"}},
		NotBefore:    from, NotAfter: to,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
}

func caPEM(ca *testCA) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	clientCA := newCA(t)
	now := time.Now()
	good, goodKey := clientPair(t, clientCA, "relay.retailer.example", now.Add(-time.Hour), now.Add(24*time.Hour))

	t.Run("token endpoint demands a certificate", func(t *testing.T) {
		t.Parallel()
		r, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForToken: true})
		err := newSender(t, cfg).Token(context.Background())
		require.ErrorIs(t, err, ErrToken)
		assert.Contains(t, err.Error(), `"a client certificate (mTLS) is required"`)

		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = good, goodKey
		res, err := newSender(t, cfg).Post(context.Background(), oneMessage(customerDelete))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
		assert.Equal(t, 1, r.Stats().Rejected["client_certificate"])
	})
	t.Run("API demands a certificate", func(t *testing.T) {
		t.Parallel()
		r, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
		res, err := newSender(t, cfg).Post(context.Background(), oneMessage(customerDelete))
		require.NoError(t, err, "the token endpoint does not ask for one")
		assert.Equal(t, http.StatusUnauthorized, res.Status)
		assert.Contains(t, res.Excerpt, "client_certificate_required")

		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = good, goodKey
		res, err = newSender(t, cfg).Post(context.Background(), oneMessage(customerDelete))
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status)
		assert.Equal(t, 1, r.Stats().Messages)
	})
	t.Run("certificate from a CA the receiver does not trust", func(t *testing.T) {
		t.Parallel()
		_, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = clientPair(t, newCA(t), "stranger", now.Add(-time.Hour), now.Add(time.Hour))
		_, err := newSender(t, cfg).Post(context.Background(), oneMessage(customerDelete))
		require.ErrorIs(t, err, ErrTLS)
		assert.Contains(t, err.Error(), "store one it trusts with cdc-relay credentials set --client-cert FILE --client-key FILE")
	})
	t.Run("expired certificate", func(t *testing.T) {
		t.Parallel()
		_, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = clientPair(t, clientCA, "old.retailer.example", now.Add(-48*time.Hour), now.Add(-time.Hour))
		_, err := New(cfg)
		require.ErrorIs(t, err, credentials.ErrClientCert)
		assert.Contains(t, err.Error(), `the client certificate "CN=old.retailer.example,O=retailer" expired on`)
		assert.Contains(t, err.Error(), "credentials set --client-cert FILE --client-key FILE")
	})
	t.Run("key does not match the certificate", func(t *testing.T) {
		t.Parallel()
		_, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
		_, otherKey := clientPair(t, clientCA, "other", now.Add(-time.Hour), now.Add(time.Hour))
		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = good, otherKey
		_, err := New(cfg)
		require.ErrorIs(t, err, credentials.ErrClientCert)
		assert.Contains(t, err.Error(), "the client key does not match the client certificate")
		assert.NotContains(t, err.Error(), "PRIVATE KEY")
	})
	t.Run("certificate expiring while the sender runs", func(t *testing.T) {
		t.Parallel()
		_, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
		cfg.Credential.ClientCertPEM, cfg.Credential.ClientKeyPEM = clientPair(t, clientCA, "short.retailer.example", now.Add(-time.Hour), time.Now().Add(2*time.Second))
		s := newSender(t, cfg)
		var err error
		waitFor(t, func() bool {
			_, err = s.Post(context.Background(), oneMessage(customerDelete))
			return err != nil
		})
		require.ErrorIs(t, err, credentials.ErrClientCert)
		assert.Contains(t, err.Error(), "expired on")
	})
}

// Standard Webhooks verification written from the specification (standardwebhooks.com), apart
// from the sender's and the reference receiver's code: the signed content is
// "{webhook-id}.{webhook-timestamp}.{body}", the key is the base64 after "whsec_", the signature
// is base64 HMAC-SHA256, webhook-signature lists "v1,<sig>" entries separated by spaces, and a
// timestamp more than the tolerance away is refused.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp outside tolerance")
	}
	m := hmac.New(sha256.New, key)
	io.WriteString(m, id+"."+ts+".")
	m.Write(body)
	expected := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Split(h.Get("webhook-signature"), " ") {
		if hmac.Equal([]byte(s), []byte(expected)) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

func newSigningSecret(t *testing.T) string {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func TestStandardWebhooksSigning(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := newSigningSecret(t), newSigningSecret(t)

	// An independent verifier: a plain HTTPS endpoint checking each request with the function
	// above, for each secret separately.
	type seen struct {
		header   http.Header
		body     []byte
		okOld    bool
		okNew    bool
		verified error
	}
	var mu sync.Mutex
	var got []seen
	plain := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		now := time.Now()
		mu.Lock()
		got = append(got, seen{header: r.Header.Clone(), body: b,
			okOld: verifyStandardWebhook(oldSecret, r.Header, b, now) == nil,
			okNew: verifyStandardWebhook(newSecret, r.Header, b, now) == nil})
		mu.Unlock()
		w.Write([]byte(`{"status":"ok"}`))
	}), nil)

	// The relay holds both secrets during a rotation; the reference receiver knows only the new.
	r, cfg, logs := refReceiver(t, refrecv.Config{SigningSecrets: []string{newSecret}})
	cfg.Sign = true
	cfg.Credential.SigningSecrets = []string{oldSecret, newSecret}
	s := newSender(t, cfg)

	batch := mapping.AppendEnvelope(nil, []mapping.Message{customerDelete, {Action: mapping.ActionCustomerDelete, Type: mapping.TypeCustomer, Payload: "2143", UniqueID: "78"}})
	for _, body := range [][]byte{oneMessage(customerDelete), batch} {
		res, err := s.Post(context.Background(), body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.Status, res.Excerpt)
		require.NotNil(t, res.Signed)
		assert.Len(t, strings.Fields(res.Signed.Signature), 2, "one signature per secret")
	}
	recv := r.Stats()
	assert.Equal(t, 3, recv.Messages)

	// The same bodies to the independent verifier, twice (a retry): both secrets verify each
	// request, and the webhook-id is the uniqueId (single) or the same batch id both times.
	cfgPlain := cfg
	cfgPlain.APIURL = plain.URL + "/datasync"
	cfgPlain.CAFile = sharedCA.pemFile
	cfgPlain.TokenURL = newTokenEndpoint(t).tokenURL()
	sp := newSender(t, cfgPlain)
	for range 2 {
		for _, body := range [][]byte{oneMessage(customerDelete), batch} {
			_, err := sp.Post(context.Background(), body)
			require.NoError(t, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 4)
	for i, g := range got {
		assert.True(t, g.okOld, "request %d verifies with the old secret", i)
		assert.True(t, g.okNew, "request %d verifies with the new secret", i)
	}
	assert.Equal(t, "77", got[0].header.Get("webhook-id"))
	assert.Equal(t, "77", got[2].header.Get("webhook-id"))
	assert.True(t, strings.HasPrefix(got[1].header.Get("webhook-id"), "batch_"))
	assert.Equal(t, got[1].header.Get("webhook-id"), got[3].header.Get("webhook-id"), "a batch keeps its id on a resend")

	// A tampered body fails the independent check: the verifier is not vacuous.
	tampered := append([]byte(nil), got[0].body...)
	tampered[len(tampered)-3] ^= 1
	assert.Error(t, verifyStandardWebhook(newSecret, got[0].header, tampered, time.Now()))
	assert.Error(t, verifyStandardWebhook(newSecret, got[0].header, got[0].body, time.Now().Add(6*time.Minute)), "too old")

	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		assert.NotContains(t, line, oldSecret)
		assert.NotContains(t, line, newSecret)
	}
}

func TestSigningNeedsASecret(t *testing.T) {
	t.Parallel()
	_, cfg, _ := refReceiver(t, refrecv.Config{})
	cfg.Sign = true
	_, err := New(cfg)
	require.ErrorIs(t, err, credentials.ErrSigningSecret)
	assert.Contains(t, err.Error(), "credentials set --signing-secret-file FILE")
}

func TestClientCertificateFilesReloadedWhenTheyChange(t *testing.T) {
	t.Parallel()
	clientCA := newCA(t)
	r, cfg, _ := refReceiver(t, refrecv.Config{ClientCAPEM: caPEM(clientCA), ClientCertForAPI: true})
	now := time.Now()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair := func(cert, key string) {
		for f, content := range map[string]string{certFile: cert, keyFile: key} {
			require.NoError(t, os.WriteFile(f+".tmp", []byte(content), 0o600))
			require.NoError(t, os.Rename(f+".tmp", f))
		}
	}
	// First a certificate the receiver does not trust, then the right one, on disk.
	writePair(clientPair(t, newCA(t), "stranger", now.Add(-time.Hour), now.Add(time.Hour)))
	env := map[string]string{credentials.EnvClientID: testClientID, credentials.EnvClientSecret: testSecret,
		credentials.EnvClientCertFile: certFile, credentials.EnvClientKeyFile: keyFile}
	src, err := credentials.NewSource(credentials.SourceConfig{Getenv: func(k string) string { return env[k] }, CheckInterval: time.Nanosecond})
	require.NoError(t, err)
	cfg.Source = src
	s := newSender(t, cfg)
	_, err = s.Post(context.Background(), oneMessage(customerDelete))
	require.ErrorIs(t, err, ErrTLS)

	writePair(clientPair(t, clientCA, "relay.retailer.example", now.Add(-time.Hour), now.Add(time.Hour)))
	res, err := s.Post(context.Background(), oneMessage(customerDelete))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.Status)
	assert.Equal(t, 1, r.Stats().Messages)

	// A key that does not match, written over the good one: a clear error naming the source.
	_, otherKey := clientPair(t, clientCA, "other", now.Add(-time.Hour), now.Add(time.Hour))
	good, err := os.ReadFile(certFile)
	require.NoError(t, err)
	writePair(string(good), otherKey)
	_, err = s.Post(context.Background(), oneMessage(customerDelete))
	require.ErrorIs(t, err, credentials.ErrClientCert)
	assert.Contains(t, err.Error(), "the client key does not match the client certificate")
	assert.Contains(t, err.Error(), "read again at")
}
