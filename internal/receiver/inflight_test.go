package receiver

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A receiver with MaxInflight answers a POST beyond it 429 at once, and serves the rest.
func TestMaxInflight(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	c := client(t, s, nil)
	tok := token(t, s, c)
	s.SetFaults(Faults{MaxInflight: 3, Delay: 2 * time.Second, RetryAfter: time.Second})
	var wg sync.WaitGroup
	statuses := make([]int, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = post(t, s, c, tok, "application/json", body(msg("1"))).status
		}()
	}
	require.Eventually(t, func() bool { return s.inflight.Load() == 3 }, 10*time.Second, 5*time.Millisecond)
	r := post(t, s, c, tok, "application/json", body(msg("2")))
	require.Equal(t, http.StatusTooManyRequests, r.status)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	wg.Wait()
	require.Equal(t, []int{200, 200, 200}, statuses)
	require.Equal(t, 1, s.Stats().OverInflight)
	require.Equal(t, http.StatusOK, post(t, s, c, tok, "application/json", body(msg("3"))).status, "a slot is free again")
}
