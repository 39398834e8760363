package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testSecret = "s3cr3t-value-XYZ"

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func storePath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "cfg", "cdc-relay", "credentials.json")
}

func TestDefaultPath(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "/x/cfg/cdc-relay/credentials.json",
		DefaultPath(envOf(map[string]string{"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/home/u"})))
	assert.Equal(t, "/home/u/.config/cdc-relay/credentials.json",
		DefaultPath(envOf(map[string]string{"HOME": "/home/u"})))
	assert.Equal(t, "/home/u/.config/cdc-relay/credentials.json",
		DefaultPath(envOf(map[string]string{"XDG_CONFIG_HOME": "relative", "HOME": "/home/u"})), "relative XDG_CONFIG_HOME is ignored")
}

func TestSaveLoadRoundTripKeepsOtherEntries(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	require.NoError(t, Save(p, "ce_credentials", "datasync", Credential{ClientID: "id-1", ClientSecret: testSecret}))
	require.NoError(t, Save(p, "ce_credentials", "other", Credential{ClientID: "id-2", ClientSecret: "sec-2"}))
	require.NoError(t, Save(p, "second_map", "datasync", Credential{ClientID: "id-3", ClientSecret: "sec-3"}))
	require.NoError(t, Save(p, "ce_credentials", "datasync", Credential{ClientID: "id-1b", ClientSecret: testSecret + "b"}))

	c, err := Load(p, "ce_credentials", "datasync")
	require.NoError(t, err)
	assert.Equal(t, Credential{ClientID: "id-1b", ClientSecret: testSecret + "b"}, c)
	c, err = Load(p, "ce_credentials", "other")
	require.NoError(t, err)
	assert.Equal(t, Credential{ClientID: "id-2", ClientSecret: "sec-2"}, c)
	c, err = Load(p, "second_map", "datasync")
	require.NoError(t, err)
	assert.Equal(t, Credential{ClientID: "id-3", ClientSecret: "sec-3"}, c)

	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(p))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), di.Mode().Perm())

	// No temporary files left behind.
	entries, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasSuffix(e.Name(), ".tmp"), "leftover %s", e.Name())
	}
}

func TestSaveConcurrentKeepsAll(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			assert.NoError(t, Save(p, "m", fmt.Sprintf("k%d", i), Credential{ClientID: "id", ClientSecret: "sec"}))
		})
	}
	wg.Wait()
	for i := range 16 {
		_, err := Load(p, "m", fmt.Sprintf("k%d", i))
		assert.NoError(t, err)
	}
}

func TestSaveRefusesIncomplete(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	for _, c := range []Credential{{ClientID: "", ClientSecret: "x"}, {ClientID: "x", ClientSecret: ""}, {ClientID: " ", ClientSecret: "x"}, {ClientID: "x", ClientSecret: "  "}} {
		err := Save(p, "m", "k", c)
		require.ErrorIs(t, err, ErrIncomplete)
	}
	_, err := os.Stat(p)
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing written")
}

func TestSaveRefusesBadNames(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	require.ErrorIs(t, Save(p, "", "k", Credential{ClientID: "a", ClientSecret: "b"}), ErrIncomplete)
	err := Save(p, "m", "bad key/..", Credential{ClientID: "a", ClientSecret: "b"})
	require.ErrorIs(t, err, ErrIncomplete)
	assert.Contains(t, err.Error(), "letters, digits")
}

func TestSaveRefusesInsecureOrCorruptExisting(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	require.NoError(t, Save(p, "m", "k", Credential{ClientID: "a", ClientSecret: testSecret}))
	require.NoError(t, os.Chmod(p, 0o644))
	err := Save(p, "m", "k2", Credential{ClientID: "b", ClientSecret: "c"})
	require.ErrorIs(t, err, ErrInsecurePermissions)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "insecure file left untouched for the admin to inspect")

	p2 := storePath(t)
	require.NoError(t, os.MkdirAll(filepath.Dir(p2), 0o700))
	require.NoError(t, os.WriteFile(p2, []byte("{not json"), 0o600))
	require.ErrorIs(t, Save(p2, "m", "k", Credential{ClientID: "a", ClientSecret: "b"}), ErrCorrupt)
	b, err := os.ReadFile(p2)
	require.NoError(t, err)
	assert.Equal(t, "{not json", string(b))
}

func TestSaveFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o600))
	err := Save(filepath.Join(blocker, "sub", "credentials.json"), "m", "k", Credential{ClientID: "a", ClientSecret: "b"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "creating credential directory")

	// A directory where the lock file belongs.
	d2 := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(d2, ".credentials.lock"), 0o700))
	err = Save(filepath.Join(d2, "credentials.json"), "m", "k", Credential{ClientID: "a", ClientSecret: "b"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "credential lock file")

	// The store path is a directory: not a regular file.
	d3 := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(d3, "credentials.json"), 0o700))
	err = Save(filepath.Join(d3, "credentials.json"), "m", "k", Credential{ClientID: "a", ClientSecret: "b"})
	require.ErrorIs(t, err, ErrCorrupt)
}

func TestWriteAtomicFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	err := writeAtomic(filepath.Join(dir, "missing", "credentials.json"), []byte("{}"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "creating temporary credential file")

	// Renaming a file over a non-empty directory fails; the temporary file is removed.
	target := filepath.Join(dir, "credentials.json")
	require.NoError(t, os.MkdirAll(filepath.Join(target, "x"), 0o700))
	err = writeAtomic(target, []byte("{}"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "replacing credential store")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "temporary file removed")
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		_, err := Load(p, "m", "k")
		require.ErrorIs(t, err, ErrNotFound)
		assert.Contains(t, err.Error(), "run cdc-relay credentials set")
		assert.Contains(t, err.Error(), p)
	})
	t.Run("insecure mode", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, Save(p, "m", "k", Credential{ClientID: "a", ClientSecret: testSecret}))
		for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o601} {
			require.NoError(t, os.Chmod(p, mode))
			_, err := Load(p, "m", "k")
			require.ErrorIs(t, err, ErrInsecurePermissions, "mode %o", mode)
			assert.Contains(t, err.Error(), "chmod 600 "+p)
			assert.NotContains(t, err.Error(), testSecret)
		}
		require.NoError(t, os.Chmod(p, 0o400))
		_, err := Load(p, "m", "k")
		require.NoError(t, err, "owner-only read is fine")
	})
	t.Run("corrupt", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte("{\n  \"m\": {\n    \"k\": {\"client_id\": \"a\", \"client_secret\": \""+testSecret+"\"\n"), 0o600))
		_, err := Load(p, "m", "k")
		require.ErrorIs(t, err, ErrCorrupt)
		assert.Contains(t, err.Error(), p)
		assert.Contains(t, err.Error(), "line 4")
		assert.NotContains(t, err.Error(), testSecret)

		require.NoError(t, os.WriteFile(p, []byte("{\n\"m\": [1]}"), 0o600))
		_, err = Load(p, "m", "k")
		require.ErrorIs(t, err, ErrCorrupt)
		assert.Contains(t, err.Error(), "line 2")

		require.NoError(t, os.WriteFile(p, []byte("  \n"), 0o600))
		_, err = Load(p, "m", "k")
		require.ErrorIs(t, err, ErrCorrupt)
		assert.Contains(t, err.Error(), "empty")
	})
	t.Run("no credential", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, Save(p, "m", "k", Credential{ClientID: "a", ClientSecret: "b"}))
		for _, mk := range [][2]string{{"m", "other"}, {"other_map", "k"}} {
			_, err := Load(p, mk[0], mk[1])
			require.ErrorIs(t, err, ErrNoCredential)
			assert.Contains(t, err.Error(), fmt.Sprintf("--map %s --key %s", mk[0], mk[1]))
		}
	})
	t.Run("incomplete entry", func(t *testing.T) {
		t.Parallel()
		p := storePath(t)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte(`{"m":{"k":{"client_id":"a","client_secret":""}}}`), 0o600))
		_, err := Load(p, "m", "k")
		require.ErrorIs(t, err, ErrIncomplete)
	})
	t.Run("unreadable path", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		blocker := filepath.Join(dir, "file")
		require.NoError(t, os.WriteFile(blocker, nil, 0o600))
		_, err := Load(filepath.Join(blocker, "credentials.json"), "m", "k")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "opening credential store")
	})
}

func TestCredentialRedaction(t *testing.T) {
	t.Parallel()
	c := Credential{ClientID: "client-42", ClientSecret: testSecret}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(f, c)
		assert.NotContains(t, out, testSecret, f)
		assert.Contains(t, out, "client-42", f)
	}
	assert.NotContains(t, c.String(), testSecret)
	assert.NotContains(t, c.GoString(), testSecret)
	assert.NotContains(t, fmt.Sprint(&c), testSecret)
	b, err := json.Marshal(c)
	require.NoError(t, err)
	assert.NotContains(t, string(b), testSecret)
	assert.Contains(t, string(b), "[redacted]")
	assert.Contains(t, Credential{ClientID: "x"}.String(), "unset")

	// The file, of course, holds the secret.
	p := storePath(t)
	require.NoError(t, Save(p, "m", "k", c))
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Contains(t, string(raw), testSecret)
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	c, ok, err := FromEnv(envOf(nil))
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, Credential{}, c)

	c, ok, err = FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecret: testSecret}))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, Credential{ClientID: "id", ClientSecret: testSecret}, c)

	f := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(f, []byte(testSecret+"\n"), 0o400))
	c, ok, err = FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: f}))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, Credential{ClientID: "id", ClientSecret: testSecret}, c)

	for name, env := range map[string]map[string]string{
		"secret without id":      {EnvClientSecret: testSecret},
		"secret file without id": {EnvClientSecretFile: f},
		"id without secret":      {EnvClientID: "id"},
		"both secret sources":    {EnvClientID: "id", EnvClientSecret: testSecret, EnvClientSecretFile: f},
	} {
		_, ok, err := FromEnv(envOf(env))
		require.ErrorIs(t, err, ErrIncomplete, name)
		assert.False(t, ok, name)
		assert.NotContains(t, err.Error(), testSecret, name)
	}

	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o400))
	_, _, err = FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: empty}))
	require.ErrorIs(t, err, ErrIncomplete)

	_, _, err = FromEnv(envOf(map[string]string{EnvClientID: "id", EnvClientSecretFile: filepath.Join(t.TempDir(), "nope")}))
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist))
	assert.Contains(t, err.Error(), EnvClientSecretFile)
}

func TestResolve(t *testing.T) {
	t.Parallel()
	p := storePath(t)
	require.NoError(t, Save(p, "m", "k", Credential{ClientID: "file-id", ClientSecret: "file-secret"}))

	c, src, err := Resolve(envOf(nil), p, "m", "k")
	require.NoError(t, err)
	assert.Equal(t, p, src)
	assert.Equal(t, "file-id", c.ClientID)

	c, src, err = Resolve(envOf(map[string]string{EnvClientID: "env-id", EnvClientSecret: "env-secret"}), p, "m", "k")
	require.NoError(t, err)
	assert.Equal(t, SourceEnvironment, src)
	assert.Equal(t, Credential{ClientID: "env-id", ClientSecret: "env-secret"}, c)

	_, _, err = Resolve(envOf(map[string]string{EnvClientSecret: "env-secret"}), p, "m", "k")
	require.ErrorIs(t, err, ErrIncomplete)

	_, src, err = Resolve(envOf(nil), p, "m", "missing")
	require.ErrorIs(t, err, ErrNoCredential)
	assert.Equal(t, p, src)
}

func TestPosition(t *testing.T) {
	t.Parallel()
	b := []byte("ab\ncd\nef")
	l, c := position(b, 4)
	assert.Equal(t, [2]int{2, 1}, [2]int{l, c}, "json offsets count bytes read, so the 4th byte is line 2 column 1")
	l, c = position(b, 100)
	assert.Equal(t, [2]int{3, 2}, [2]int{l, c})
	l, c = position(b, -1)
	assert.Equal(t, [2]int{1, 1}, [2]int{l, c})
}
