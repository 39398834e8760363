// Package pgtest gives every test its own real PostgreSQL database.
//
// A test package calls Main from TestMain. The first test that asks for a database starts one
// throwaway cluster with wal_level=logical (or uses TEST_DATABASE_URL, a superuser URL of an
// existing server) and installs cdc-relay into a template database once; Main stops and removes
// them after the tests. NewDB then clones that template in milliseconds, so tests can run in
// parallel without sharing state. A run that needs no database (a fuzzer's workers, a -run
// that selects only pure tests) starts nothing.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdc-relay/cdc-relay/internal/pgcluster"
	"github.com/cdc-relay/cdc-relay/internal/schema"
)

var (
	setupOnce sync.Once
	setupErr  error
	adminURL  string             // superuser URL of the "postgres" database
	cluster   *pgcluster.Cluster // nil when TEST_DATABASE_URL is used
	template  string             // installed template database ("" until set up)
	counter   atomic.Int64
)

// Main runs the package's tests against a throwaway cluster and exits.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	code := m.Run()
	if template != "" {
		dropDatabase(context.Background(), template)
	}
	if cluster != nil {
		cluster.Stop()
	}
	return code
}

// setup starts the server and installs the template, once; every later call returns the
// first one's error.
func setup() error {
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			adminURL = u
		} else {
			c, err := pgcluster.Start(ctx, pgcluster.Options{})
			if err != nil {
				setupErr = fmt.Errorf("starting PostgreSQL: %w", err)
				return
			}
			cluster = c
			adminURL = c.URL("postgres")
		}
		name := fmt.Sprintf("cdc_tmpl_%d", os.Getpid())
		if err := createTemplate(ctx, name); err != nil {
			setupErr = fmt.Errorf("preparing template database: %w", err)
			return
		}
		template = name
	})
	return setupErr
}

// mustSetup is setup for the accessors without a test at hand.
func mustSetup() {
	if err := setup(); err != nil {
		panic("pgtest: " + err.Error())
	}
}

func createTemplate(ctx context.Context, name string) error {
	u, err := createDatabase(ctx, name, "")
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = schema.Install(ctx, conn, schema.Options{})
	return err
}

// Cluster returns the throwaway cluster, or nil when TEST_DATABASE_URL is in use (tests that
// must stop or restart the server check for nil).
func Cluster() *pgcluster.Cluster {
	mustSetup()
	return cluster
}

// AdminURL returns the superuser URL of the server's "postgres" database.
func AdminURL() string {
	mustSetup()
	return adminURL
}

// NewDB returns the URL of a new database with cdc-relay installed (Data Sync disabled, as
// after a fresh install). It is dropped when the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	if err := setup(); err != nil { // template is known only after set-up
		t.Fatalf("pgtest: %v", err)
	}
	return newDB(t, template)
}

// NewEmptyDB returns the URL of a new, empty database, dropped when the test ends.
func NewEmptyDB(t testing.TB) string {
	t.Helper()
	return newDB(t, "")
}

func newDB(t testing.TB, tmpl string) string {
	t.Helper()
	if err := setup(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("t_%d_%d_%s", os.Getpid(), counter.Add(1), sanitize(t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	u, err := createDatabase(ctx, name, tmpl)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { dropDatabase(context.Background(), name) })
	return u
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("pgtest: opening pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Exec runs statements on url, failing the test on error.
func Exec(t testing.TB, url string, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func withDatabase(base, db string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + db
	return u.String(), nil
}

func createDatabase(ctx context.Context, name, tmpl string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connecting as admin: %w", err)
	}
	defer conn.Close(ctx)
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if tmpl != "" {
		sql += " TEMPLATE " + pgx.Identifier{tmpl}.Sanitize()
	}
	// A template in use by another CREATE DATABASE is briefly busy; retry.
	for i := 0; ; i++ {
		_, err = conn.Exec(ctx, sql)
		if err == nil || i > 50 || !strings.Contains(err.Error(), "is being accessed by other users") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return withDatabase(adminURL, name)
}

func dropDatabase(ctx context.Context, name string) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}
