//go:build linux

package credentials

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readOnlyMount mounts a tmpfs on a fresh directory, lets fill write into it, then remounts it
// read-only, as a Kubernetes secret volume is. It skips the test when it cannot mount.
func readOnlyMount(t *testing.T, fill func(dir string)) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a read-only tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "secret-volume")
	require.NoError(t, os.Mkdir(dir, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "mode=1777,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	fill(dir)
	out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput()
	require.NoError(t, err, string(out))
	return dir
}

// kubernetesSecret lays files out as the kubelet does: the data in a timestamped directory,
// ..data pointing at it, and each key a symlink through ..data, all mode 0644 and owned by root.
func kubernetesSecret(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	data := filepath.Join(dir, "..2026_12_01_00_00_00.000000001")
	require.NoError(t, os.Mkdir(data, 0o755))
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(data, name), []byte(content), 0o644))
		require.NoError(t, os.Chmod(filepath.Join(data, name), 0o644))
		require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)))
	}
	require.NoError(t, os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")))
}

func TestKubernetesSecretVolumeAccepted(t *testing.T) {
	t.Parallel()
	store := `{"ce_credentials":{"datasync":{"client_id":"k8s-client","client_secret":"` + testSecret + `"}}}`
	dir := readOnlyMount(t, func(dir string) {
		kubernetesSecret(t, dir, map[string]string{"client-secret": testSecret + "\n", "credentials.json": store})
	})
	fi, err := os.Stat(filepath.Join(dir, "client-secret"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "the file really is readable by others")

	c, ok, err := FromEnv(envOf(map[string]string{EnvClientID: "k8s-client", EnvClientSecretFile: filepath.Join(dir, "client-secret")}))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, testSecret, c.ClientSecret)

	c, err = Load(filepath.Join(dir, "credentials.json"), DefaultMapName, DefaultKeyName)
	require.NoError(t, err)
	assert.Equal(t, "k8s-client", c.ClientID)
}

func TestReadOnlyMountOwnedByAnotherUserRefused(t *testing.T) {
	t.Parallel()
	dir := readOnlyMount(t, func(dir string) {
		f := filepath.Join(dir, "client-secret")
		require.NoError(t, os.WriteFile(f, []byte(testSecret), 0o644))
		require.NoError(t, os.Chown(f, 65534, 65534))
	})
	_, _, err := FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: filepath.Join(dir, "client-secret")}))
	require.ErrorIs(t, err, ErrInsecurePermissions)
	assert.Contains(t, err.Error(), "owned by uid 65534")
	assert.NotContains(t, err.Error(), testSecret)
}

func TestWritableWideSecretFilesRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "client-secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(testSecret), 0o600))
	require.NoError(t, os.Chmod(secretFile, 0o644))
	_, _, err := FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: secretFile}))
	require.ErrorIs(t, err, ErrInsecurePermissions)
	assert.Contains(t, err.Error(), "CDC_RELAY_CLIENT_SECRET_FILE")
	assert.Contains(t, err.Error(), "has mode 0644")
	assert.Contains(t, err.Error(), "only on a read-only mount owned by root")
	assert.Contains(t, err.Error(), "chmod 600 "+secretFile)
	assert.NotContains(t, err.Error(), testSecret)

	// Through a symlink, as a Kubernetes layout on a writable disk would be: still refused.
	link := filepath.Join(dir, "via-link")
	require.NoError(t, os.Symlink(secretFile, link))
	_, _, err = FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: link}))
	require.ErrorIs(t, err, ErrInsecurePermissions)
}

func TestSecretFileOwnerAndDirectoryChecked(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	t.Run("file owned by another user", func(t *testing.T) {
		t.Parallel()
		f := filepath.Join(t.TempDir(), "client-secret")
		require.NoError(t, os.WriteFile(f, []byte(testSecret), 0o600))
		require.NoError(t, os.Chown(f, 65534, 65534))
		_, _, err := FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: f}))
		require.ErrorIs(t, err, ErrInsecurePermissions)
		assert.Contains(t, err.Error(), "owned by uid 65534, not by this user")
	})
	t.Run("directory writable by others", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "shared")
		require.NoError(t, os.Mkdir(dir, 0o700))
		require.NoError(t, os.Chmod(dir, 0o777))
		f := filepath.Join(dir, "client-secret")
		require.NoError(t, os.WriteFile(f, []byte(testSecret), 0o600))
		_, _, err := FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: f}))
		require.ErrorIs(t, err, ErrInsecurePermissions)
		assert.Contains(t, err.Error(), "has mode 0777, so other users could replace the secret")
	})
	t.Run("store directory owned by another user", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: testSecret}))
		require.NoError(t, os.Chown(filepath.Dir(p), 65534, 65534))
		_, err := Load(p, DefaultMapName, DefaultKeyName)
		require.ErrorIs(t, err, ErrInsecurePermissions)
		assert.Contains(t, err.Error(), "is owned by uid 65534")
		err = Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: testSecret})
		require.ErrorIs(t, err, ErrInsecurePermissions, "Save refuses too")
	})
	t.Run("store directory writable by group", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, Save(p, DefaultMapName, DefaultKeyName, Credential{ClientID: "id", ClientSecret: testSecret}))
		require.NoError(t, os.Chmod(filepath.Dir(p), 0o770))
		_, err := Load(p, DefaultMapName, DefaultKeyName)
		require.ErrorIs(t, err, ErrInsecurePermissions)
		assert.Contains(t, err.Error(), "chmod go-w")
	})
}
