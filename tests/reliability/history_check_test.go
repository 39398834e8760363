package reliability

// The history checker's invariants: pure functions over a history (what the receiver accepted,
// what the database committed, when deletes committed, when leadership could move, what the
// database holds at the end). history_test.go records such a history against the real relay
// under faults; history_check_unit_test.go feeds these functions hand-made histories.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// histMessage is one message the receiver accepted.
type histMessage struct {
	Seq     int       // arrival order at the receiver (0-based, duplicates included)
	At      time.Time // when the request carrying it arrived
	Pid     int       // the sending relay process (from its User-Agent); 0 when unknown
	Type    string    // mapping.TypeCustomer or mapping.TypeTransaction
	Action  string    // CUSTOMERCRE, CUSTOMERMOD, CUSTOMERDEL, POSTRNCRE
	Key     string    // customer id or retail transaction id
	ID      int64     // uniqueId: the queue row id
	Payload string
}

// histChange is one committed queue row: a change the database promised to deliver.
type histChange struct {
	ID     int64
	Type   string // mapping.TypeCustomer or mapping.TypeTransaction
	Key    string
	Action string // queue action: CREATE, UPDATE, DELETE
}

// histEvent is an instant at which leadership may legitimately move from one relay process to
// another: a relay killed, its database sessions terminated, PostgreSQL restarted.
type histEvent struct {
	At   time.Time
	What string
	// Pid, when set, makes the event a step-down of that relay alone (its own log said it
	// stopped delivering): it lets a successor follow that relay if it was the last sender,
	// and excuses nothing else.
	Pid int
}

// histFailed is one dead-lettered row left at the end.
type histFailed struct {
	Queue  string
	ID     int64
	Key    string
	Reason string
	Status int
}

// histFinal is the database at the end of the run.
type histFinal struct {
	// Customers and Transactions map each existing key to its snapshot JSON
	// (data_sync_customer_json / data_sync_transaction_json).
	Customers, Transactions map[string]string
	// Queued is the number of rows left in each pending or progress queue (and the set table).
	Queued map[string]int64
	Failed []histFailed
}

// history is everything the invariants are checked over.
type history struct {
	Messages []histMessage
	Changes  []histChange
	// Deletes maps a deleted customer's id to the instant its delete was known committed
	// (client side, after COMMIT returned: never earlier than the real commit).
	Deletes map[string]time.Time
	Events  []histEvent
	Final   histFinal
	// ErasureGrace is how long after a delete committed a message that was already on its way
	// may still arrive (same machine: the request's transit from the relay to the receiver).
	ErasureGrace time.Duration
	// AllowedFailed lists dead-letter reasons the run expects (none by default).
	AllowedFailed []string
}

// invariant names, in the order the summary lists them.
const (
	invNothingLost  = "nothing-lost"
	invFirstInOrder = "first-in-order"
	invConvergence  = "convergence"
	invErasure      = "erasure"
	invOneDeliverer = "one-deliverer"
	invQueuesEmpty  = "queues-empty"
)

var allInvariants = []string{invNothingLost, invFirstInOrder, invConvergence, invErasure, invOneDeliverer, invQueuesEmpty}

// checkResult is one invariant's verdict.
type checkResult struct {
	Name       string
	Checked    int
	Violations int
	Examples   []string // the first few violations
	Off        string   // why it was not enforced (empty: enforced)
}

const maxExamples = 8

func (r *checkResult) violate(format string, args ...any) {
	r.Violations++
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// checkHistory runs every invariant over h.
func checkHistory(h history) map[string]checkResult {
	return map[string]checkResult{
		invNothingLost:  checkNothingLost(h),
		invFirstInOrder: checkFirstInOrder(h),
		invConvergence:  checkConvergence(h),
		invErasure:      checkErasure(h),
		invOneDeliverer: checkOneDeliverer(h),
		invQueuesEmpty:  checkQueuesEmpty(h),
	}
}

type histKey struct{ Type, Key string }

// checkNothingLost: every committed change has a delivered message of its key with a uniqueId at
// or after its own (itself, or a later change of the key; a customer's DELETE counts, so rows its
// purge removed are covered by the DELETE being delivered).
func checkNothingLost(h history) checkResult {
	r := checkResult{Name: invNothingLost}
	maxID := map[histKey]int64{}
	for _, m := range h.Messages {
		k := histKey{m.Type, m.Key}
		if v, ok := maxID[k]; !ok || m.ID > v {
			maxID[k] = m.ID
		}
	}
	for _, c := range h.Changes {
		r.Checked++
		k := histKey{c.Type, c.Key}
		if v, ok := maxID[k]; !ok || v < c.ID {
			last := "none"
			if ok {
				last = strconv.FormatInt(v, 10)
			}
			r.violate("%s %s: committed change %d (%s) has no delivered message at or after it (highest delivered uniqueId %s)",
				c.Type, c.Key, c.ID, c.Action, last)
		}
	}
	return r
}

// checkFirstInOrder: per key, first deliveries come in uniqueId order.
func checkFirstInOrder(h history) checkResult {
	r := checkResult{Name: invFirstInOrder}
	msgs := bySeq(h.Messages)
	seen := map[int64]bool{}
	last := map[histKey]int64{}
	for _, m := range msgs {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		r.Checked++
		k := histKey{m.Type, m.Key}
		if prev, ok := last[k]; ok && m.ID < prev {
			r.violate("%s %s: uniqueId %d first arrived (at %s) after uniqueId %d", m.Type, m.Key, m.ID, clock(m.At), prev)
			continue
		}
		last[k] = m.ID
	}
	return r
}

// checkConvergence: the last message delivered for every existing customer (transaction)
// carries exactly its final snapshot; the last message of a customer that no longer exists is
// its CUSTOMERDEL.
func checkConvergence(h history) checkResult {
	r := checkResult{Name: invConvergence}
	lastMsg := map[histKey]histMessage{}
	for _, m := range bySeq(h.Messages) {
		lastMsg[histKey{m.Type, m.Key}] = m
	}
	check := func(typ string, want map[string]string) {
		for _, key := range sortedKeys(want) {
			r.Checked++
			m, ok := lastMsg[histKey{typ, key}]
			switch {
			case !ok:
				r.violate("%s %s exists at the end but no message was delivered for it", typ, key)
			case m.Action == mapping.ActionCustomerDelete:
				r.violate("%s %s exists at the end but its last message is %s (uniqueId %d)", typ, key, m.Action, m.ID)
			case compactJSON(m.Payload) != compactJSON(want[key]):
				r.violate("%s %s: the last message (uniqueId %d, %s) differs from the database's final snapshot: %s",
					typ, key, m.ID, m.Action, jsonDiff(m.Payload, want[key]))
			}
		}
	}
	check(mapping.TypeCustomer, h.Final.Customers)
	check(mapping.TypeTransaction, h.Final.Transactions)
	for _, k := range sortedHistKeys(lastMsg) {
		if k.Type != mapping.TypeCustomer {
			continue
		}
		if _, exists := h.Final.Customers[k.Key]; exists {
			continue
		}
		r.Checked++
		if m := lastMsg[k]; m.Action != mapping.ActionCustomerDelete {
			r.violate("customer %s no longer exists but its last message is %s (uniqueId %d), not CUSTOMERDEL", k.Key, m.Action, m.ID)
		}
	}
	return r
}

// checkErasure: no CUSTOMERCRE/CUSTOMERMOD of a customer arrives after its delete committed
// (plus ErasureGrace for a request already on its way).
func checkErasure(h history) checkResult {
	r := checkResult{Name: invErasure}
	r.Checked = len(h.Deletes)
	for _, m := range bySeq(h.Messages) {
		if m.Type != mapping.TypeCustomer || m.Action == mapping.ActionCustomerDelete {
			continue
		}
		if del, ok := h.Deletes[m.Key]; ok && m.At.After(del.Add(h.ErasureGrace)) {
			r.violate("customer %s: %s (uniqueId %d) arrived at %s, %s after its delete committed (%s)",
				m.Key, m.Action, m.ID, clock(m.At), m.At.Sub(del).Round(time.Millisecond), clock(del))
		}
	}
	return r
}

// checkOneDeliverer: between two consecutive leadership events, arrivals come from at most two
// processes: the last sender before the event (finishing what it had on its way) and then one
// successor (pattern A…A B…B). A relay's own step-down is such an event only when that relay
// was the last sender. A return to an earlier sender, or a third one, without an event
// in between means two relays were sending in overlapping intervals.
func checkOneDeliverer(h history) checkResult {
	r := checkResult{Name: invOneDeliverer}
	msgs := slices.Clone(h.Messages)
	sort.SliceStable(msgs, func(i, j int) bool {
		if !msgs[i].At.Equal(msgs[j].At) {
			return msgs[i].At.Before(msgs[j].At)
		}
		return msgs[i].Seq < msgs[j].Seq
	})
	events := slices.Clone(h.Events)
	sort.Slice(events, func(i, j int) bool { return events[i].At.Before(events[j].At) })
	ev := 0
	var senders []int // distinct runs of senders since the last event
	var runStart []time.Time
	segment := "the start"
	for _, m := range msgs {
		for ev < len(events) && !events[ev].At.After(m.At) {
			e := events[ev]
			ev++
			n := len(senders)
			if e.Pid != 0 && (n == 0 || senders[n-1] != e.Pid) {
				continue // a relay that was not the last sender stepped down: nothing moves
			}
			segment = e.What + " at " + clock(e.At)
			// The sender before the event may still finish what it had on its way.
			if n > 0 {
				senders, runStart = senders[n-1:], runStart[n-1:]
			}
		}
		if n := len(senders); n > 0 && senders[n-1] == m.Pid {
			continue
		}
		r.Checked++
		senders = append(senders, m.Pid)
		runStart = append(runStart, m.At)
		if len(senders) > 2 {
			n := len(senders)
			again := ""
			if slices.Contains(senders[:n-1], m.Pid) {
				again = " again"
			}
			r.violate("after %s, no event since: pid %d sent from %s, pid %d from %s, then pid %d%s at %s",
				segment, senders[n-3], clock(runStart[n-3]), senders[n-2], clock(runStart[n-2]), m.Pid, again, clock(m.At))
		}
	}
	return r
}

// checkQueuesEmpty: nothing left in pending or progress, and dead letters only with reasons the
// run expects.
func checkQueuesEmpty(h history) checkResult {
	r := checkResult{Name: invQueuesEmpty}
	for _, q := range sortedKeys(h.Final.Queued) {
		r.Checked++
		if n := h.Final.Queued[q]; n != 0 {
			r.violate("%s holds %d rows at the end", q, n)
		}
	}
	for _, f := range h.Final.Failed {
		r.Checked++
		if !slices.Contains(h.AllowedFailed, f.Reason) {
			r.violate("%s: row %d (key %s) dead-lettered, reason %q, last status %d", f.Queue, f.ID, f.Key, f.Reason, f.Status)
		}
	}
	return r
}

// ---------------------------------------------------------------------------------------------
// Helpers

var pidInUserAgent = regexp.MustCompile(`; pid (\d+)\)`)

// senderPID is the pid of the relay process that sent a message, from the User-Agent the daemon
// sends (`cdc-relay (host; pid N)`); -1 when it names none.
func senderPID(userAgent string) int {
	if s := pidInUserAgent.FindStringSubmatch(userAgent); s != nil {
		if pid, err := strconv.Atoi(s[1]); err == nil {
			return pid
		}
	}
	return -1
}

// histMessageOf turns what the receiver accepted into a histMessage: the key comes from the
// payload (customerID, retailTransactionId, or the customer id a CUSTOMERDEL carries).
func histMessageOf(seq int, rc receiver.Received) histMessage {
	m := histMessage{Seq: seq, At: rc.At, Type: rc.Message.Type, Action: rc.Message.Action, Payload: rc.Message.Payload}
	m.ID, _ = strconv.ParseInt(rc.Message.UniqueID, 10, 64)
	m.Pid = senderPID(rc.UserAgent)
	switch {
	case m.Action == mapping.ActionCustomerDelete:
		m.Key = strings.TrimSpace(m.Payload)
	case m.Type == mapping.TypeCustomer:
		var p struct {
			CustomerID string `json:"customerID"`
		}
		_ = json.Unmarshal([]byte(m.Payload), &p)
		m.Key = p.CustomerID
	case m.Type == mapping.TypeTransaction:
		var p struct {
			ID string `json:"retailTransactionId"`
		}
		_ = json.Unmarshal([]byte(m.Payload), &p)
		m.Key = p.ID
	}
	return m
}

// histType maps a queue row's OBJ_NAME to the message type.
func histType(objName string) string {
	if objName == "Transaction" {
		return mapping.TypeTransaction
	}
	return mapping.TypeCustomer
}

func bySeq(msgs []histMessage) []histMessage {
	out := slices.Clone(msgs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func compactJSON(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

// jsonDiff names the first top-level field (or nested path) where two JSON documents differ,
// without printing whole payloads.
func jsonDiff(got, want string) string {
	var g, w any
	if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return "one of them is not JSON"
	}
	if p := firstDiff("", g, w); p != "" {
		return p
	}
	return "key order or formatting"
}

func firstDiff(path string, g, w any) string {
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %s, want an object", path, short(g))
		}
		for _, k := range sortedKeys(wv) {
			if d := firstDiff(path+"."+k, gv[k], wv[k]); d != "" {
				return d
			}
		}
		for _, k := range sortedKeys(gv) {
			if _, ok := wv[k]; !ok {
				return fmt.Sprintf("%s.%s: unexpected", path, k)
			}
		}
		return ""
	case []any:
		gv, ok := g.([]any)
		if !ok {
			return fmt.Sprintf("%s: got %s, want an array", path, short(g))
		}
		for i := range min(len(gv), len(wv)) {
			if d := firstDiff(fmt.Sprintf("%s[%d]", path, i), gv[i], wv[i]); d != "" {
				return d
			}
		}
		if len(gv) != len(wv) {
			return fmt.Sprintf("%s: got %d elements, want %d (first %d equal)", path, len(gv), len(wv), min(len(gv), len(wv)))
		}
		return ""
	default:
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		if !bytes.Equal(gb, wb) {
			return fmt.Sprintf("%s: got %s, want %s", path, short(g), short(w))
		}
		return ""
	}
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedHistKeys[V any](m map[histKey]V) []histKey {
	out := make([]histKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Key < out[j].Key
	})
	return out
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05.000") }

// formatChecks renders the invariant table: one row per invariant, in allInvariants order.
func formatChecks(title string, res map[string]checkResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n%-16s %9s %10s  %s\n", title, "invariant", "checked", "violations", "result")
	for _, name := range allInvariants {
		r, ok := res[name]
		if !ok {
			continue
		}
		verdict := "PASS"
		switch {
		case r.Off != "" && r.Violations > 0:
			verdict = "FAIL (not enforced: " + r.Off + ")"
		case r.Off != "":
			verdict = "pass (not enforced: " + r.Off + ")"
		case r.Violations > 0:
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%-16s %9d %10d  %s\n", name, r.Checked, r.Violations, verdict)
	}
	for _, name := range allInvariants {
		if r, ok := res[name]; ok && r.Violations > 0 {
			fmt.Fprintf(&b, "%s, first violations:\n", name)
			for _, ex := range r.Examples {
				fmt.Fprintf(&b, "  - %s\n", ex)
			}
		}
	}
	return b.String()
}
