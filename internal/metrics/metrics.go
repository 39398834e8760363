// Package metrics defines every Prometheus metric cdc-relay exports, in one place, so names and
// labels stay consistent between the relay, the sender and the replication listener.
package metrics

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry is the registry served on the admin address's /metrics.
var Registry = prometheus.NewRegistry()

var (
	// QueueRows is the number of rows per queue table (pending, progress, failed), read when
	// /metrics is scraped, at most once per cache period (status.Gauges).
	QueueRows = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cdc_relay_queue_rows", Help: "Rows per Data Sync queue table.",
	}, []string{"queue"})
	// OldestUndeliveredSeconds is the age of the oldest row in pending or progress.
	OldestUndeliveredSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cdc_relay_oldest_undelivered_seconds", Help: "Age of the oldest undelivered row per object.",
	}, []string{"object"})
	// Deliveries counts delivery attempts by outcome (delivered, retry, dead_letter) and HTTP
	// status ("0" when no response arrived).
	Deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_deliveries_total", Help: "Delivery attempts (requests) by outcome and HTTP status.",
	}, []string{"outcome", "status"})
	// MessagesDelivered counts messages (queue rows) acknowledged by the receiver.
	MessagesDelivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_messages_delivered_total", Help: "Queue rows delivered, by message type.",
	}, []string{"type"})
	// RequestDuration is the duration of each POST to the receiver.
	RequestDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cdc_relay_request_duration_seconds", Help: "Duration of POSTs to the receiver.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	// CommitToDelivery is the time from a row's creation (its transaction's start) to the
	// receiver's 200.
	CommitToDelivery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cdc_relay_commit_to_delivery_seconds", Help: "Time from queue row creation to receiver acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20),
	})
	// Retries counts rows scheduled for another attempt.
	Retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cdc_relay_retries_total", Help: "Rows scheduled for another delivery attempt.",
	})
	// DeadLetters counts rows moved to a dead-letter table, by reason (failed, held).
	DeadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_dead_letters_total", Help: "Rows moved to a dead-letter table, by reason.",
	}, []string{"reason"})
	// Coalesced counts messages saved by coalescing a customer's pending updates.
	Coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cdc_relay_coalesced_messages_total", Help: "Messages saved by coalescing updates of one customer.",
	})
	// TokenFetches counts OAuth2 token requests by result (ok, error).
	TokenFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_token_fetches_total", Help: "OAuth2 client-credentials token requests by result.",
	}, []string{"result"})
	// WakeUps counts relay wake-ups by source (replication, sweep, retry, config, start).
	WakeUps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_wakeups_total", Help: "Relay wake-ups by source.",
	}, []string{"source"})
	// SlotLagBytes is the WAL retained by the relay's replication slot.
	SlotLagBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdc_relay_slot_lag_bytes", Help: "WAL bytes between the server's current position and the slot's confirmed position.",
	})
	// Concurrency is the current limit on requests in flight (adaptive).
	Concurrency = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdc_relay_concurrency_limit", Help: "Current limit on requests in flight.",
	})
	// DBQueries counts the statements the relay sends to the database, by who asked: "relay"
	// (delivery on the relay's pool: moves, acknowledgements, settings, sweeps) or "scrape" (the
	// queue gauges read for /metrics on their own connection, at most once per cache period).
	// It shows what an idle relay costs the database.
	DBQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_db_queries_total", Help: "Statements sent to the database, by who asked (relay: the relay's pool; scrape: the /metrics queue gauges).",
	}, []string{"by"})
	// ReplicationMessages counts the messages the replication doorbell received, by kind
	// (keepalive, data). The walsender sends a keepalive whenever it has read WAL past what the
	// relay confirmed, also WAL of other databases of the cluster, so this shows what an idle
	// relay receives while the cluster is busy elsewhere.
	ReplicationMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_replication_messages_total", Help: "Messages received on the replication doorbell, by kind (keepalive, data).",
	}, []string{"kind"})
	// ResyncRemaining is what the active resync request has still to queue: its estimate minus
	// the keys handled so far (0 when no request is active).
	ResyncRemaining = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdc_relay_resync_remaining_rows", Help: "Keys the active resync request has still to queue (estimate).",
	})
	// ResyncQueued counts the rows resync requests queued (delivered like any other row).
	ResyncQueued = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cdc_relay_resync_rows_queued_total", Help: "Pending rows queued by resync requests.",
	})
	// EndpointFailing is 1 while the receiver's endpoint fails as a whole (many distinct
	// records in a row failed the same way): delivery is paused and probed, nothing is
	// dead-lettered. The relay's state and data_sync_leader.endpoint_error say how it fails.
	EndpointFailing = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdc_relay_endpoint_failing", Help: "1 while the receiver's endpoint fails as a whole (delivery paused and probed).",
	})
	// ReplicationConnected is 1 while the replication doorbell is streaming.
	ReplicationConnected = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdc_relay_replication_connected", Help: "1 while the replication wake-up stream is connected.",
	})
)

// Relay lists cdc-relay's own metrics (those named cdc_relay_*), all registered in Registry.
var Relay = []prometheus.Collector{QueueRows, OldestUndeliveredSeconds, Deliveries, MessagesDelivered,
	RequestDuration, CommitToDelivery, Retries, DeadLetters, Coalesced, TokenFetches, WakeUps,
	SlotLagBytes, Concurrency, DBQueries, ReplicationMessages, ReplicationConnected, ResyncRemaining, ResyncQueued,
	EndpointFailing}

func init() {
	Registry.MustRegister(Relay...)
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

type queryByKey struct{}

// ForScrape marks ctx so the statements run under it count as by="scrape" in DBQueries.
func ForScrape(ctx context.Context) context.Context {
	return context.WithValue(ctx, queryByKey{}, "scrape")
}

// QueryCounter is a pgx QueryTracer that counts every statement in DBQueries; the daemon sets
// it on its pool and status.Gauges on its connection.
type QueryCounter struct{}

// TraceQueryStart counts one statement.
func (QueryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	by, _ := ctx.Value(queryByKey{}).(string)
	if by == "" {
		by = "relay"
	}
	DBQueries.WithLabelValues(by).Inc()
	return ctx
}

// TraceQueryEnd does nothing.
func (QueryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
