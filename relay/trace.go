package relay

import "time"

// TraceStage names a step on a change's way through the relay, for Config.Trace.
type TraceStage uint8

const (
	// TraceRing: the dispatcher took a doorbell ring; Xids are the transactions that rang.
	TraceRing TraceStage = iota + 1
	// TraceTake: the mover took a move request; Xids are the transactions that rang since the
	// last one, which its first move waits for (data_sync_await_commit, in the move's round
	// trip). The moves of that request follow.
	TraceTake
	// TraceMove: a move from pending to progress committed (one per queue family and move);
	// IDs are the rows moved, Began is when its statement (and the wait before the first
	// one) was sent.
	TraceMove
	// TraceAdmit: the dispatcher received a move's rows (IDs) and put them in the window.
	TraceAdmit
	// TracePost: a request's response arrived; IDs are its rows, Began is just before the
	// Poster was called (after the body was built).
	TracePost
	// TraceDeletes: the window, too full to move, looked for customer DELETE rows waiting in
	// pending; IDs are those found, whose customers' rows in the window are now marked to be
	// re-checked before they are sent.
	TraceDeletes
)

// TraceEvent is one traced step. At is when the step ended.
type TraceEvent struct {
	Stage TraceStage
	At    time.Time
	Began time.Time // TraceMove, TracePost; zero otherwise
	Xids  []uint32  // TraceRing, TraceTake
	IDs   []int64   // TraceMove, TraceAdmit, TracePost, TraceDeletes: queue row ids
}

// rowIDs returns the ids of rows, for a trace event.
func rowIDs(rows []*row) []int64 {
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	return ids
}
