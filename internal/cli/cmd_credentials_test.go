package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
)

const credTestSecret = "cli-secret-do-not-print-42"

// credEnv is an in-process environment with its own config directory.
type credEnv struct {
	Env
	out, errOut *bytes.Buffer
	vars        map[string]string
	path        string
}

func newCredEnv(t *testing.T, stdin string) *credEnv {
	t.Helper()
	home := t.TempDir()
	e := &credEnv{out: &bytes.Buffer{}, errOut: &bytes.Buffer{}, vars: map[string]string{"HOME": home}}
	e.Env = Env{Stdin: strings.NewReader(stdin), Stdout: e.out, Stderr: e.errOut, Getenv: func(k string) string { return e.vars[k] }}
	e.path = filepath.Join(home, ".config", "cdc-relay", "credentials.json")
	return e
}

func (e *credEnv) run(args ...string) int { return Main(args, e.Env) }

func (e *credEnv) assertNoSecretPrinted(t *testing.T) {
	t.Helper()
	assert.NotContains(t, e.out.String(), credTestSecret)
	assert.NotContains(t, e.errOut.String(), credTestSecret)
}

func TestCredentialsSetFromStdinAndShow(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, "  "+credTestSecret+"  \nsecond line ignored\n")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "relay-client"), e.errOut.String())
	assert.Contains(t, e.out.String(), `map "ce_credentials" key "datasync"`)
	e.assertNoSecretPrinted(t)

	c, err := credentials.Load(e.path, credentials.DefaultMapName, credentials.DefaultKeyName)
	require.NoError(t, err)
	assert.Equal(t, credentials.Credential{ClientID: "relay-client", ClientSecret: credTestSecret}, c)
	fi, err := os.Stat(e.path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "show"), e.errOut.String())
	out := e.out.String()
	assert.Contains(t, out, "path: "+e.path)
	assert.Contains(t, out, "map: ce_credentials")
	assert.Contains(t, out, "key: datasync")
	assert.Contains(t, out, "client id: relay-client")
	assert.Contains(t, out, "client secret: set (26 chars)")
	e.assertNoSecretPrinted(t)
}

func TestCredentialsSetFromFileWithMapKeyAndXDG(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, "")
	xdg := t.TempDir()
	e.vars["XDG_CONFIG_HOME"] = xdg
	secretFile := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(credTestSecret+"\n"), 0o600))
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "id2", "--client-secret-file", secretFile,
		"--map", "other_map", "--key", "k1"), e.errOut.String())
	want := filepath.Join(xdg, "cdc-relay", "credentials.json")
	c, err := credentials.Load(want, "other_map", "k1")
	require.NoError(t, err)
	assert.Equal(t, credTestSecret, c.ClientSecret)

	custom := filepath.Join(t.TempDir(), "elsewhere.json")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "id3", "--client-secret-file", secretFile, "--path", custom), e.errOut.String())
	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "show", "--path", custom), e.errOut.String())
	assert.Contains(t, e.out.String(), "client id: id3")
	e.assertNoSecretPrinted(t)
}

func TestCredentialsShowPrefersEnvironment(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, "")
	e.vars[credentials.EnvClientID] = "env-id"
	e.vars[credentials.EnvClientSecret] = credTestSecret
	require.Equal(t, 0, e.run("credentials", "show"), e.errOut.String())
	assert.Contains(t, e.out.String(), "source: environment")
	assert.Contains(t, e.out.String(), "client id: env-id")
	e.assertNoSecretPrinted(t)
}

func TestCredentialsErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no subcommand", "", []string{"credentials"}, 2, "missing subcommand"},
		{"unknown subcommand", "", []string{"credentials", "rotate"}, 2, `unknown subcommand "rotate"`},
		{"no client id", credTestSecret, []string{"credentials", "set"}, 2, "--client-id is required"},
		{"empty stdin", "\n", []string{"credentials", "set", "--client-id", "x"}, 2, "no client secret on stdin"},
		{"missing secret file", "", []string{"credentials", "set", "--client-id", "x", "--client-secret-file", "/nonexistent/secret"}, 1, "reading --client-secret-file"},
		{"stray argument", "", []string{"credentials", "show", "extra"}, 2, "unexpected arguments"},
		{"bad flag", "", []string{"credentials", "set", "--nope"}, 2, "flag provided but not defined"},
		{"bad map name", credTestSecret, []string{"credentials", "set", "--client-id", "x", "--map", "a b"}, 1, "invalid credential map name"},
		{"show without a store", "", []string{"credentials", "show"}, 1, "run cdc-relay credentials set"},
		{"unreachable database", credTestSecret, []string{"credentials", "set", "--client-id", "x", "--database-url", "postgres://u@127.0.0.1:1/db?connect_timeout=5"}, 1, "or pass --map and --key"},
		{"show with unreachable database", "", []string{"credentials", "show", "--database-url", "postgres://u@127.0.0.1:1/db?connect_timeout=5"}, 1, "or pass --map and --key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newCredEnv(t, tc.stdin)
			assert.Equal(t, tc.code, e.run(tc.args...))
			assert.Contains(t, e.errOut.String(), tc.want)
			e.assertNoSecretPrinted(t)
		})
	}
}

func TestCredentialsSetRefusesInsecureStore(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, credTestSecret+"\n")
	require.NoError(t, credentials.Save(e.path, "ce_credentials", "datasync", credentials.Credential{ClientID: "a", ClientSecret: "b"}))
	require.NoError(t, os.Chmod(e.path, 0o644))
	assert.Equal(t, 1, e.run("credentials", "set", "--client-id", "x"))
	assert.Contains(t, e.errOut.String(), "chmod 600 "+e.path)
	e.errOut.Reset()
	assert.Equal(t, 1, e.run("credentials", "show"))
	assert.Contains(t, e.errOut.String(), "chmod 600 "+e.path)
}

func TestCredentialsHelp(t *testing.T) {
	t.Parallel()
	e := newCredEnv(t, "")
	assert.Equal(t, 0, e.run("credentials", "--help"))
	assert.Contains(t, e.out.String(), "cdc-relay credentials set --client-id ID")
	e.out.Reset()
	assert.Equal(t, 0, e.run("help"))
	assert.Contains(t, e.out.String(), "credentials")
}

// TestCredentialsNamesFromDatabase reads DataSyncCredentialMapName/KeyName from a real server.
func TestCredentialsNamesFromDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { cl.Stop() })
	dbURL := cl.URL("postgres")
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE TABLE data_sync_config (name text PRIMARY KEY, value text);
		INSERT INTO data_sync_config VALUES ('DataSyncCredentialMapName', 'crm_map'),
			('DataSyncCredentialKeyName', 'crm_key'), ('DataSyncApiUrl', NULL)`)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	e := newCredEnv(t, credTestSecret+"\n")
	e.vars["DATABASE_URL"] = dbURL
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "db-id"), e.errOut.String())
	_, err = credentials.Load(e.path, "crm_map", "crm_key")
	require.NoError(t, err)

	// A flag wins over the database for its half.
	e.Stdin = strings.NewReader(credTestSecret + "\n")
	require.Equal(t, 0, e.run("credentials", "set", "--client-id", "db-id2", "--key", "flag_key"), e.errOut.String())
	c, err := credentials.Load(e.path, "crm_map", "flag_key")
	require.NoError(t, err)
	assert.Equal(t, "db-id2", c.ClientID)

	e.out.Reset()
	require.Equal(t, 0, e.run("credentials", "show"), e.errOut.String())
	assert.Contains(t, e.out.String(), "map: crm_map\nkey: crm_key\nclient id: db-id\n")

	// A database without cdc-relay installed.
	other, err := cl.CreateDatabase(ctx, "empty_db", "")
	require.NoError(t, err)
	e.errOut.Reset()
	assert.Equal(t, 1, e.run("credentials", "show", "--database-url", other))
	assert.Contains(t, e.errOut.String(), "run cdc-relay install first?")
	assert.Contains(t, e.errOut.String(), "or pass --map and --key")
	e.assertNoSecretPrinted(t)
}
