package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func TestReceiverCommandIdentityFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretEnv := func(k string) string {
		if k == "CDC_RELAY_RECEIVER_CLIENT_SECRET" {
			return "env-secret"
		}
		return ""
	}
	bad := filepath.Join(dir, "bad.whsec")
	require.NoError(t, os.WriteFile(bad, []byte("plain\n"), 0o600))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--require-client-cert", "always"}, "use token, api or both"},
		{[]string{"--require-client-cert", "api"}, "needs ClientCAPEM"},
		{[]string{"--token-auth-style", "header"}, "use basic, body"},
		{[]string{"--signing-secret-file", bad}, "starts with whsec_"},
		{[]string{"--client-ca-file", filepath.Join(dir, "missing.pem")}, "reading --client-ca-file"},
	} {
		err := runReceiver(t.Context(), Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: secretEnv}, append([]string{"--client-id", "x"}, c.args...))
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
	}

	// Running: the token endpoint takes the body style only and demands the scope.
	signing, secret := writeSigningSecret(t, dir, "signing.whsec")
	caFile := filepath.Join(dir, "ca.pem")
	matched := make(chan []string, 1)
	stdout := &notifyWriter{re: regexp.MustCompile(`API URL:\s+(\S+)\nToken URL:\s+(\S+)\n`), match: matched}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runReceiver(ctx, Env{Stdout: stdout, Stderr: &bytes.Buffer{}, Getenv: secretEnv}, []string{"--addr", "127.0.0.1:0", "--client-id", "relay",
			"--ca-out", caFile, "--token-auth-style", "body", "--required-scope", "api://x/.default", "--signing-secret-file", signing})
	}()
	var urls []string
	select {
	case urls = <-matched:
	case err := <-done:
		t.Fatalf("receiver exited early: %v", err)
	}
	ca, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	ctxTLS := context.WithValue(t.Context(), oauth2.HTTPClient, trustingClient(pool))
	cc := &clientcredentials.Config{ClientID: "relay", ClientSecret: "env-secret", TokenURL: urls[2], AuthStyle: oauth2.AuthStyleInParams}
	_, err = cc.Token(ctxTLS)
	require.Error(t, err, "no scope")
	assert.Contains(t, err.Error(), "invalid_scope")
	cc.Scopes = []string{"api://x/.default"}
	_, err = cc.Token(ctxTLS)
	require.NoError(t, err)
	cc.AuthStyle = oauth2.AuthStyleInHeader
	_, err = cc.Token(ctxTLS)
	require.Error(t, err, "Basic refused")
	assert.Contains(t, err.Error(), "invalid_client")
	cancel()
	require.NoError(t, <-done)
	assert.NotContains(t, stdout.String(), secret)
}

func trustingClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
