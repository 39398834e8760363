// Package metrics defines every Prometheus metric cdc-relay exports, in one place, so names and
// labels stay consistent between the relay, the sender and the replication listener.
//
// Nothing here is global: each part gets its instruments through its Config (relay.Config,
// cdc.Config, sender.Config, status.GaugesConfig) from a constructor that registers them on a
// given registry. The daemon builds them all with New on the registry its admin address serves
// on /metrics; a part given none builds its own on a registry of its own, which nothing serves
// (tests and the commands that serve no metrics).
package metrics

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry holding the Go runtime and process collectors: what the
// daemon serves on /metrics, with New's metrics registered on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Set is every metric of cdc-relay's own (those named cdc_relay_*), registered on one registry.
type Set struct {
	Relay    *Relay
	Doorbell *Doorbell
	Sender   *Sender
	Queue    *Queue
	Queries  *QueryCounter
}

// New registers every cdc-relay metric on reg (nil: a registry of its own) and returns them. The
// relay's and the doorbell's wake-up counter is one metric, shared. Metrics already registered
// on reg (an earlier New) are returned instead of new ones.
func New(reg prometheus.Registerer) *Set {
	reg = orPrivate(reg)
	return &Set{Relay: NewRelay(reg), Doorbell: NewDoorbell(reg), Sender: NewSender(reg), Queue: NewQueue(reg),
		Queries: NewQueryCounter(reg)}
}

// orPrivate returns reg, or a new registry when reg is nil.
func orPrivate(reg prometheus.Registerer) prometheus.Registerer {
	if reg == nil {
		return prometheus.NewRegistry()
	}
	return reg
}

// register registers c on reg and returns it or, when reg already holds the same metric, the
// collector registered first: constructors sharing a metric (the wake-ups of the relay and the
// doorbell), or called again on the same registry (a sender per settings version, a daemon run
// again), then count in the same series instead of failing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("registering a cdc-relay metric: %v", err))
}

// The wake-up counter is written by the relay (start, sweep, retry) and the doorbell
// (replication, config).
func newWakeUps(reg prometheus.Registerer) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_wakeups_total", Help: "Relay wake-ups by source.",
	}, []string{"source"}))
}

// Relay is the delivery daemon's instruments (relay.Config.Metrics).
type Relay struct {
	// Deliveries counts delivery attempts by outcome (delivered, retry, dead_letter) and HTTP
	// status ("0" when no response arrived).
	Deliveries *prometheus.CounterVec
	// MessagesDelivered counts messages (queue rows) acknowledged by the receiver.
	MessagesDelivered *prometheus.CounterVec
	// CommitToDelivery is the time from a row's creation (its transaction's start) to the
	// receiver's 200.
	CommitToDelivery prometheus.Histogram
	// Retries counts rows scheduled for another attempt.
	Retries prometheus.Counter
	// DeadLetters counts rows moved to a dead-letter table, by reason (failed, held).
	DeadLetters *prometheus.CounterVec
	// Coalesced counts messages saved by coalescing a customer's pending updates.
	Coalesced prometheus.Counter
	// WakeUps counts relay wake-ups by source (replication, sweep, retry, config, start).
	WakeUps *prometheus.CounterVec
	// Concurrency is the current limit on requests in flight (adaptive).
	Concurrency prometheus.Gauge
	// ResyncRemaining is what the active resync request has still to queue: its estimate minus
	// the keys handled so far (0 when no request is active).
	ResyncRemaining prometheus.Gauge
	// ResyncQueued counts the rows resync requests queued (delivered like any other row).
	ResyncQueued prometheus.Counter
	// EndpointFailing is 1 while the receiver's endpoint fails as a whole (many distinct
	// records in a row failed the same way): delivery is paused and probed, nothing is
	// dead-lettered. The relay's state and data_sync_leader.endpoint_error say how it fails.
	EndpointFailing prometheus.Gauge
}

// NewRelay registers the relay's metrics on reg (nil: a registry of its own).
func NewRelay(reg prometheus.Registerer) *Relay {
	reg = orPrivate(reg)
	return &Relay{
		Deliveries: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdc_relay_deliveries_total", Help: "Delivery attempts (requests) by outcome and HTTP status.",
		}, []string{"outcome", "status"})),
		MessagesDelivered: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdc_relay_messages_delivered_total", Help: "Queue rows delivered, by message type.",
		}, []string{"type"})),
		CommitToDelivery: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cdc_relay_commit_to_delivery_seconds", Help: "Time from queue row creation to receiver acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20),
		})),
		Retries: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdc_relay_retries_total", Help: "Rows scheduled for another delivery attempt.",
		})),
		DeadLetters: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdc_relay_dead_letters_total", Help: "Rows moved to a dead-letter table, by reason.",
		}, []string{"reason"})),
		Coalesced: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdc_relay_coalesced_messages_total", Help: "Messages saved by coalescing updates of one customer.",
		})),
		WakeUps: newWakeUps(reg),
		Concurrency: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdc_relay_concurrency_limit", Help: "Current limit on requests in flight.",
		})),
		ResyncRemaining: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdc_relay_resync_remaining_rows", Help: "Keys the active resync request has still to queue (estimate).",
		})),
		ResyncQueued: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdc_relay_resync_rows_queued_total", Help: "Pending rows queued by resync requests.",
		})),
		EndpointFailing: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdc_relay_endpoint_failing", Help: "1 while the receiver's endpoint fails as a whole (delivery paused and probed).",
		})),
	}
}

// Doorbell is the replication doorbell's instruments (cdc.Config.Metrics).
type Doorbell struct {
	// WakeUps counts the rings that woke the relay, by source (replication, config); the same
	// metric as Relay.WakeUps.
	WakeUps *prometheus.CounterVec
	// ReplicationMessages counts the messages the replication doorbell received, by kind
	// (keepalive, data). The walsender sends a keepalive whenever it has read WAL past what the
	// relay confirmed, also WAL of other databases of the cluster, so this shows what an idle
	// relay receives while the cluster is busy elsewhere.
	ReplicationMessages *prometheus.CounterVec
	// ReplicationConnected is 1 while the replication doorbell is streaming.
	ReplicationConnected prometheus.Gauge
	// SlotLagBytes is the WAL retained by the relay's replication slot.
	SlotLagBytes prometheus.Gauge
}

// NewDoorbell registers the doorbell's metrics on reg (nil: a registry of its own).
func NewDoorbell(reg prometheus.Registerer) *Doorbell {
	reg = orPrivate(reg)
	return &Doorbell{
		WakeUps: newWakeUps(reg),
		ReplicationMessages: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdc_relay_replication_messages_total", Help: "Messages received on the replication doorbell, by kind (keepalive, data).",
		}, []string{"kind"})),
		ReplicationConnected: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdc_relay_replication_connected", Help: "1 while the replication wake-up stream is connected.",
		})),
		SlotLagBytes: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdc_relay_slot_lag_bytes", Help: "WAL bytes between the server's current position and the slot's confirmed position.",
		})),
	}
}

// Sender is the HTTP sender's and its token source's instruments (sender.Config.Metrics).
type Sender struct {
	// RequestDuration is the duration of each POST to the receiver (a resend after a 401 is a
	// POST of its own; a token request is none).
	RequestDuration prometheus.Histogram
	// TokenFetches counts OAuth2 token requests by result (ok, error).
	TokenFetches *prometheus.CounterVec
}

// NewSender registers the sender's metrics on reg (nil: a registry of its own).
func NewSender(reg prometheus.Registerer) *Sender {
	reg = orPrivate(reg)
	return &Sender{
		RequestDuration: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cdc_relay_request_duration_seconds", Help: "Duration of POSTs to the receiver.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		})),
		TokenFetches: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdc_relay_token_fetches_total", Help: "OAuth2 client-credentials token requests by result.",
		}, []string{"result"})),
	}
}

// Queue is the queue gauges read when /metrics is scraped, at most once per cache period
// (status.Gauges, status.GaugesConfig.Metrics).
type Queue struct {
	// Rows is the number of rows per queue table (pending, progress, failed).
	Rows *prometheus.GaugeVec
	// OldestUndeliveredSeconds is the age of the oldest row in pending or progress.
	OldestUndeliveredSeconds *prometheus.GaugeVec
}

// NewQueue registers the queue gauges on reg (nil: a registry of its own).
func NewQueue(reg prometheus.Registerer) *Queue {
	reg = orPrivate(reg)
	return &Queue{
		Rows: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdc_relay_queue_rows", Help: "Rows per Data Sync queue table.",
		}, []string{"queue"})),
		OldestUndeliveredSeconds: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdc_relay_oldest_undelivered_seconds", Help: "Age of the oldest undelivered row per object.",
		}, []string{"object"})),
	}
}

type queryByKey struct{}

// ForScrape marks ctx so the statements run under it count as by="scrape" in a QueryCounter.
func ForScrape(ctx context.Context) context.Context {
	return context.WithValue(ctx, queryByKey{}, "scrape")
}

// QueryCounter is a pgx QueryTracer that counts every statement; the daemon sets it on its pool
// and on status.Gauges' connection.
type QueryCounter struct {
	// Counter counts the statements the relay sends to the database, by who asked: "relay"
	// (delivery on the relay's pool: moves, acknowledgements, settings, sweeps) or "scrape"
	// (the queue gauges read for /metrics on their own connection, at most once per cache
	// period). It shows what an idle relay costs the database.
	Counter *prometheus.CounterVec
}

// NewQueryCounter registers the statement counter on reg (nil: a registry of its own).
func NewQueryCounter(reg prometheus.Registerer) *QueryCounter {
	return &QueryCounter{Counter: register(orPrivate(reg), prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdc_relay_db_queries_total", Help: "Statements sent to the database, by who asked (relay: the relay's pool; scrape: the /metrics queue gauges).",
	}, []string{"by"}))}
}

// TraceQueryStart counts one statement.
func (c *QueryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.count(ctx)
	return ctx
}

func (c *QueryCounter) count(ctx context.Context) {
	by, _ := ctx.Value(queryByKey{}).(string)
	if by == "" {
		by = "relay"
	}
	c.Counter.WithLabelValues(by).Inc()
}

// TraceQueryEnd does nothing.
func (*QueryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart does nothing: each statement of a batch counts (TraceBatchQuery).
func (*QueryCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery counts one statement of a batch.
func (c *QueryCounter) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchQueryData) {
	c.count(ctx)
}

// TraceBatchEnd does nothing.
func (*QueryCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
