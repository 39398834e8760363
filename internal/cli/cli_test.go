package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/sender"
	"github.com/cdc-relay/cdc-relay/relay"
)

// TestDatabasePasswordNeverPrinted runs every subcommand that takes --database-url with -h and
// with a mistyped flag, DATABASE_URL carrying a password: usage lists each flag's default, and
// the password must not be among them.
func TestDatabasePasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	const password = "pw-never-print-7f3a"
	dbURL := "postgres://ce_owner:" + password + "@db.example:5432/ce"
	getenv := func(k string) string {
		if k == "DATABASE_URL" {
			return dbURL
		}
		return ""
	}
	require.Contains(t, commands, "run")
	require.Contains(t, commands, "status")
	var cases [][]string
	for name := range commands {
		cases = append(cases, []string{name, "-h"}, []string{name, "--no-such-flag"}, []string{name, "--database-urll", "x"})
	}
	for _, sub := range []string{"set", "show"} {
		cases = append(cases, []string{"credentials", sub, "-h"}, []string{"credentials", sub, "--no-such-flag"})
	}
	for _, args := range cases {
		var out, errOut bytes.Buffer
		code := Main(args, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: getenv})
		printed := out.String() + errOut.String()
		assert.NotContains(t, printed, password, "cdc-relay %s printed the database password", strings.Join(args, " "))
		if args[len(args)-1] == "-h" {
			assert.Equal(t, 0, code, "%v", args)
		} else {
			assert.Equal(t, 2, code, "%v", args)
		}
		if strings.Contains(printed, "  -database-url URL\n") {
			assert.Contains(t, printed, "(default $DATABASE_URL)", "%v", args)
		}
	}
}

// TestDatabaseURLFromEnvironmentAfterParsing: without the flag the environment is used, and the
// flag wins over it.
func TestDatabaseURLFromEnvironmentAfterParsing(t *testing.T) {
	t.Parallel()
	env := Env{Stderr: &bytes.Buffer{}, Getenv: func(k string) string {
		if k == "DATABASE_URL" {
			return "postgres://from-env/db"
		}
		return ""
	}}
	fs := newFlagSet(env, "x")
	db := databaseFlag(fs, env)
	require.NoError(t, parse(fs, nil, 0))
	assert.Equal(t, "postgres://from-env/db", *db)
	assert.Equal(t, "", fs.Lookup("database-url").DefValue)

	fs = newFlagSet(env, "x")
	db = databaseFlag(fs, env)
	require.NoError(t, parse(fs, []string{"--database-url", "postgres://from-flag/db"}, 0))
	assert.Equal(t, "postgres://from-flag/db", *db)
}

// TestRunFlagDefaultsAreTheRelayDefaults guards the single source of run's defaults: parsing no
// flags yields exactly relay.Config's defaults and the sender's request timeout.
func TestRunFlagDefaultsAreTheRelayDefaults(t *testing.T) {
	t.Parallel()
	env := Env{Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	fs := newFlagSet(env, "run")
	var cfg daemon.Config
	delivered := relayFlags(fs, &cfg)
	require.NoError(t, parse(fs, nil, 0))
	var err error
	cfg.Relay.Delivered, err = parseStatuses(*delivered)
	require.NoError(t, err)
	want := relay.Config{}.WithDefaults()
	got := cfg.Relay.WithDefaults()
	want.Logger, got.Logger = nil, nil
	assert.Equal(t, want, got)
	assert.Equal(t, sender.DefaultRequestTimeout, cfg.RequestTimeout)
}
