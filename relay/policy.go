package relay

import (
	"errors"
	"fmt"
	"slices"
	"time"

	expbackoff "github.com/cdc-relay/cdc-relay/internal/backoff"
)

// Response is what a Poster reports of one POST.
type Response struct {
	Status         int           // HTTP status; 0 when no response arrived
	RetryAfter     time.Duration // the receiver's Retry-After, 0 when absent
	Excerpt        string        // start of the response body, for the dead-letter table
	Location       string        // Location of a redirect (never followed)
	TokenRefreshed bool          // a 401 made the sender refresh its token and resend
}

// outcome classifies one attempt.
type outcome int

const (
	delivered outcome = iota
	retryable         // 408, 429, 5xx, 401 after a token refresh, network, TLS, token endpoint
	permanent         // other 3xx/4xx: the record itself is refused
)

// classify decides what a response means, and whether it signals a receiver under pressure
// (429, 503: the whole pipeline slows down).
func classify(resp Response, err error, deliveredStatuses []int) (o outcome, pressure bool) {
	if err != nil && resp.Status == 0 {
		return retryable, false
	}
	switch s := resp.Status; {
	case slices.Contains(deliveredStatuses, s):
		return delivered, false
	case s == 429 || s == 503:
		return retryable, true
	case s == 408 || s == 401 || s >= 500:
		return retryable, false
	default:
		return permanent, false
	}
}

// describe is the last_error text for an attempt: status and the transport error, never the body.
func describe(resp Response, err error) string {
	switch {
	case err != nil && resp.Status != 0:
		return fmt.Sprintf("HTTP %d: %v", resp.Status, err)
	case err != nil:
		return err.Error()
	case resp.Location != "":
		return fmt.Sprintf("HTTP %d redirect to %s (not followed)", resp.Status, resp.Location)
	default:
		return fmt.Sprintf("HTTP %d", resp.Status)
	}
}

// backoff returns the delay before attempt number attempts+1 (internal/backoff: exponential
// from min, capped at max, jittered into its upper half), and never sooner than the receiver's
// Retry-After, itself capped at max: nothing a receiver says delays delivery longer than the
// operator allowed.
func backoff(attempts int, min, max, retryAfter time.Duration) time.Duration {
	d := expbackoff.Delay(attempts, min, max)
	if retryAfter > d {
		d = capWait(retryAfter, max)
	}
	return d
}

// capWait bounds a wait the receiver asked for (Retry-After) or one stored on a row by an
// earlier run to max (--backoff-max).
func capWait(d, max time.Duration) time.Duration {
	if d > max {
		return max
	}
	return d
}

// ErrBadRecord marks a queue row that can never be sent as it is (unknown OBJ_NAME or ACTION,
// null UNIQUE_ID, malformed or wrongly typed JSON); it is dead-lettered at once.
var ErrBadRecord = errors.New("bad queue record")
