package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/triggerbench"
)

// The resync scenario: `cdc-relay resync customers --all` over ResyncCustomers customers,
// delivered by the relay as a child process (one message per POST, as the single throughput
// run), then the TPS of pgbench's customer_update workload (internal/triggerbench) with the
// relay running, without a resync and during one.

// resyncClients is pgbench's clients for the CE workload (triggerbench's default).
const resyncClients = 4

// ResyncResult is the resync scenario's figures.
type ResyncResult struct {
	Customers    int     `json:"customers"`
	Rate         float64 `json:"rate"`    // messages/s, first to last arrival
	Seconds      float64 `json:"seconds"` // request inserted to the last arrival
	RelayCPU     float64 `json:"relay_cpu_s"`
	PeakRSS      int64   `json:"peak_rss"`    // VmHWM of the child
	RSSMark      int     `json:"rss_mark"`    // rows delivered when RSSAtMark was read
	RSSAtMark    int64   `json:"rss_at_mark"` // VmRSS then
	RSSAtEnd     int64   `json:"rss_at_end"`  // VmRSS when every customer was delivered
	TPSWithout   float64 `json:"tps_without"` // customer_update TPS, relay running, no resync
	TPSDuring    float64 `json:"tps_during"`  // the same during a resync
	TPSRatio     float64 `json:"tps_ratio"`
	TPSSeconds   float64 `json:"tps_s"`         // each pgbench run
	CoveredByRun bool    `json:"covered"`       // the resync was still running when pgbench ended
	ResyncDuring int64   `json:"resync_during"` // keys the resync handled during the pgbench run
}

// resync runs the scenario.
func (e *env) resync(ctx context.Context, n, mark int, tpsFor time.Duration) (ResyncResult, error) {
	res := ResyncResult{Customers: n, TPSSeconds: tpsFor.Seconds()}
	pgbench, err := triggerbench.FindPgbench("")
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrBench, err)
	}
	name, dbURL, err := e.newDB(ctx, "resync")
	if err != nil {
		return res, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Data Sync is disabled in the template: these customers queue nothing.
	if _, err := conn.Exec(ctx, `INSERT INTO customer (customer_id, first_name, last_name)
		SELECT g, 'First' || g, 'Last' || g FROM generate_series($1::int + 1, $2::int) g`, e.o.Sizes.Customers, n); err != nil {
		return res, fmt.Errorf("%w: seeding %d customers: %w", ErrBench, n, err)
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE customer"); err != nil {
		return res, fmt.Errorf("%w: vacuuming: %w", ErrBench, err)
	}
	cnt := newCounter(n, mark)
	r, err := e.newReceiver(cnt.record)
	if err != nil {
		return res, err
	}
	defer r.srv.Close()
	if err := enable(ctx, conn, r); err != nil {
		return res, err
	}
	ch, err := e.startRelay(dbURL, r, 1)
	if err != nil {
		return res, err
	}
	defer ch.stop()
	if err := waitSlot(ctx, dbURL, name, 30*time.Second, ch.exited); err != nil {
		return res, err
	}

	// The resync alone: rate and memory.
	start := time.Now()
	if _, err := conn.Exec(ctx, `INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true)`); err != nil {
		return res, fmt.Errorf("%w: starting the resync: %w", ErrBench, err)
	}
	markDone := make(chan struct{})
	go func() {
		defer close(markDone)
		select {
		case <-cnt.atMark:
			if _, rss, err := ch.memory(); err == nil {
				res.RSSAtMark, res.RSSMark = rss, mark
			}
		case <-cnt.done:
		case <-ch.exited:
		}
	}()
	if err := waitClosed(ctx, cnt.done, deliverTimeout, ch.exited); err != nil {
		<-markDone
		return res, fmt.Errorf("%w: the relay delivered %d of %d resync messages: %w: %s", ErrBench, cnt.n.Load(), n, err, ch.stderr.Tail(2000))
	}
	res.Seconds = time.Since(start).Seconds()
	<-markDone
	res.Rate = cnt.rate()
	if res.PeakRSS, res.RSSAtEnd, err = ch.memory(); err != nil {
		return res, err
	}
	if res.RelayCPU, err = ch.cpu(); err != nil {
		return res, err
	}
	e.o.logf("  resync: %d customers in %.2f s, %.0f messages/s; RSS %s at %d, %s at %d (peak %s)", n, res.Seconds, res.Rate,
		mib(res.RSSAtMark), res.RSSMark, mib(res.RSSAtEnd), n, mib(res.PeakRSS))

	// CE TPS with the relay running: without a resync, then during one.
	script := filepath.Join(e.dir, "resync_customer_update.sql")
	if err := os.WriteFile(script, []byte(triggerbench.Script("customer_update", false, n, 0, resyncClients)), 0o644); err != nil {
		return res, fmt.Errorf("%w: writing the pgbench script: %w", ErrBench, err)
	}
	if res.TPSWithout, err = triggerbench.RunPgbench(ctx, pgbench, dbURL, script, resyncClients, tpsFor); err != nil {
		return res, fmt.Errorf("%w: %w", ErrBench, err)
	}
	var id int64
	if err := conn.QueryRow(ctx, `INSERT INTO data_sync_resync (object, select_all) VALUES ('customer', true) RETURNING id`).Scan(&id); err != nil {
		return res, fmt.Errorf("%w: starting the second resync: %w", ErrBench, err)
	}
	if res.TPSDuring, err = triggerbench.RunPgbench(ctx, pgbench, dbURL, script, resyncClients, tpsFor); err != nil {
		return res, fmt.Errorf("%w: %w", ErrBench, err)
	}
	var state string
	if err := conn.QueryRow(ctx, `UPDATE data_sync_resync r SET state = 'cancelled', finished_at = now()
		FROM (SELECT id, state FROM data_sync_resync WHERE id = $1) old
		WHERE r.id = old.id RETURNING old.state, r.selected`, id).Scan(&state, &res.ResyncDuring); err != nil {
		return res, fmt.Errorf("%w: reading the second resync: %w", ErrBench, err)
	}
	res.CoveredByRun = state == "pending" || state == "running"
	if res.TPSWithout > 0 {
		res.TPSRatio = res.TPSDuring / res.TPSWithout
	}
	e.o.logf("  customer_update TPS: %.0f without a resync, %.0f during one (%.2f; the resync handled %d keys meanwhile)",
		res.TPSWithout, res.TPSDuring, res.TPSRatio, res.ResyncDuring)
	return res, ch.stop()
}

// resyncTargets are the resync scenario's goals: at least half the one-message-per-POST drain
// rate of the same run, the CE workload at 0.8 of its TPS or better, flat memory.
func resyncTargets(r *Report, atLeast func(name string, got, want float64), atMost func(name string, got, want float64, unit string)) {
	s := r.Resync
	if s == nil {
		return
	}
	for _, t := range r.Throughput {
		if t.MessagesPerRequest == 1 && t.RelayRate > 0 {
			atLeast("resync: rate / one-per-POST drain rate", s.Rate/t.RelayRate, 0.5)
		}
	}
	atLeast("resync: customer_update TPS during / without", s.TPSRatio, 0.8)
	if s.RSSAtMark > 0 {
		atMost(fmt.Sprintf("resync: RSS at %d rows / RSS at %d rows", s.Customers, s.RSSMark),
			float64(s.RSSAtEnd)/float64(s.RSSAtMark), 1.2, "x")
	}
}

// writeResync adds the resync scenario's table.
func writeResync(b *strings.Builder, r *Report) {
	s := r.Resync
	if s == nil {
		return
	}
	fmt.Fprintln(b, "\nResync: every customer (relay as a child process, one message per POST); CE TPS = pgbench customer_update")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "customers\tseconds\tmsg/s\trelay CPU s\tpeak RSS\tRSS@mark\tTPS without\tTPS during\tratio\t")
	mark := "-"
	if s.RSSAtMark > 0 {
		mark = fmt.Sprintf("%s @%d, %s @%d", mib(s.RSSAtMark), s.RSSMark, mib(s.RSSAtEnd), s.Customers)
	}
	during := fmt.Sprintf("%.0f", s.TPSDuring)
	if !s.CoveredByRun {
		during += " (resync ended first)"
	}
	fmt.Fprintf(tw, "%d\t%.1f\t%.0f\t%.1f\t%s\t%s\t%.0f\t%s\t%.2f\t\n", s.Customers, s.Seconds, s.Rate, s.RelayCPU,
		mib(s.PeakRSS), mark, s.TPSWithout, during, s.TPSRatio)
	tw.Flush()
}
