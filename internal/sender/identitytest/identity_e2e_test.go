// Package identitytest runs the relay daemon in-process against the reference receiver (real
// HTTPS, real OAuth2 token endpoint) and a real PostgreSQL, for the identity features that only
// show end to end: settings in data_sync_config, rotation without restart, signatures that stay
// stable across a retry.
package identitytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/e2etest"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// stack is the shared end-to-end stack (e2etest.Stack) with the environment the relay reads its
// credential overrides from; secrets lists every secret the relay's logs must never show.
type stack struct {
	*e2etest.Stack
	env     map[string]string
	secrets []string
}

// newStack builds the stack with a receiver that accepts secret; more are secrets the test will
// rotate to, which the relay's logs must not show either.
func newStack(t *testing.T, rcfg receiver.Config, secret string, more ...string) *stack {
	t.Helper()
	s := &stack{Stack: e2etest.New(t, pgtest.NewDB(t), rcfg, secret), env: map[string]string{}}
	s.secrets = append(append([]string{secret}, more...), rcfg.SigningSecrets...)
	t.Cleanup(func() {
		logs := s.Logs.String()
		for i, secret := range append(s.secrets, "whsec_", "PRIVATE KEY", "Bearer ", `access_token":"`) {
			if secret != "" && strings.Contains(logs, secret) {
				t.Errorf("secret material (pattern %d of the scan) appears in the relay's logs", i)
			}
		}
	})
	return s
}

// run starts the daemon in-process with the credential at credPath; the cleanup stops it and
// checks it stopped cleanly.
func (s *stack) run(credPath string) { s.runWith(credPath, nil) }

// runWith is run with mod applied to the configuration: polling with a quick sweep (the
// doorbell is not what these tests are about), no admin server, and s.env as the environment.
func (s *stack) runWith(credPath string, mod func(*daemon.Config)) {
	s.T.Helper()
	cfg := s.Config()
	cfg.CredentialsPath, cfg.AdminAddr, cfg.Poll = credPath, "off", true
	cfg.Relay.SweepInterval, cfg.Relay.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.Getenv = func(k string) string { return s.env[k] }
	if mod != nil {
		mod(&cfg)
	}
	s.Run(cfg)
}

// runWithSecretFile runs the relay with the client id from the environment and the client
// secret from a file named by it (as a mounted Kubernetes secret gives them), the file holding
// secret; it returns the file's path.
func (s *stack) runWithSecretFile(secret string) (secretFile string) {
	s.T.Helper()
	secretFile = filepath.Join(s.Dir, "client-secret")
	writeAtomic(s.T, secretFile, secret+"\n")
	s.env[credentials.EnvClientID] = e2etest.ClientID
	s.env[credentials.EnvClientSecretFile] = secretFile
	s.run(filepath.Join(s.Dir, "unused.json"))
	return secretFile
}

func (s *stack) waitMessages(n int) {
	s.T.Helper()
	require.Eventually(s.T, func() bool { return s.Recv.Stats().Unique >= n }, 60*time.Second, 5*time.Millisecond,
		"messages delivered: %+v", s.Recv.Stats())
}

// writeAtomic replaces path's content the way the kubelet and `credentials set` do: a new file
// renamed over the old one.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestRotatedSecretFileUsedWithoutRestart(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := "old-secret-Rot8-"+t.Name(), "new-secret-Rot8-"+t.Name()
	s := newStack(t, receiver.Config{}, oldSecret, newSecret)
	secretFile := s.runWithSecretFile(oldSecret)

	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	s.waitMessages(1)

	// The partner rotates: the old secret stops working and its tokens are revoked.
	s.Rotate(newSecret)
	s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'B' FROM generate_series(2, 20) g`)
	// The failure says which file and which client the refused credential came from.
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%' || $1 || '%' AND last_error LIKE '%rejected the client credentials%'`,
			credentials.EnvClientSecretFile+" ("+secretFile+")") > 0
	}, 60*time.Second, 5*time.Millisecond)

	// The new secret lands on disk; the running relay picks it up and delivers everything.
	writeAtomic(t, secretFile, newSecret+"\n")
	s.waitMessages(20)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue`)+s.Count(`SELECT count(*) FROM data_sync_cust_pending_queue`) == 0
	}, 30*time.Second, 5*time.Millisecond)
	assert.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_failed`), "nothing dead-lettered")
	assert.Contains(t, s.Logs.String(), "the credential changed and was read again")
	assert.Equal(t, 1, strings.Count(s.Logs.String(), `"msg":"relay delivering"`), "one session: no restart")
}

func TestRotatedCredentialStoreUsedWithoutRestart(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := "old-store-secret-"+t.Name(), "new-store-secret-"+t.Name()
	s := newStack(t, receiver.Config{}, oldSecret, newSecret)
	s.run(s.CredFile)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	s.waitMessages(1)

	s.Rotate(newSecret)
	s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'B' FROM generate_series(2, 10) g`)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%' || $1 || '%'`,
			`map "ce_credentials" key "datasync" in `+s.CredFile) > 0
	}, 60*time.Second, 5*time.Millisecond)
	require.NoError(t, credentials.Save(s.CredFile, credentials.DefaultMapName, credentials.DefaultKeyName, credentials.Credential{ClientID: e2etest.ClientID, ClientSecret: newSecret}))
	s.waitMessages(10)
	assert.Zero(t, s.Count(`SELECT count(*) FROM data_sync_cust_failed`))
	assert.Equal(t, 1, strings.Count(s.Logs.String(), `"msg":"relay delivering"`), "one session: no restart")
}

func whsec(t *testing.T) string {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func TestSignedDeliveryKeepsItsIDAcrossARetry(t *testing.T) {
	t.Parallel()
	signing := whsec(t)
	s := newStack(t, receiver.Config{SigningSecrets: []string{signing}}, "signing-test-secret")
	require.NoError(t, credentials.Save(s.CredFile, credentials.DefaultMapName, credentials.DefaultKeyName,
		credentials.Credential{ClientID: e2etest.ClientID, ClientSecret: "signing-test-secret", SigningSecrets: []string{whsec(t), signing}}))
	s.Set("DataSyncSigning", "Standard-Webhooks")
	s.Recv.SetFaults(receiver.Faults{FailRate: 1, FailStatus: 503})
	s.run(s.CredFile)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (7, 'A')`)
	require.Eventually(t, func() bool { return len(s.Recv.SignedIDs()) >= 2 }, 60*time.Second, 5*time.Millisecond)
	s.Recv.SetFaults(receiver.Faults{})
	s.waitMessages(1)

	var uniqueID string
	for _, id := range s.Recv.SignedIDs() {
		if uniqueID == "" {
			uniqueID = id
		}
		assert.Equal(t, uniqueID, id, "every attempt carries the same webhook-id")
	}
	st := s.Recv.Stats()
	assert.Positive(t, st.FaultsInjected)
	assert.Zero(t, st.Rejected["signature"])
	var value string
	require.NoError(t, s.DB.QueryRow(context.Background(), `SELECT value FROM data_sync_config WHERE name = 'DataSyncSigning'`).Scan(&value))
	assert.Equal(t, "standard-webhooks", value, "the setting is canonicalised")

	// send-sample shows what it signed (headers and signed content), never a secret.
	var out, errOut bytes.Buffer
	code := e2etest.RunCLI(&out, &errOut, "send-sample", "--database-url", s.URL, "--ca-file", s.CAFile, "--credentials", s.CredFile)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "signed (Standard Webhooks, 2 signature(s))")
	assert.Contains(t, out.String(), "webhook-id: 0\n")
	assert.Contains(t, out.String(), `signed content: 0.`)
	assert.Equal(t, []string{"0"}, s.Recv.SignedIDs()[len(s.Recv.SignedIDs())-1:], "the receiver verified the sample")
	for _, secret := range s.secrets {
		assert.NotContains(t, out.String()+errOut.String(), secret)
	}
	assert.NotContains(t, out.String()+errOut.String(), "whsec_")
}

func TestTokenSettingsEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "settings-test-secret"
	s := newStack(t, receiver.Config{RequiredScope: "api://partner/.default", RequiredAudience: "https://api.partner.example", TokenAuthStyle: "body"}, secret)
	for _, bad := range []struct{ name, value, want string }{
		{"DataSyncTokenAuthStyle", "header", `invalid value "header" for DataSyncTokenAuthStyle`},
		{"DataSyncTokenScope", `api://"quoted"`, `invalid value "api://"quoted"" for DataSyncTokenScope`},
		{"DataSyncTokenAudience", "has space", `invalid value "has space" for DataSyncTokenAudience`},
		{"DataSyncSigning", "hmac", `invalid value "hmac" for DataSyncSigning`},
	} {
		_, err := s.DB.Exec(context.Background(), `UPDATE data_sync_config SET value = $2 WHERE name = $1`, bad.name, bad.value)
		require.Error(t, err, bad.name)
		assert.Contains(t, err.Error(), bad.want)
	}
	s.Set("DataSyncTokenAuthStyle", "basic") // the receiver accepts only the body: refused
	s.run(s.CredFile)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%invalid_client%client authentication must use%'`) > 0
	}, 60*time.Second, 5*time.Millisecond)
	// Fixed live, one setting at a time, as an operator would in psql.
	s.Set("DataSyncTokenAuthStyle", " AUTO ")
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%invalid_scope%'`) > 0
	}, 60*time.Second, 5*time.Millisecond)
	s.Set("DataSyncTokenScope", "  openid   api://partner/.default ")
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%DataSyncTokenAudience%'`) > 0
	}, 60*time.Second, 5*time.Millisecond)
	s.Set("DataSyncTokenAudience", "https://api.partner.example")
	s.waitMessages(1)
	var scope string
	require.NoError(t, s.DB.QueryRow(context.Background(), `SELECT value FROM data_sync_config WHERE name = 'DataSyncTokenScope'`).Scan(&scope))
	assert.Equal(t, "openid api://partner/.default", scope)
}

func TestSIGHUPRereadsTheCredential(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := "hup-secret-AAAA-"+t.Name(), "hup-secret-BBBB-"+t.Name() // same length
	s := newStack(t, receiver.Config{}, oldSecret, newSecret)
	secretFile := s.runWithSecretFile(oldSecret)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	s.waitMessages(1) // the sender, and its SIGHUP handler, are up

	s.Rotate(newSecret)
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (2, 'B')`)
	require.Eventually(t, func() bool {
		return s.Count(`SELECT count(*) FROM data_sync_cust_progress_queue WHERE last_error LIKE '%rejected the client credentials%'`) > 0
	}, 60*time.Second, 5*time.Millisecond)

	// Rewrite the file in place, same size, same modification time: only SIGHUP can tell.
	fi, err := os.Stat(secretFile)
	require.NoError(t, err)
	f, err := os.OpenFile(secretFile, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte(newSecret+"\n"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(secretFile, fi.ModTime(), fi.ModTime()))
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	s.waitMessages(2)
	assert.Contains(t, s.Logs.String(), "SIGHUP: reading the credential again")
	assert.Equal(t, 1, strings.Count(s.Logs.String(), `"msg":"relay delivering"`), "one session: no restart")
}

// clientCA makes a CA and a client certificate it issued, valid in [from, to), written as PEM
// files into dir; it returns the CA's PEM and the two paths.
func clientCA(t *testing.T, dir string, from, to time.Time) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partner client CA"},
		NotBefore: from, NotAfter: to.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "relay.retailer.example"},
		NotBefore: from, NotAfter: to, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

func TestMutualTLSFromRunFlags(t *testing.T) {
	t.Parallel()
	const secret = "mtls-test-secret"
	dir := t.TempDir()
	now := time.Now()
	caPEM, certFile, keyFile := clientCA(t, dir, now.Add(-time.Hour), now.Add(24*time.Hour))
	s := newStack(t, receiver.Config{ClientCAPEM: caPEM, ClientCertForToken: true, ClientCertForAPI: true}, secret)
	s.runWith(s.CredFile, func(c *daemon.Config) { c.ClientCertFile, c.ClientKeyFile = certFile, keyFile })
	s.Exec(`INSERT INTO customer (customer_id, first_name) SELECT g, 'A' FROM generate_series(1, 5) g`)
	s.waitMessages(5)
	assert.Zero(t, s.Recv.Stats().Rejected["client_certificate"])
}

// TestSIGHUPWhilePausedDoesNotStopTheRelay is not parallel on purpose: it must run while no
// other test's sender is listening for SIGHUP, or their handlers would hide a relay that lets
// SIGHUP's default action (exit) happen while it has no sender (Data Sync disabled).
func TestSIGHUPWhilePausedDoesNotStopTheRelay(t *testing.T) {
	const secret = "paused-hup-secret"
	s := newStack(t, receiver.Config{}, secret)
	s.Set("DataSyncEnabled", "false")
	s.run(s.CredFile)
	require.Eventually(t, func() bool { return strings.Contains(s.Logs.String(), "Data Sync is disabled") }, 60*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP)) // kills the test binary without the fix
	s.Set("DataSyncEnabled", "true")
	s.Exec(`INSERT INTO customer (customer_id, first_name) VALUES (1, 'A')`)
	s.waitMessages(1)
}
