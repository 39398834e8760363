package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func TestReceiverCommandIdentityFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
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
		err := runReceiver(t.Context(), Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: receiverSecretEnv}, append([]string{"--client-id", "x"}, c.args...))
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
	}

	// Running: the token endpoint takes the body style only and demands the scope.
	signing, secret := writeSigningSecret(t, dir, "signing.whsec")
	r := startReceiverCommand(t, receiverSecretEnv, "--client-id", "relay",
		"--token-auth-style", "body", "--required-scope", "api://x/.default", "--signing-secret-file", signing)
	ctxTLS := context.WithValue(t.Context(), oauth2.HTTPClient, r.client)
	cc := &clientcredentials.Config{ClientID: "relay", ClientSecret: "env-secret", TokenURL: r.tokenURL, AuthStyle: oauth2.AuthStyleInParams}
	_, err := cc.Token(ctxTLS)
	require.Error(t, err, "no scope")
	assert.Contains(t, err.Error(), "invalid_scope")
	cc.Scopes = []string{"api://x/.default"}
	_, err = cc.Token(ctxTLS)
	require.NoError(t, err)
	cc.AuthStyle = oauth2.AuthStyleInHeader
	_, err = cc.Token(ctxTLS)
	require.Error(t, err, "Basic refused")
	assert.Contains(t, err.Error(), "invalid_client")
	require.NoError(t, r.stop())
	assert.NotContains(t, r.stdout.String(), secret)
}
