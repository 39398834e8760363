package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/pgtest"
	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/relay"
)

// benchEnv prepares a template database on the test server.
func benchEnv(b *testing.B) *env {
	b.Helper()
	o, err := Options{AdminURL: pgtest.AdminURL(), Sizes: Sizes{Customers: 10, SingleBacklog: 1}}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	e, err := newEnv(context.Background(), o, pgtest.AdminURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	return e
}

// BenchmarkMoveAck measures the relay's database cycle: move 1,000 pending rows to progress
// (MoveSQL) and acknowledge them (AckSQL). One op is one row.
func BenchmarkMoveAck(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	_, dbURL, err := e.newDB(ctx, "moveack")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := e.fillBacklog(ctx, conn, 1, b.N); err != nil {
		b.Fatal(err)
	}
	pool := pgtest.Pool(b, dbURL)
	b.ResetTimer()
	n, _, err := DrainSQL(ctx, pool, 1000, 4000)
	if err != nil {
		b.Fatal(err)
	}
	if n != b.N {
		b.Fatalf("moved %d of %d rows", n, b.N)
	}
}

// BenchmarkRelayDrain drains b.N queued customer changes with the whole relay in-process
// (daemon.Run, 100 messages per POST, concurrency 16) to the reference receiver. One op is one
// message; run with -cpuprofile to see where the relay spends its time.
func BenchmarkRelayDrain(b *testing.B) {
	e := benchEnv(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, dbURL, err := e.newDB(ctx, "drain")
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	r, err := e.newReceiver(func(rec receiver.Received) {
		if !rec.Sample && got.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer r.srv.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := e.fillBacklog(ctx, conn, 1, b.N); err != nil {
		b.Fatal(err)
	}
	if err := enable(ctx, conn, r); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- daemon.Run(rctx, daemon.Config{DatabaseURL: dbURL,
			Relay:  relay.Config{Concurrency: 16, MessagesPerRequest: 100},
			CAFile: r.caFile, CredentialsPath: r.credsFile, AdminAddr: "off", Getenv: func(string) string { return "" }})
	}()
	select {
	case <-done:
	case err := <-errc:
		b.Fatalf("relay stopped: %v", err)
	case <-ctx.Done():
		b.Fatalf("delivered %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	stop()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
