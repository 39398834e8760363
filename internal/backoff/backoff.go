// Package backoff is the one exponential backoff of cdc-relay: record retries, the
// acknowledger, endpoint probes, relay sessions and the replication doorbell's reconnects all
// take their delays from Delay.
//
// It is a function of the attempt number rather than a stateful iterator (such as
// github.com/cenkalti/backoff's): a record's attempts are stored on its queue row, and the delay
// of its next attempt must follow from that count after a restart.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns the wait before retry number attempt (1 for the first retry): min doubled
// attempt-1 times, capped at max, then jittered into its upper half ("equal jitter": between
// d/2 and d), so that many clients failing together do not retry in lockstep while the delay
// still grows with each attempt. attempt < 1 counts as 1; min <= 0 gives 0.
func Delay(attempt int, min, max time.Duration) time.Duration {
	if min <= 0 {
		return 0
	}
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
