package relay

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A burst of 429s from distinct keys, as a receiver's cap answers the requests an adaptive limit
// sent over it (at once, while the accepted ones take their latency), does not make the
// endpoint fail as a whole: only a streak of them lasting pressureSpan does. Other endpoint-wide
// failures (a 404 storm) still do at the threshold.
func TestAPressureBurstIsNotAnEndpointFailure(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	h := newEndpointHealth(5)
	for i := range 50 {
		wide, changed := h.failed("k"+strconv.Itoa(i), "HTTP 429", "HTTP 429", true, t0.Add(time.Duration(i)*time.Millisecond))
		require.False(t, wide || changed, "refusal %d of a burst made the endpoint fail", i)
	}
	wide, changed := h.failed("late", "HTTP 429", "HTTP 429", true, t0.Add(pressureSpan))
	require.True(t, wide && changed, "a streak of refusals lasting %s did not", pressureSpan)
	require.True(t, h.delivered(), "a delivery ends it")

	h = newEndpointHealth(5)
	for i := range 5 {
		wide, _ = h.failed("k"+strconv.Itoa(i), "HTTP 404", "HTTP 404", false, t0.Add(time.Duration(i)*time.Millisecond))
	}
	require.True(t, wide, "a 404 storm of 5 keys is an endpoint failure at once")

	h = newEndpointHealth(5)
	for i := range 5 {
		_, _ = h.failed("k"+strconv.Itoa(i), "HTTP 429", "HTTP 429", true, t0)
	}
	require.False(t, h.delivered(), "the burst never made the endpoint fail")
	wide, _ = h.failed("k9", "HTTP 429", "HTTP 429", true, t0.Add(2*pressureSpan))
	require.False(t, wide, "a delivery in between starts a new streak")
}
