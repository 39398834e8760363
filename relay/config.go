package relay

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/cdc-relay/cdc-relay/internal/metrics"
)

// OnFailure values: what a failed delivery blocks.
const (
	// OnFailureKey blocks only the failing record's key (customer or transaction id); everything
	// else keeps flowing. The default.
	OnFailureKey = "key"
	// OnFailureStop pauses the whole job until the failed record's retry is due: the appendix's
	// "the data sync job will fail" behaviour.
	OnFailureStop = "stop"
)

// ErrConfig marks an invalid relay configuration; the daemon stops at start-up with it.
var ErrConfig = errors.New("invalid relay configuration")

// Config tunes the relay. Zero values take the documented defaults (see WithDefaults).
type Config struct {
	// Concurrency fixes the number of requests in flight (429 and 503 still halve it for a
	// while). Default 0: adaptive, starting at 16 and finding the receiver's capacity by itself
	// up to MaxConcurrency (see concurrencyLimit). Records of one key are never in flight twice.
	Concurrency int
	// MaxConcurrency bounds an adaptive limit. Default 512.
	MaxConcurrency int
	// MessagesPerRequest packs up to this many records into one POST. Default 1 (the appendix's
	// one POST per record). A batch succeeds or fails as a whole.
	MessagesPerRequest int
	// MoveBatch is how many pending rows one transaction moves to progress. Default 1000.
	MoveBatch int
	// Window bounds the rows held in memory (and so in progress); the mover waits while it is
	// full, which keeps memory independent of the backlog. Default 4 × MoveBatch.
	Window int
	// WindowBytes bounds the memory of the rows held (payloads and a per-row overhead), besides
	// Window's count of rows: a few huge rows cannot exhaust memory. A move asks for as many
	// rows as fit at the size of the largest row of the previous move (64 KiB before the
	// first), so the window exceeds it by at most what one move brings beyond that estimate.
	// Default 64 MiB.
	WindowBytes int64
	// MaxPayloadBytes is the largest JSON payload (compacted) the relay sends; a row over it is
	// dead-lettered with a reason naming its size and this setting (--max-payload-bytes).
	// Default 16 MiB (a CE customer snapshot is a few KiB; the reference receiver accepts
	// bodies up to 64 MiB).
	MaxPayloadBytes int
	// SweepInterval wakes the relay even without a replication doorbell: the safety net.
	// Default 30s.
	SweepInterval time.Duration
	// OnFailure is OnFailureKey (default) or OnFailureStop.
	OnFailure string
	// SkipDeadLetters lets later records of a key flow past a dead-lettered one. Off by default:
	// they are held behind it in the dead-letter table so per-key order is kept.
	SkipDeadLetters bool
	// MaxAttempts moves a record to the dead-letter table after this many failed attempts of a
	// retryable kind (5xx, 408, 429, network). Default 0: retry for ever (with capped backoff).
	// Attempts made while the endpoint fails as a whole do not count (see EndpointFailureKeys),
	// and an endpoint-wide kind of failure counts against a record only once another request
	// was delivered since the record first failed.
	MaxAttempts int
	// PermanentAttempts is how many attempts a record gets when the receiver answers a
	// non-retryable status (other 4xx, 3xx). Default 3. The same exceptions as MaxAttempts
	// apply to the endpoint-wide kinds (404, 403, 405, 3xx, ...); 400, 409, 413 and 422 always
	// count.
	PermanentAttempts int
	// BackoffMin and BackoffMax bound the exponential retry backoff (with full jitter).
	// Defaults 1s and 5m.
	BackoffMin, BackoffMax time.Duration
	// Delivered lists the HTTP statuses that count as delivered. Default {200}, the appendix.
	Delivered []int
	// RateLimit caps messages per second sent (0, the default, means no fixed cap; 429 and 503
	// still slow the pipeline down adaptively).
	RateLimit float64
	// Coalesce collapses queued UPDATEs of one customer into the latest snapshot before sending.
	Coalesce bool
	// EndpointFailureKeys is how many distinct keys in a row, with nothing delivered in
	// between, must fail the same endpoint-wide way (404, 403, 405, 3xx, 401 after a fresh
	// token, 5xx, 408, 429, no response: TLS, DNS, network, timeout) for the endpoint to count
	// as failing as a whole: delivery then pauses and probes one request at a time with
	// backoff, resumes by itself once a request is delivered, and counts no attempt against
	// MaxAttempts or PermanentAttempts meanwhile. With fewer keys in play the per-record policy
	// applies. Default 5.
	EndpointFailureKeys int
	// ShutdownTimeout bounds how long a stop waits for requests in flight and the last
	// acknowledgements; a stop always ends within it. Default 10s.
	ShutdownTimeout time.Duration
	// LeaderLease is how long the leading relay counts as leader without renewing its lease in
	// data_sync_leader: what a standby waits when the leader's host is cut off from the
	// database (a leader whose session ends is replaced at once). The renewal rides on the moves
	// of each sweep, so it needs to be longer than SweepInterval. Default 2 × SweepInterval,
	// at least 2s (docs/leadership.md).
	LeaderLease time.Duration
	// LeaderGrace is how long a relay that took the leadership over waits before sending, when
	// the previous leader's process may live on, so that it has seen its session end and
	// cancelled its requests. Default 250ms.
	LeaderGrace time.Duration
	// Logger receives structured logs; default zap.NewNop().
	Logger *zap.Logger
	// Metrics are the relay's instruments (the daemon's, served on /metrics). Default (New):
	// instruments of its own that nothing serves.
	Metrics *metrics.Relay
	// Trace, when set, is told of each step of a change's way through the relay (see
	// TraceEvent), on the goroutine that took it: for measurements such as cdc-relay bench's
	// latency breakdown, not for production. It must return at once. Default nil: no tracing.
	Trace func(TraceEvent)
}

// MaxInFlight is the most requests the relay may have in flight: the fixed concurrency, or
// the adaptive limit's bound. Connection pools are sized from it.
func (c Config) MaxInFlight() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return c.MaxConcurrency
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = 512
	}
	if c.MessagesPerRequest == 0 {
		c.MessagesPerRequest = 1
	}
	if c.MoveBatch == 0 {
		c.MoveBatch = 1000
	}
	if c.Window == 0 {
		c.Window = 4 * c.MoveBatch
		if min := 4 * c.Concurrency * c.MessagesPerRequest; c.Window < min { // fixed concurrency only
			c.Window = min
		}
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 64 << 20
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = 16 << 20
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 30 * time.Second
	}
	if c.OnFailure == "" {
		c.OnFailure = OnFailureKey
	}
	if c.PermanentAttempts == 0 {
		c.PermanentAttempts = 3
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if len(c.Delivered) == 0 {
		c.Delivered = []int{200}
	}
	if c.EndpointFailureKeys == 0 {
		c.EndpointFailureKeys = 5
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.LeaderLease == 0 {
		c.LeaderLease = max(2*c.SweepInterval, 2*time.Second)
	}
	if c.LeaderGrace == 0 {
		c.LeaderGrace = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports the first invalid field, naming the flag to fix.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 0 || c.Concurrency > 4096:
		return fmt.Errorf("%w: --concurrency %d: use 0 (adaptive) or 1 to 4096", ErrConfig, c.Concurrency)
	case c.MaxConcurrency < 1 || c.MaxConcurrency > 4096:
		return fmt.Errorf("%w: --max-concurrency %d: use 1 to 4096", ErrConfig, c.MaxConcurrency)
	case c.MessagesPerRequest < 1 || c.MessagesPerRequest > 10000:
		return fmt.Errorf("%w: --messages-per-request %d: use 1 to 10000", ErrConfig, c.MessagesPerRequest)
	case c.MoveBatch < 1 || c.MoveBatch > 100000:
		return fmt.Errorf("%w: --move-batch %d: use 1 to 100000", ErrConfig, c.MoveBatch)
	case c.Window < c.MoveBatch:
		return fmt.Errorf("%w: --window %d is smaller than --move-batch %d", ErrConfig, c.Window, c.MoveBatch)
	case c.MaxPayloadBytes < 1024:
		return fmt.Errorf("%w: --max-payload-bytes %d: use at least 1024", ErrConfig, c.MaxPayloadBytes)
	case c.WindowBytes < int64(c.MaxPayloadBytes)+rowOverhead:
		return fmt.Errorf("%w: --window-bytes %d is smaller than one row of --max-payload-bytes %d: raise it or lower --max-payload-bytes",
			ErrConfig, c.WindowBytes, c.MaxPayloadBytes)
	case c.SweepInterval < 10*time.Millisecond:
		return fmt.Errorf("%w: --sweep-interval %s: use at least 10ms", ErrConfig, c.SweepInterval)
	case c.OnFailure != OnFailureKey && c.OnFailure != OnFailureStop:
		return fmt.Errorf("%w: --on-failure %q: use key or stop", ErrConfig, c.OnFailure)
	case c.MaxAttempts < 0 || c.PermanentAttempts < 1:
		return fmt.Errorf("%w: --max-attempts must be >= 0 and --permanent-attempts >= 1", ErrConfig)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: backoff bounds %s..%s: need 0 < --backoff-min <= --backoff-max", ErrConfig, c.BackoffMin, c.BackoffMax)
	case checkLeaderTimes(c.LeaderLease, c.LeaderGrace) != nil:
		return checkLeaderTimes(c.LeaderLease, c.LeaderGrace)
	case c.EndpointFailureKeys < 2:
		return fmt.Errorf("%w: EndpointFailureKeys %d: use at least 2 (one key failing alone is a record failure)", ErrConfig, c.EndpointFailureKeys)
	case c.RateLimit < 0:
		return fmt.Errorf("%w: --rate-limit %g: use 0 (none) or a positive rate", ErrConfig, c.RateLimit)
	}
	for _, s := range c.Delivered {
		if s < 200 || s > 299 {
			return fmt.Errorf("%w: --delivered-status %d: only 2xx statuses can count as delivered", ErrConfig, s)
		}
	}
	return nil
}
