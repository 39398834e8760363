package metrics_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

// TestNewSharesWakeUps: the relay and the doorbell count wake-ups in one metric.
func TestNewSharesWakeUps(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Relay.WakeUps.WithLabelValues("sweep").Inc()
	m.Doorbell.WakeUps.WithLabelValues("replication").Inc()
	n, err := testutil.GatherAndCount(reg, "cdc_relay_wakeups_total")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Same(t, m.Relay.WakeUps, m.Doorbell.WakeUps)
}

// TestNewAgainOnOneRegistry: registering again on a registry (a daemon run again, a sender per
// settings version) gives the collectors registered first, not an error.
func TestNewAgainOnOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	first := metrics.New(reg)
	again := metrics.New(reg)
	assert.Same(t, first.Relay.Deliveries, again.Relay.Deliveries)
	assert.Same(t, first.Sender.RequestDuration, again.Sender.RequestDuration)
	again.Relay.Retries.Add(2)
	assert.Equal(t, 2.0, testutil.ToFloat64(first.Relay.Retries))
}

// TestPrivateRegistries: instruments built without a registry work, and two such sets are
// independent (tests in parallel read their own).
func TestPrivateRegistries(t *testing.T) {
	t.Parallel()
	a, b := metrics.NewRelay(nil), metrics.NewRelay(nil)
	a.Coalesced.Add(3)
	assert.Equal(t, 3.0, testutil.ToFloat64(a.Coalesced))
	assert.Equal(t, 0.0, testutil.ToFloat64(b.Coalesced))
}

// TestQueryCounterBy: statements count as "relay" unless run under ForScrape.
func TestQueryCounterBy(t *testing.T) {
	t.Parallel()
	q := metrics.NewQueryCounter(nil)
	q.TraceQueryStart(context.Background(), nil, pgx.TraceQueryStartData{})
	q.TraceQueryStart(metrics.ForScrape(context.Background()), nil, pgx.TraceQueryStartData{})
	q.TraceQueryStart(metrics.ForScrape(context.Background()), nil, pgx.TraceQueryStartData{})
	// Each statement of a batch counts (the relay sends a ring's wait and move as one).
	ctx := q.TraceBatchStart(context.Background(), nil, pgx.TraceBatchStartData{})
	q.TraceBatchQuery(ctx, nil, pgx.TraceBatchQueryData{})
	q.TraceBatchQuery(ctx, nil, pgx.TraceBatchQueryData{})
	q.TraceBatchEnd(ctx, nil, pgx.TraceBatchEndData{})
	assert.Equal(t, 3.0, testutil.ToFloat64(q.Counter.WithLabelValues("relay")))
	assert.Equal(t, 2.0, testutil.ToFloat64(q.Counter.WithLabelValues("scrape")))
}
