package credentials

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeReplacing replaces path by renaming a new file over it, as the kubelet and Save do.
func writeReplacing(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".tmp", []byte(content), 0o600))
	require.NoError(t, os.Rename(path+".tmp", path))
}

func TestSourceFollowsChangesAndReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	writeReplacing(t, secretFile, "first-secret\n")
	env := envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: secretFile})
	src, err := NewSource(SourceConfig{Getenv: env, CheckInterval: time.Nanosecond})
	require.NoError(t, err)
	c, o, err := src.Get()
	require.NoError(t, err)
	assert.Equal(t, "first-secret", c.ClientSecret)
	assert.Equal(t, 1, o.Version)
	assert.Equal(t, "CDC_RELAY_CLIENT_SECRET_FILE ("+secretFile+")", o.String())

	// Unchanged: the same version, nothing read.
	_, o, _ = src.Get()
	assert.Equal(t, 1, o.Version)

	// Replaced: read again, and the origin says so.
	writeReplacing(t, secretFile, "second-secret\n")
	c, o, err = src.Get()
	require.NoError(t, err)
	assert.Equal(t, "second-secret", c.ClientSecret)
	assert.Equal(t, 2, o.Version)
	assert.Contains(t, o.String(), "read again at")

	// Rewritten in place with the same size and modification time: invisible to the stat check,
	// read again only after Reload (SIGHUP).
	fi, err := os.Stat(secretFile)
	require.NoError(t, err)
	f, err := os.OpenFile(secretFile, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("third--secret\n"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(secretFile, fi.ModTime(), fi.ModTime()))
	c, _, _ = src.Get()
	assert.Equal(t, "second-secret", c.ClientSecret, "the stat check cannot see this change")
	src.Reload()
	c, o, err = src.Get()
	require.NoError(t, err)
	assert.Equal(t, "third--secret", c.ClientSecret)
	assert.Equal(t, 3, o.Version)

	// A broken replacement is reported with the file it came from, never the secret.
	require.NoError(t, os.Chmod(secretFile, 0o644))
	_, _, err = src.Get()
	require.ErrorIs(t, err, ErrInsecurePermissions)
	assert.Contains(t, err.Error(), secretFile)
	assert.NotContains(t, err.Error(), "third--secret")
}

func TestSourceChecksAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	require.NoError(t, Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: "one"}))
	src, err := NewSource(SourceConfig{Path: p, MapName: DefaultMapName, Key: DefaultKeyName, CheckInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: "two"}))
	c, o, err := src.Get()
	require.NoError(t, err)
	assert.Equal(t, "one", c.ClientSecret, "not looked at within the interval")
	assert.Equal(t, `map "ce_credentials" key "datasync" in `+p, o.Where)
	src.Reload()
	c, _, err = src.Get()
	require.NoError(t, err)
	assert.Equal(t, "two", c.ClientSecret)
}

func TestResolveOverlaysSigningSecretsAndCertificateFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := storePath(t)
	require.NoError(t, Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: testSecret, SigningSecrets: []string{"whsec_" + strings.Repeat("A", 32)}}))
	secrets := filepath.Join(dir, "signing")
	one, two := "whsec_"+strings.Repeat("B", 32), "whsec_"+strings.Repeat("C", 44)
	require.NoError(t, os.WriteFile(secrets, []byte("# rotation in progress\n"+one+"\n\n"+two+"\n"), 0o600))
	c, where, err := Resolve(envOf(map[string]string{EnvSigningSecretsFile: secrets}), p, DefaultMapName, DefaultKeyName)
	require.NoError(t, err)
	assert.Equal(t, p, where)
	assert.Equal(t, []string{one, two}, c.SigningSecrets, "the file replaces the stored secrets")

	_, _, err = Resolve(envOf(map[string]string{EnvClientCertFile: filepath.Join(dir, "tls.crt")}), p, DefaultMapName, DefaultKeyName)
	require.ErrorIs(t, err, ErrClientCert)
	assert.Contains(t, err.Error(), "needs both a certificate file and a key file")

	require.NoError(t, os.WriteFile(secrets, []byte("whsec_not base64!\n"), 0o600))
	_, _, err = Resolve(envOf(map[string]string{EnvSigningSecretsFile: secrets}), p, DefaultMapName, DefaultKeyName)
	require.ErrorIs(t, err, ErrSigningSecret)
	assert.NotContains(t, err.Error(), "not base64!")
}

func TestCredentialStringsRedactNewSecrets(t *testing.T) {
	t.Parallel()
	c := Credential{ClientID: "id", ClientSecret: testSecret, SigningSecrets: []string{"whsec_SIGNINGSECRET"},
		ClientCertPEM: "-----BEGIN CERTIFICATE-----", ClientKeyPEM: "-----BEGIN PRIVATE KEY-----KEYMATERIAL"}
	b, err := json.Marshal(c)
	require.NoError(t, err)
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c), string(b)} {
		assert.NotContains(t, s, "SIGNINGSECRET")
		assert.NotContains(t, s, "KEYMATERIAL")
		assert.NotContains(t, s, testSecret)
	}
	assert.Contains(t, c.String(), "signing_secrets=1[redacted]")
}
