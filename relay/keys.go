package relay

import (
	"container/heap"
	"slices"
	"sort"
	"strconv"
	"time"
)

// keyState holds the in-memory rows of one key (a customer or transaction id) in id order.
// At most one request per key is in flight, which is what keeps per-key order under
// concurrency.
type keyState struct {
	name     string
	rows     []*row
	inflight bool
	heapIdx  int // index in state.ready or state.waiting, -1 when in neither
	inReady  bool
}

func (k *keyState) head() *row { return k.rows[0] }

// keyHeap orders keys either by head id (ready: oldest record first, live changes before rows
// of a resync request) or by the head's next attempt time (waiting for a retry).
type keyHeap struct {
	keys   []*keyState
	byTime bool
}

func (h *keyHeap) Len() int { return len(h.keys) }
func (h *keyHeap) Less(i, j int) bool {
	a, b := h.keys[i].head(), h.keys[j].head()
	if h.byTime && !a.next.Equal(b.next) {
		return a.next.Before(b.next)
	}
	if !h.byTime && a.resync != b.resync {
		return b.resync // live changes before resync rows
	}
	return a.id < b.id
}
func (h *keyHeap) Swap(i, j int) {
	h.keys[i], h.keys[j] = h.keys[j], h.keys[i]
	h.keys[i].heapIdx = i
	h.keys[j].heapIdx = j
}
func (h *keyHeap) Push(x any) {
	k := x.(*keyState)
	k.heapIdx = len(h.keys)
	h.keys = append(h.keys, k)
}
func (h *keyHeap) Pop() any {
	n := len(h.keys) - 1
	k := h.keys[n]
	h.keys[n] = nil
	h.keys = h.keys[:n]
	k.heapIdx = -1
	return k
}

// window is the dispatcher's in-memory view of progress: rows by key, which keys may be sent
// now (ready), and which wait for a retry time (waiting).
type window struct {
	keys     map[string]*keyState
	ready    keyHeap
	waiting  keyHeap
	rows     int   // rows held (coalesced rows count once)
	bytes    int64 // memory those rows hold, as rowBytes counts it
	coalesce bool
	saved    int // messages saved by coalescing
	// deleted are the customers' DELETE rows the window learnt of before they were moved (by
	// window key; see markDeleted).
	deleted map[string]deletedKey
}

func newWindow(coalesce bool) *window {
	return &window{keys: map[string]*keyState{}, waiting: keyHeap{byTime: true}, coalesce: coalesce}
}

func keyName(r *row) string {
	if r.keyNull {
		return r.q.name + "\x00null\x00" + strconv.FormatInt(r.id, 10)
	}
	return windowKey(r.q, r.key)
}

// windowKey is the window's name for key (not NULL) of queue family q.
func windowKey(q *queue, key string) string { return q.name + "\x00" + key }

// markBefore marks the rows of the key the window holds, not in flight, with ids below id, to be
// re-checked before they are sent: id is the key's DELETE row, and the delete purged them from
// the queues (they are dropped unsent when gone; rows inserted by hand survive the check).
func (k *keyState) markBefore(id int64) {
	for _, r := range k.rows {
		if r.id < id && !r.sent {
			r.recheck = true
		}
	}
}

// add puts a row into the window, in id order within its key, coalescing a customer UPDATE into
// the queued snapshot before it when asked.
func (w *window) add(r *row, now time.Time) {
	name := keyName(r)
	k := w.keys[name]
	if k == nil {
		k = &keyState{name: name, heapIdx: -1}
		w.keys[name] = k
	}
	if d, ok := w.deleted[name]; ok {
		switch {
		case now.Sub(d.at) > deletedKeep || r.id >= d.id:
			delete(w.deleted, name) // the DELETE row itself (or one after it) is here
		default:
			r.recheck = true // read before the delete committed, handed over after it
		}
	}
	if w.coalesce && r.q == queues[0] && r.action == "UPDATE" && len(k.rows) > 0 {
		last := k.rows[len(k.rows)-1]
		if last.id < r.id && !last.sent && (last.action == "CREATE" || last.action == "UPDATE") && last.objName == r.objName {
			last.recheck = last.recheck || r.recheck
			last.absorbed = append(last.absorbed, last.id)
			w.bytes += int64(len(r.payload) - len(last.payload))
			last.id, last.payload, last.createdAt = r.id, r.payload, minTime(last.createdAt, r.createdAt)
			last.resync = last.resync && r.resync // a live change absorbed keeps its priority
			w.saved++
			w.reschedule(k, now)
			return
		}
	}
	if r.q == queues[0] && r.action == "DELETE" {
		// A customer's DELETE: its earlier rows still waiting here (for a retry, a pause, or
		// their turn) are re-checked before they are sent.
		k.markBefore(r.id)
	}
	i := sort.Search(len(k.rows), func(i int) bool { return k.rows[i].id > r.id })
	k.rows = append(k.rows, nil)
	copy(k.rows[i+1:], k.rows[i:])
	k.rows[i] = r
	w.rows++
	w.bytes += rowBytes(r)
	w.reschedule(k, now)
}

// rowOverhead is what a row costs in memory besides its payload and key (struct, slices, maps).
const rowOverhead = 256

// rowBytes is what a row counts against Config.WindowBytes.
func rowBytes(r *row) int64 {
	return int64(len(r.payload) + len(r.key) + 8*len(r.absorbed) + rowOverhead)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// reschedule files a key under ready or waiting according to its head, or forgets it when empty.
func (w *window) reschedule(k *keyState, now time.Time) {
	if k.heapIdx >= 0 {
		if k.inReady {
			heap.Remove(&w.ready, k.heapIdx)
		} else {
			heap.Remove(&w.waiting, k.heapIdx)
		}
	}
	if len(k.rows) == 0 {
		if !k.inflight {
			delete(w.keys, k.name)
		}
		return
	}
	if k.inflight {
		return
	}
	if k.head().next.After(now) {
		k.inReady = false
		heap.Push(&w.waiting, k)
	} else {
		k.inReady = true
		heap.Push(&w.ready, k)
	}
}

// promote moves keys whose retry time has come to ready, and returns the next time one will.
func (w *window) promote(now time.Time) (next time.Time) {
	for w.waiting.Len() > 0 {
		k := w.waiting.keys[0]
		if k.head().next.After(now) {
			return k.head().next
		}
		heap.Pop(&w.waiting)
		k.inReady = true
		heap.Push(&w.ready, k)
	}
	return time.Time{}
}

// take pops ready keys into one request of at most n rows. Consecutive rows of one key may
// share a request (they stay in order inside it); a row marked solo travels alone.
func (w *window) take(n int, now time.Time) *request {
	if w.ready.Len() == 0 {
		return nil
	}
	req := &request{}
	for w.ready.Len() > 0 && len(req.rows) < n {
		k := w.ready.keys[0]
		if k.head().solo && len(req.rows) > 0 {
			break
		}
		heap.Pop(&w.ready)
		k.inflight = true
		req.keys = append(req.keys, k)
		for i, r := range k.rows {
			if len(req.rows) >= n || r.next.After(now) || (r.solo && i > 0) {
				break
			}
			r.sent = true
			req.rows = append(req.rows, r)
			if r.solo {
				return req
			}
		}
	}
	return req
}

// release frees a request's keys after its outcome was applied. With drop the rows it carried
// leave the window (delivered or dead-lettered); otherwise they stay for a retry.
func (w *window) release(req *request, drop bool, now time.Time) {
	for _, k := range req.keys {
		k.inflight = false
		kept := k.rows[:0]
		for _, r := range k.rows {
			if r.sent {
				r.sent = false
				if drop {
					w.rows--
					w.bytes -= rowBytes(r)
					continue
				}
			}
			kept = append(kept, r)
		}
		clear(k.rows[len(kept):])
		k.rows = kept
		w.reschedule(k, now)
	}
}

// dropAfter removes every row of the key with id > id that is not in flight (they are held in
// the dead-letter table behind it) and returns them.
func (w *window) dropAfter(k *keyState, id int64) []*row {
	kept := k.rows[:0]
	var dropped []*row
	for _, r := range k.rows {
		if r.id > id && !r.sent {
			dropped = append(dropped, r)
			continue
		}
		kept = append(kept, r)
	}
	clear(k.rows[len(kept):])
	k.rows = kept
	w.rows -= len(dropped)
	for _, r := range dropped {
		w.bytes -= rowBytes(r)
	}
	return dropped
}

// markRecheck marks every row held (not in flight) to be re-checked before it is sent, after a
// pause: a customer may have been deleted meanwhile, its rows purged from the queues.
func (w *window) markRecheck() {
	for _, k := range w.keys {
		for _, r := range k.rows {
			if !r.sent { // a row in flight belongs to its request's goroutine until it reports
				r.recheck = true
			}
		}
	}
}

// deletedKeep is how long the window remembers a customer's DELETE row it learnt of before the
// row itself was moved (see markDeleted).
const deletedKeep = time.Minute

// deletedKey is a DELETE row the window learnt of before it was moved: its id and when.
type deletedKey struct {
	id int64
	at time.Time
}

// markDeleted marks the rows of a deleted customer that the window holds, not in flight, with
// ids below its DELETE row's, to be re-checked before they are sent (see lookForDeletes), and
// remembers the DELETE row until it is moved (at most deletedKeep): a move that read rows of
// the customer before its delete committed may hand them over after this, and add marks them
// too.
func (w *window) markDeleted(del pendingDelete, now time.Time) {
	name := windowKey(queues[0], del.key)
	if w.deleted == nil {
		w.deleted = map[string]deletedKey{}
	}
	if len(w.deleted) >= 4096 {
		for n, d := range w.deleted {
			if now.Sub(d.at) > deletedKeep {
				delete(w.deleted, n)
			}
		}
	}
	if d, ok := w.deleted[name]; !ok || d.id < del.id {
		w.deleted[name] = deletedKey{id: del.id, at: now}
	}
	if k := w.keys[name]; k != nil {
		k.markBefore(del.id)
	}
}

// forget removes one row of a key in flight from the window (the row is gone from progress)
// and reports whether it was there; release files the key again.
func (w *window) forget(r *row) bool {
	k := w.keys[keyName(r)]
	if k == nil {
		return false
	}
	i := slices.Index(k.rows, r)
	if i < 0 {
		return false
	}
	k.rows = slices.Delete(k.rows, i, i+1)
	r.sent = false
	w.rows--
	w.bytes -= rowBytes(r)
	return true
}
