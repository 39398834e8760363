//go:build fault

package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

// keyLog keeps, per customer or transaction, every message the receiver accepted, in arrival
// order (one request per key is in flight at a time, so arrival order is delivery order).
type keyLog struct {
	mu   sync.Mutex
	msgs map[string][]keyMsg // "C/42" or "T/T17"
}

type keyMsg struct {
	uniqueID int64
	action   string
	payload  string
}

func (l *keyLog) add(m receiver.Received) {
	if m.Sample {
		return
	}
	key := ""
	switch m.Message.Action {
	case "CUSTOMERDEL":
		key = "C/" + m.Message.Payload
	case "POSTRNCRE":
		var p struct {
			RetailTransactionID string `json:"retailTransactionId"`
		}
		_ = json.Unmarshal([]byte(m.Message.Payload), &p)
		key = "T/" + p.RetailTransactionID
	default:
		var p struct {
			CustomerID string `json:"customerID"`
		}
		_ = json.Unmarshal([]byte(m.Message.Payload), &p)
		key = "C/" + p.CustomerID
	}
	id, _ := strconv.ParseInt(m.Message.UniqueID, 10, 64)
	l.mu.Lock()
	l.msgs[key] = append(l.msgs[key], keyMsg{uniqueID: id, action: m.Message.Action, payload: m.Message.Payload})
	l.mu.Unlock()
}

func (l *keyLog) of(key string) []keyMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]keyMsg(nil), l.msgs[key]...)
}

// runCLI runs the relay binary's CLI against the test database and returns its output.
func runCLI(t *testing.T, e *env, args ...string) string {
	t.Helper()
	out, err := exec.Command(relayBinary(t), append(args, "--database-url", e.dbURL)...).CombinedOutput()
	require.NoError(t, err, "%v: %s", args, out)
	return string(out)
}

// TestResyncUnderWritesAndKills resyncs every customer and every transaction while a writer
// keeps changing customers, customers are deleted, and the relay is SIGKILLed three times
// mid-resync. Then: every customer and transaction was delivered by the resync, every live
// change arrived, each customer's last message carries the database's final state (a deleted
// customer's last message is its CUSTOMERDEL), snapshots of rows nobody changed equal the
// database's JSON exactly, the queues are empty and the requests done.
//
// It runs in both snapshot modes: in move mode the writer's own rows are key-only too, and a
// customer with such a row waiting is not queued again by the resync (that row's snapshot,
// built at move, carries the same state). Every insert into and delete from the queue tables
// is recorded (auditQueues), so a key that never arrives comes with its history.
// CDC_RESYNC_KILLS sets the number of kills (default 3).
func TestResyncUnderWritesAndKills(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"capture", "move"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			resyncUnderWritesAndKills(t, mode)
		})
	}
}

func resyncUnderWritesAndKills(t *testing.T, mode string) {
	log := &keyLog{msgs: map[string][]keyMsg{}}
	e := newEnv(t, envOptions{onMessage: log.add})
	customers := e.createCustomers(scaled(2000, 1000))
	nTrn := scaled(800, 300)
	e.exec(`UPDATE data_sync_config SET value = 'false' WHERE name = 'DataSyncEnabled'`)
	// Transactions belong to customers nobody changes or deletes here (a deleted customer's
	// transactions change: their customer becomes NULL, which is not a transaction message).
	owners := customers[len(customers)/4 : len(customers)-50]
	e.exec(`INSERT INTO retail_transaction (retail_transaction_id, customer_id, total)
		SELECT 'T' || g, ($1::bigint[])[1 + g % cardinality($1::bigint[])], g FROM generate_series(1, $2) g`, owners, nTrn)
	e.exec(`INSERT INTO line_item (retail_transaction_id, line_item_sequence, extended_amount)
		SELECT 'T' || g, 1, g FROM generate_series(1, $1) g`, nTrn)
	e.exec(`UPDATE data_sync_config SET value = 'true' WHERE name = 'DataSyncEnabled'`)
	e.exec(`UPDATE data_sync_config SET value = $1 WHERE name = 'DataSyncSnapshotMode'`, mode)
	// The writer changes the first quarter of the customers; the last 50 are deleted mid-way.
	live := customers[:len(customers)/4]
	doomed := customers[len(customers)-50:]

	e.auditQueues()
	args := []string{"--move-batch", "200"}
	p := e.startRelay(args...)
	runCLI(t, e, "resync", "customers", "--all")
	runCLI(t, e, "resync", "transactions", "--all")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &writer{}
	total := scaled(1500, 600)
	writersDone := startWriters(ctx, e, w, live, total, 1, 5)

	selected := func() int64 {
		n, _ := e.queryInt(`SELECT coalesce(sum(selected), 0) FROM data_sync_resync`)
		return n
	}
	all := int64(len(customers) + nTrn)
	kills := 0
	var maxRSS int64
	nk := 3
	if v, _ := strconv.Atoi(os.Getenv("CDC_RESYNC_KILLS")); v > 0 {
		nk = v
	}
	for k := 1; k <= nk; k++ {
		// Kill once the resync has got a further part of the way, at a random instant after.
		ok := waitFor(2*time.Minute, func() bool { return selected() >= all*int64(k)/int64(nk+1) || p.exited() })
		require.True(t, ok, "the resync made no progress (%d of %d):\n%s", selected(), all, tail(p.output(), 4000))
		require.False(t, p.exited(), "relay exited by itself:\n%s", tail(p.output(), 4000))
		if k == (nk+1)/2 {
			e.exec(`DELETE FROM customer WHERE customer_id = ANY ($1)`, doomed)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // the kill instant (fault injection, not a wait)
		p.kill()
		kills++
		maxRSS = max(maxRSS, p.MaxRSS())
		p = e.startRelay(args...)
	}
	writersDone()
	require.GreaterOrEqual(t, w.count(), total, "writer failed: %d errors", w.errors)
	ok := waitEvery(3*time.Minute, 200*time.Millisecond, func() bool {
		n, err := e.queued()
		active, err2 := e.queryInt(`SELECT count(*) FROM data_sync_resync WHERE state <> 'done'`)
		return err == nil && err2 == nil && n == 0 && active == 0
	})
	require.True(t, ok, "not drained:\n%s", tail(p.output(), 6000))
	p.stop()
	require.NoError(t, p.err, "final relay did not stop cleanly:\n%s", tail(p.output(), 4000))
	maxRSS = max(maxRSS, p.MaxRSS())
	require.Zero(t, e.failedRows(), "no row should be dead-lettered")

	v := e.rec.verify(w.committed)
	checkVerdict(t, v)

	// The database's final state, and which keys were changed after the resync began.
	c := e.conn()
	final := map[string]string{}
	rows, err := c.Query(context.Background(), `SELECT 'C/' || customer_id, data_sync_customer_json(customer_id)::text FROM customer
		UNION ALL SELECT 'T/' || retail_transaction_id, data_sync_transaction_json(retail_transaction_id)::text FROM retail_transaction`)
	require.NoError(t, err)
	for rows.Next() {
		var k, j string
		require.NoError(t, rows.Scan(&k, &j))
		final[k] = j
	}
	require.NoError(t, rows.Err())
	liveIDs := map[int64]bool{}
	for _, id := range w.ids() {
		liveIDs[id] = true
	}
	changed := map[string]bool{}
	for _, id := range live {
		changed["C/"+strconv.FormatInt(id, 10)] = true
	}
	var resynced, exact int
	for k, want := range final {
		msgs := log.of(k)
		if len(msgs) == 0 {
			require.FailNow(t, k+" never delivered", "its queue rows:\n%s", e.auditTrail(k[2:]))
		}
		last := msgs[len(msgs)-1]
		require.JSONEq(t, want, last.payload, "%s: the last message is not the database's state", k)
		byResync := false
		for _, m := range msgs {
			byResync = byResync || !liveIDs[m.uniqueID]
		}
		require.True(t, byResync || (mode == "move" && changed[k]), "%s: no message from the resync", k)
		resynced++
		if !changed[k] {
			for _, m := range msgs {
				require.JSONEq(t, want, m.payload, "%s: a snapshot of an unchanged row differs from the database's JSON", k)
			}
			exact++
		}
	}
	for _, id := range doomed {
		k := "C/" + strconv.FormatInt(id, 10)
		msgs := log.of(k)
		require.NotEmpty(t, msgs, k)
		require.Equal(t, "CUSTOMERDEL", msgs[len(msgs)-1].action, "%s: deleted, its last message must be its CUSTOMERDEL", k)
	}
	n, err := e.queryInt(`SELECT count(*) FROM data_sync_resync WHERE state = 'done'`)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	unique, dups := e.rec.stats()
	t.Logf("resync: %d customers and %d transactions resynced (%d unchanged ones checked equal to the database JSON), %d live changes, %d deleted mid-way, %d kills, %d messages (%d duplicates), max RSS %d KiB",
		len(customers)-len(doomed), nTrn, exact, v.Committed, len(doomed), kills, unique+dups, dups, maxRSS)
	report(t, summaryRow{ChangesCommitted: v.Committed + resynced, Delivered: v.Delivered + resynced, Lost: v.Lost,
		Duplicates: dups, KillsSurvived: kills, FaultsInjected: kills, MaxRSSKiB: maxRSS,
		Notes: fmt.Sprintf("resync of %d customers and %d transactions with a writer", len(customers), nTrn)})
}
