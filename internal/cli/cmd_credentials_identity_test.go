package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
)

// selfSignedClient writes a self-signed client certificate valid in [from, to) and its key into
// dir, returning the two paths and the key's PEM.
func selfSignedClient(t *testing.T, dir, name string, from, to time.Time) (certFile, keyFile, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: to, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, []byte(keyPEM), 0o600))
	return certFile, keyFile, keyPEM
}

func writeSigningSecret(t *testing.T, dir, name string) (path, secret string) {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	secret = "whsec_" + base64.StdEncoding.EncodeToString(b)
	path = filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(secret+"\n"), 0o600))
	return path, secret
}

func TestCredentialsSigningSecretsAndClientCertificate(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, credTestSecret+"\n")
	dir := t.TempDir()
	f1, s1 := writeSigningSecret(t, dir, "one")
	f2, s2 := writeSigningSecret(t, dir, "two")

	// No entry yet: only the certificate or signing secrets cannot make one.
	require.Equal(t, 1, e.run("credentials", "set", "--signing-secret-file", f1), e.out.String())
	assert.Contains(t, e.errOut.String(), "has no client id and secret yet: pass --client-id")

	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "relay-client"), e.errOut.String())
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "set", "--signing-secret-file", f1, "--signing-secret-file", f2), e.errOut.String())
	assert.Contains(t, e.out.String(), "signing secret 1: "+credentials.Fingerprint(s1))
	assert.Contains(t, e.out.String(), "signing secret 2: "+credentials.Fingerprint(s2))
	c, err := credentials.Load(e.path, credentials.DefaultMapName, credentials.DefaultKeyName)
	require.NoError(t, err)
	assert.Equal(t, []string{s1, s2}, c.SigningSecrets)
	assert.Equal(t, credTestSecret, c.ClientSecret, "the client secret is kept")

	now := time.Now()
	certFile, keyFile, keyPEM := selfSignedClient(t, dir, "relay.retailer.example", now.Add(-time.Hour), now.Add(90*24*time.Hour))
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "set", "--client-cert", certFile, "--client-key", keyFile, "--remove-signing-secret", credentials.Fingerprint(s1)), e.errOut.String())
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "show"), e.errOut.String())
	out := e.out.String()
	assert.Contains(t, out, "client id: relay-client")
	assert.NotContains(t, out, credentials.Fingerprint(s1), "removed")
	assert.Contains(t, out, "signing secret 1: "+credentials.Fingerprint(s2))
	assert.Contains(t, out, "client certificate: CN=relay.retailer.example")
	assert.Contains(t, out, "client certificate expires: "+now.Add(90*24*time.Hour).UTC().Format("2006-01-02"))
	assert.NotContains(t, out, "WARNING")
	for _, secret := range []string{s1, s2, keyPEM, "PRIVATE KEY"} {
		assert.NotContains(t, e.out.String()+e.errOut.String(), secret)
	}
	e.assertNoSecretPrinted(t)

	// A certificate close to its expiry is stored, with a warning.
	soonCert, soonKey, _ := selfSignedClient(t, dir, "soon", now.Add(-time.Hour), now.Add(3*24*time.Hour))
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "set", "--client-cert", soonCert, "--client-key", soonKey), e.errOut.String())
	assert.Contains(t, e.out.String(), `WARNING: the client certificate "CN=soon" expires in 2 days`)

	// Refused: an expired certificate, a key of another certificate, a fingerprint not stored,
	// a signing secret readable by others on a writable disk, a malformed secret.
	oldCert, oldKey, _ := selfSignedClient(t, dir, "old", now.Add(-48*time.Hour), now.Add(-time.Hour))
	_, otherKey, _ := selfSignedClient(t, dir, "other", now.Add(-time.Hour), now.Add(time.Hour))
	wide, _ := writeSigningSecret(t, dir, "wide")
	require.NoError(t, os.Chmod(wide, 0o644))
	e.errOut.Reset()
	require.Equal(t, 1, e.run("credentials", "set", "--client-id", "relay-client", "--client-secret-file", wide))
	assert.Contains(t, e.errOut.String(), "reading --client-secret-file: secret file has insecure permissions")
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("not-a-whsec-secret\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--client-cert", oldCert, "--client-key", oldKey}, "expired on"},
		{[]string{"--client-cert", certFile, "--client-key", otherKey}, "the client key does not match the client certificate"},
		{[]string{"--remove-signing-secret", "sha256:000000000000"}, "no stored signing secret has fingerprint"},
		{[]string{"--signing-secret-file", wide}, "has mode 0644"},
		{[]string{"--signing-secret-file", bad}, "starts with whsec_"},
		{[]string{"--client-cert", certFile}, "--client-cert and --client-key go together"},
	} {
		e.errOut.Reset()
		assert.NotEqual(t, 0, e.run(append([]string{"credentials", "set"}, tc.args...)...), tc.args)
		assert.Contains(t, e.errOut.String(), tc.want, tc.args)
		assert.NotContains(t, e.errOut.String(), "not-a-whsec-secret")
	}
	c, err = credentials.Load(e.path, credentials.DefaultMapName, credentials.DefaultKeyName)
	require.NoError(t, err)
	assert.True(t, strings.Contains(c.ClientCertPEM, "CERTIFICATE"), "the refused changes left the entry as it was")
	assert.Equal(t, []string{s2}, c.SigningSecrets)
}

func TestStatusWarnsOfAnExpiringClientCertificate(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, credTestSecret+"\n")
	assert.Empty(t, credentialWarning(e.Env, credentials.DefaultMapName, credentials.DefaultKeyName), "no credential: nothing to say")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "relay-client"), e.errOut.String())
	dir := t.TempDir()
	now := time.Now()
	farCert, farKey, _ := selfSignedClient(t, dir, "far", now.Add(-time.Hour), now.Add(15*24*time.Hour+time.Hour))
	require.Equal(t, 0, e.run("credentials", "set", "--client-cert", farCert, "--client-key", farKey), e.errOut.String())
	assert.Empty(t, credentialWarning(e.Env, credentials.DefaultMapName, credentials.DefaultKeyName), "15 days left: no warning yet")
	nearCert, nearKey, _ := selfSignedClient(t, dir, "near", now.Add(-time.Hour), now.Add(13*24*time.Hour))
	require.Equal(t, 0, e.run("credentials", "set", "--client-cert", nearCert, "--client-key", nearKey), e.errOut.String())
	assert.Contains(t, credentialWarning(e.Env, credentials.DefaultMapName, credentials.DefaultKeyName), `the client certificate "CN=near" expires in 12 days`)
}

func TestNewClientSecretDespiteAnExpiredStoredCertificate(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, credTestSecret+"\n")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "relay-client"), e.errOut.String())
	// A certificate stored while valid that has expired since (written here directly).
	dir := t.TempDir()
	oldCert, _, _ := selfSignedClient(t, dir, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	certPEM, err := os.ReadFile(oldCert)
	require.NoError(t, err)
	keyOf, err := os.ReadFile(filepath.Join(dir, "expired.key"))
	require.NoError(t, err)
	b, err := os.ReadFile(e.path)
	require.NoError(t, err)
	st := strings.Replace(string(b), `"client_secret"`, `"client_cert": `+jsonString(string(certPEM))+`, "client_key": `+jsonString(string(keyOf))+`, "client_secret"`, 1)
	require.NoError(t, os.WriteFile(e.path, []byte(st), 0o600))

	e.Env.Stdin = strings.NewReader("a-new-client-secret\n")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "relay-client"), e.errOut.String())
	c, err := credentials.Load(e.path, credentials.DefaultMapName, credentials.DefaultKeyName)
	require.NoError(t, err)
	assert.Equal(t, "a-new-client-secret", c.ClientSecret)
	assert.Equal(t, string(certPEM), c.ClientCertPEM, "the stored certificate is kept")
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "show"), e.errOut.String())
	assert.Contains(t, e.out.String(), "client certificate: UNUSABLE")
	assert.Contains(t, e.out.String(), "expired on")
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
