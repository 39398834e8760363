package relay

import "time"

// row is one progress row held in memory.
type row struct {
	q         *queue
	id        int64
	key       string
	keyNull   bool
	objName   string
	action    string
	payload   []byte
	createdAt time.Time
	attempts  int
	next      time.Time // next attempt due; zero = now
	absorbed  []int64   // ids coalesced into this row (acknowledged with it)
	solo      bool      // send alone: it failed permanently inside a multi-message request
	sent      bool      // part of the request in flight for its key
	bad       error     // why the row can never be sent as it is (set by prepare)
	captured  bool      // written by our capture triggers (or built at move): schema-checked by tests, not per row
	resync    bool      // queued by a resync request: sent after live rows (resync.go)
	recheck   bool      // held in memory across a failure of its key: re-checked before it is sent
	// epFailed: the row failed an endpoint-wide way; epDelivered: requests delivered then (see
	// endpointHealth.blame).
	epFailed    bool
	epDelivered uint64
}
