package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// RemoteResult is one backlog drain against a receiver across the internet: each request takes
// Latency, and at most MaxInflight are accepted at once (429 beyond; 0 = no cap). The relay runs
// with its default flags. Capacity is what the receiver and this machine allow together: the
// lower of MaxInflight / Latency and the HTTP-only rate of CapacityWorkers senders against the
// same receiver, measured in the same run.
type RemoteResult struct {
	LatencyMS       float64 `json:"latency_ms"`
	HTTP2           bool    `json:"http2"` // the receiver offers HTTP/2
	MaxInflight     int     `json:"max_inflight"`
	Backlog         int     `json:"backlog"`
	RelayRate       float64 `json:"relay_rate"` // messages/s, first to last arrival
	RelaySeconds    float64 `json:"relay_s"`
	HTTPRate        float64 `json:"http_rate"` // HTTP-only, CapacityWorkers in flight
	CapacityWorkers int     `json:"capacity_workers"`
	Capacity        float64 `json:"capacity"`
	Ratio           float64 `json:"ratio"` // relay / capacity
	Requests        int     `json:"requests"`
	Refused         int     `json:"refused"` // answered 429 for exceeding MaxInflight
	PeakRSS         int64   `json:"peak_rss"`
	// MeanInflight and PeakInflight are the receiver's POSTs in flight during the drain, sampled
	// every 50 ms from the first arrival to the last; LimitAtEnd is the relay's concurrency
	// limit as data_sync_leader shows it at the end.
	MeanInflight float64 `json:"mean_inflight"`
	PeakInflight int     `json:"peak_inflight"`
	LimitAtEnd   int     `json:"limit_at_end"`
}

// remoteWorkersUncapped is the HTTP-only baseline's requests in flight against a receiver with
// no in-flight cap: the relay's default --max-concurrency.
const remoteWorkersUncapped = 512

// remote drains a backlog of n rows, one message per POST, against a receiver with the given
// latency and in-flight cap.
func (e *env) remote(ctx context.Context, latency time.Duration, maxInflight int, http2 bool, n int) (RemoteResult, error) {
	res := RemoteResult{LatencyMS: float64(latency) / float64(time.Millisecond), MaxInflight: maxInflight, HTTP2: http2, Backlog: n}
	faults := receiver.Faults{Delay: latency, MaxInflight: maxInflight}
	offer := func(c *receiver.Config) { c.HTTP2 = http2 }
	res.CapacityWorkers = remoteWorkersUncapped
	if maxInflight > 0 {
		res.CapacityWorkers = maxInflight
	}
	rate, err := e.httpBaseline(ctx, n, 1, res.CapacityWorkers, faults, offer)
	if err != nil {
		return res, err
	}
	res.HTTPRate = rate
	res.Capacity = rate
	if maxInflight > 0 {
		res.Capacity = min(rate, float64(maxInflight)/latency.Seconds())
	}
	e.o.logf("  http-only, %d in flight: %.0f messages/s", res.CapacityWorkers, rate)

	_, dbURL, err := e.newDB(ctx, fmt.Sprintf("remote_%d_%d_%v", int(res.LatencyMS), maxInflight, http2))
	if err != nil {
		return res, err
	}
	cnt := newCounter(n, 0)
	r, err := e.newReceiver(cnt.record, offer)
	if err != nil {
		return res, err
	}
	defer r.srv.Close()
	r.srv.SetFaults(faults)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, fmt.Errorf("%w: connecting: %w", ErrBench, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := e.fillBacklog(ctx, conn, 1, n); err != nil {
		return res, err
	}
	if err := enable(ctx, conn, r); err != nil {
		return res, err
	}
	start := time.Now()
	ch, err := e.startRelay(dbURL, r, 1)
	if err != nil {
		return res, err
	}
	defer ch.stop()
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var sum, n int
		for {
			select {
			case <-stopSampling:
				if n > 0 {
					res.MeanInflight = float64(sum) / float64(n)
				}
				return
			case <-tick.C:
				if cnt.n.Load() == 0 {
					continue
				}
				in := r.srv.Inflight()
				sum, n = sum+in, n+1
				res.PeakInflight = max(res.PeakInflight, in)
			}
		}
	}()
	err = waitClosed(ctx, cnt.done, deliverTimeout, ch.exited)
	close(stopSampling)
	<-sampled
	var limit *int
	_ = conn.QueryRow(ctx, `SELECT concurrency_limit FROM data_sync_leader`).Scan(&limit)
	if limit != nil {
		res.LimitAtEnd = *limit
	}
	if err != nil {
		return res, fmt.Errorf("%w: the relay delivered %d of %d messages: %w: %s", ErrBench, cnt.n.Load(), n, err, ch.stderr.Tail(2000))
	}
	res.RelaySeconds = time.Since(start).Seconds()
	res.RelayRate = cnt.rate()
	if res.PeakRSS, _, err = ch.memory(); err != nil {
		return res, err
	}
	if err := ch.stop(); err != nil {
		return res, err
	}
	st := r.srv.Stats()
	res.Requests, res.Refused = st.Requests, st.OverInflight
	if res.Capacity > 0 {
		res.Ratio = res.RelayRate / res.Capacity
	}
	e.o.logf("  relay: %d messages in %.2f s, %.0f messages/s (%.2f of capacity), %d of %d requests refused; in flight at the receiver %.0f on average, %d at most; limit at the end %d",
		n, res.RelaySeconds, res.RelayRate, res.Ratio, res.Refused, res.Requests, res.MeanInflight, res.PeakInflight, res.LimitAtEnd)
	return res, nil
}
