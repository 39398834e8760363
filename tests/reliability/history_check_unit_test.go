package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/mapping"
)

// A small hand-made history builder for the checker's unit tests.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func custJSON(id, name string) string {
	return fmt.Sprintf(`{"customerID": "%s", "name": {"first": "%s"}}`, id, name)
}

func msg(seq int, ms int, pid int, action, key string, id int64, payload string) histMessage {
	typ := mapping.TypeCustomer
	if action == mapping.ActionTransactionCreate {
		typ = mapping.TypeTransaction
	}
	return histMessage{Seq: seq, At: t0.Add(time.Duration(ms) * time.Millisecond), Pid: pid, Type: typ,
		Action: action, Key: key, ID: id, Payload: payload}
}

// cleanHistory is a history every invariant accepts: customer 1 created and updated, customer
// 2 created and deleted, transaction T1 posted; relay 100 killed at 25 ms and relay 200 taking
// over; queues empty.
func cleanHistory() history {
	return history{
		Messages: []histMessage{
			msg(0, 0, 100, mapping.ActionCustomerCreate, "1", 10, custJSON("1", "a")),
			msg(1, 10, 100, mapping.ActionCustomerCreate, "2", 11, custJSON("2", "x")),
			msg(2, 20, 100, mapping.ActionTransactionCreate, "T1", 12, `{"retailTransactionId":"T1","total":5}`),
			msg(3, 30, 200, mapping.ActionCustomerUpdate, "1", 13, custJSON("1", "b")),
			msg(4, 31, 200, mapping.ActionCustomerUpdate, "1", 13, custJSON("1", "b")), // a duplicate
			msg(5, 40, 200, mapping.ActionCustomerDelete, "2", 14, "2"),
		},
		Changes: []histChange{
			{10, mapping.TypeCustomer, "1", "CREATE"}, {11, mapping.TypeCustomer, "2", "CREATE"},
			{12, mapping.TypeTransaction, "T1", "CREATE"}, {13, mapping.TypeCustomer, "1", "UPDATE"},
			{14, mapping.TypeCustomer, "2", "DELETE"},
		},
		Deletes: map[string]time.Time{"2": t0.Add(35 * time.Millisecond)},
		Events:  []histEvent{{At: t0.Add(25 * time.Millisecond), What: "relay 100 killed"}},
		Final: histFinal{
			Customers:    map[string]string{"1": `{"customerID":"1","name":{"first":"b"}}`},
			Transactions: map[string]string{"T1": `{"retailTransactionId": "T1", "total": 5}`},
			Queued:       map[string]int64{"data_sync_cust_pending_queue": 0, "data_sync_cust_progress_queue": 0},
		},
	}
}

// TestHistoryCheckerCatchesEachViolation proves each invariant function rejects the violation
// it exists for, on a hand-made history, and accepts the clean one.
func TestHistoryCheckerCatchesEachViolation(t *testing.T) {
	t.Parallel()
	clean := checkHistory(cleanHistory())
	for name, r := range clean {
		require.Positivef(t, r.Checked, "%s checked nothing on the clean history", name)
		require.Zerof(t, r.Violations, "%s on the clean history: %v", name, r.Examples)
	}

	cases := []struct {
		name      string
		invariant string
		spoil     func(h *history)
		want      string
	}{
		{"a lost message", invNothingLost, func(h *history) {
			h.Changes = append(h.Changes, histChange{15, mapping.TypeCustomer, "1", "UPDATE"})
		}, "committed change 15 (UPDATE) has no delivered message at or after it"},
		{"a lost transaction", invNothingLost, func(h *history) {
			h.Changes = append(h.Changes, histChange{16, mapping.TypeTransaction, "T2", "CREATE"})
		}, "POSTRN T2: committed change 16"},
		{"an out-of-order pair", invFirstInOrder, func(h *history) {
			// uniqueId 9 of customer 1 first arrives after 13.
			h.Messages = append(h.Messages, msg(6, 50, 200, mapping.ActionCustomerUpdate, "1", 9, custJSON("1", "b")))
		}, "uniqueId 9 first arrived"},
		{"a stale last message", invConvergence, func(h *history) {
			h.Final.Customers["1"] = `{"customerID":"1","name":{"first":"c"}}`
		}, `.name.first: got "b", want "c"`},
		{"a stale last transaction", invConvergence, func(h *history) {
			h.Final.Transactions["T1"] = `{"retailTransactionId":"T1","total":6}`
		}, `.total: got 5, want 6`},
		{"a customer never delivered", invConvergence, func(h *history) {
			h.Final.Customers["3"] = custJSON("3", "z")
		}, "CUSTOMER 3 exists at the end but no message was delivered for it"},
		{"a deleted customer whose last message is not its delete", invConvergence, func(h *history) {
			h.Messages = append(h.Messages, msg(6, 60, 200, mapping.ActionCustomerUpdate, "2", 15, custJSON("2", "x")))
		}, "not CUSTOMERDEL"},
		{"a message after a delete", invErasure, func(h *history) {
			h.Messages = append(h.Messages, msg(6, 60, 200, mapping.ActionCustomerUpdate, "2", 15, custJSON("2", "x")))
		}, "after its delete committed"},
		{"an overlapping pair of senders", invOneDeliverer, func(h *history) {
			// relay 100 sends again after its successor started, with no event in between.
			h.Messages = append(h.Messages, msg(6, 45, 100, mapping.ActionCustomerUpdate, "1", 15, custJSON("1", "b")))
			h.Final.Customers["1"] = custJSON("1", "b")
		}, "pid 100 sent from 03:04:05.000, pid 200 from 03:04:05.030, then pid 100 again at 03:04:05.045"},
		{"another relay sending in between, without an event", invOneDeliverer, func(h *history) {
			h.Messages = append(h.Messages, msg(6, 35, 300, mapping.ActionCustomerUpdate, "1", 15, custJSON("1", "b")))
		}, "pid 200 from 03:04:05.030, then pid 300 at 03:04:05.035"},
		{"a step-down logged by a relay that was not sending", invOneDeliverer, func(h *history) {
			// relay 300 (a standby) logs that its session ended; relay 100 still may not
			// return after relay 200 took over.
			h.Events = append(h.Events, histEvent{At: t0.Add(42 * time.Millisecond), What: "pid 300 logged", Pid: 300})
			h.Messages = append(h.Messages, msg(6, 45, 100, mapping.ActionCustomerUpdate, "1", 15, custJSON("1", "b")))
		}, "pid 200 from 03:04:05.030, then pid 100 again at 03:04:05.045"},
		{"rows left in progress", invQueuesEmpty, func(h *history) {
			h.Final.Queued["data_sync_cust_progress_queue"] = 3
		}, "data_sync_cust_progress_queue holds 3 rows"},
		{"an unexpected dead letter", invQueuesEmpty, func(h *history) {
			h.Final.Failed = append(h.Final.Failed, histFailed{Queue: "data_sync_cust_failed", ID: 15, Key: "1", Reason: "failed", Status: 404})
		}, `reason "failed", last status 404`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := cleanHistory()
			c.spoil(&h)
			res := checkHistory(h)
			r := res[c.invariant]
			require.Positivef(t, r.Violations, "%s caught nothing", c.invariant)
			require.Contains(t, r.Examples[0], c.want)
			t.Logf("%s: %s", c.invariant, r.Examples[0])
		})
	}

	// The allowances: a message already on its way when the delete committed (within the grace),
	// and an expected dead-letter reason.
	h := cleanHistory()
	h.Messages = append(h.Messages, msg(6, 36, 200, mapping.ActionCustomerUpdate, "2", 15, custJSON("2", "x")))
	h.ErasureGrace = 5 * time.Millisecond
	require.Zero(t, checkErasure(h).Violations)
	h.Final.Failed = []histFailed{{Queue: "data_sync_cust_failed", ID: 15, Key: "1", Reason: "bad_payload"}}
	h.AllowedFailed = []string{"bad_payload"}
	require.Zero(t, checkQueuesEmpty(h).Violations)
}

// A relay's own step-down, when it was the last sender, lets a successor follow it.
func TestHistoryCheckerAcceptsAHandoverAfterAStepDown(t *testing.T) {
	t.Parallel()
	h := cleanHistory()
	h.Events = append(h.Events, histEvent{At: t0.Add(42 * time.Millisecond), What: "pid 200 logged", Pid: 200})
	h.Messages = append(h.Messages, msg(6, 45, 300, mapping.ActionCustomerUpdate, "1", 15, custJSON("1", "b")))
	r := checkOneDeliverer(h)
	require.Zero(t, r.Violations, "%v", r.Examples)
	require.Equal(t, 3, r.Checked)
}
