package load

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Op is one kind of operation: one transaction (or one autocommit statement) on the worker's
// session.
type Op struct {
	Name string
	// Weight is the operation's share of the draws in its Mix.
	Weight int
	// When, if set, tells whether the operation may run with live customers in the set, which
	// held initial when the steady run began; when it may not, the next operation of the Mix
	// that may runs instead.
	When func(live, initial int) bool
	// Run does the operation. It returns nil when there was nothing to do.
	Run func(ctx context.Context, s *Session) error
}

// Mix is the operations a run draws from.
type Mix struct {
	Ops []Op
	// Setup, if set, runs once on the first session before anything else, creating what the
	// operations refer to.
	Setup func(ctx context.Context, conn *pgx.Conn) error
}

// Operation names (Stats.Committed, Commit.Op).
const (
	OpCreate          = "create"
	OpUpdate          = "update"
	OpCard            = "card"
	OpSegment         = "segment"
	OpTransaction     = "transaction"
	OpMerge           = "merge"
	OpDelete          = "delete"
	OpInterleaved     = "interleaved"
	OpTouch           = "touch"
	OpCapturedRenames = "captured renames"
)

// Tallies the Interleaved mix counts (Stats.Tally).
const (
	TallySavepointsRolledBack = "savepoints rolled back"
	TallyEarlyCaptures        = "early captures"
	TallyPosted               = "posted transactions"
)

// CE is the CE-like mix of `cdc-relay demo` and `cdc-relay load`: per 1,000 operations, 100
// new customers, 350 customer edits, 100 cards issued, 100 segment memberships, 340 posted
// transactions, 5 merges and 5 deletes; below 4 live customers, only creates. Its set-up
// creates two segments.
func CE() Mix {
	enough := func(live, _ int) bool { return live >= 4 }
	return Mix{Setup: createSegments, Ops: []Op{
		createOp,
		{Name: OpUpdate, Weight: 350, When: enough, Run: update},
		{Name: OpCard, Weight: 100, When: enough, Run: card},
		{Name: OpSegment, Weight: 100, When: enough, Run: segment},
		{Name: OpTransaction, Weight: 340, When: enough, Run: transaction},
		{Name: OpMerge, Weight: 5, When: enough, Run: merge},
		{Name: OpDelete, Weight: 5, When: enough, Run: deleteOne},
	}}
}

// Interleaved is the history checker's mix: several workers change the same customers through
// different tables at once. Per 100 operations: 4 deletes and 2 merges while the set is above
// half its starting size, 6 creates while it is below its starting size, and otherwise a
// transaction of 1-4 changes to one or two customers (see interleaved). moreAfterEarly lets a
// transaction go on changing customers after it fired its capture early.
func Interleaved(moreAfterEarly bool) Mix {
	shrink := func(live, initial int) bool { return live > initial/2 }
	grow := func(live, initial int) bool { return live < initial }
	return Mix{Ops: []Op{
		{Name: OpDelete, Weight: 4, When: shrink, Run: deleteOne},
		{Name: OpMerge, Weight: 2, When: shrink, Run: merge},
		{Name: OpCreate, Weight: 6, When: grow, Run: create},
		{Name: OpInterleaved, Weight: 88, Run: func(ctx context.Context, s *Session) error { return interleaved(ctx, s, moreAfterEarly) }},
	}}
}

// Touches is the bench's latency workload: one customer change per operation (Touch), the
// customer and the new name taken from the tick (unpaced: from the worker's counter), so a
// paced run changes the customers round-robin.
func Touches() Mix {
	return Mix{Ops: []Op{{Name: OpTouch, Weight: 1, Run: func(ctx context.Context, s *Session) error {
		n := s.Tick
		if n == 0 {
			s.N++
			n = s.N
		}
		c, err := Touch(ctx, s.Conn, s.Customers.At(n), n)
		s.report(c)
		return err
	}}}}
}

// CapturedRenames is the fault suite's workload: each operation renames perTx distinct
// customers in one transaction, walking the set in a stride of 7,919 from the worker's counter
// (so concurrent workers rarely meet), fires the deferred capture triggers with SET CONSTRAINTS
// ALL IMMEDIATE and reads back the queue rows the transaction wrote (Commit.Rows: one per
// customer, else the operation fails) before its COMMIT.
func CapturedRenames(perTx int) Mix {
	return Mix{Ops: []Op{{Name: OpCapturedRenames, Weight: 1, Run: func(ctx context.Context, s *Session) error {
		ids := make([]int64, 0, perTx)
		for len(ids) < perTx {
			s.N++
			if id := s.Customers.At(s.N * 7919); !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		n := s.N
		return s.inTx(ctx, OpCapturedRenames, func(ctx context.Context, tx pgx.Tx, c *Commit) error {
			for _, id := range ids {
				if _, err := tx.Exec(ctx, renameSQL, id, fmt.Sprintf("n%d-%d", n, id)); err != nil {
					return fmt.Errorf("renaming customer %d: %w", id, err)
				}
			}
			if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
				return fmt.Errorf("firing the capture triggers: %w", err)
			}
			rows, err := tx.Query(ctx, `SELECT id, unique_id FROM data_sync_cust_pending_queue WHERE xmin = pg_current_xact_id()::xid ORDER BY id`)
			if err != nil {
				return fmt.Errorf("reading the transaction's queue rows: %w", err)
			}
			c.Rows, err = pgx.CollectRows(rows, pgx.RowToStructByPos[QueueRow])
			if err != nil {
				return fmt.Errorf("reading the transaction's queue rows: %w", err)
			}
			if len(c.Rows) != len(ids) {
				return fmt.Errorf("expected %d queue rows in the transaction, found %d", len(ids), len(c.Rows))
			}
			return nil
		})
	}}}}
}

// renameSQL is the smallest customer change: one column of one row.
const renameSQL = `UPDATE customer SET first_name = $2 WHERE customer_id = $1`

// Touch commits one customer change as one autocommit UPDATE (the deferred capture trigger
// queues the row at its commit), naming the customer "F<n>", then reads the queue row's id with
// currval in the same session. Commit.Sent is taken just before the UPDATE, so a change's
// latency measured from it includes its own durable commit.
func Touch(ctx context.Context, conn *pgx.Conn, customer, n int64) (Commit, error) {
	c := Commit{Op: OpTouch, Sent: time.Now()}
	_, c.Err = conn.Exec(ctx, renameSQL, customer, "F"+strconv.FormatInt(n, 10))
	c.Returned = time.Now()
	if c.Err != nil {
		return c, fmt.Errorf("updating customer %d: %w", customer, c.Err)
	}
	var id int64
	if err := conn.QueryRow(ctx, "SELECT currval('data_sync_queue_id_seq')").Scan(&id); err != nil {
		// The change committed; only its queue row is unknown.
		return c, fmt.Errorf("reading the queue row id: %w", err)
	}
	c.Rows = []QueueRow{{ID: id, Key: strconv.FormatInt(customer, 10)}}
	return c, nil
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Niklaus"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Wirth"}
	cities     = []string{"Springfield", "Riverside", "Fairview", "Greenville", "Madison", "Georgetown"}
)

func createSegments(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `INSERT INTO segment (segment_id, segment_name) VALUES (1, 'VIP'), (2, 'Newsletter')
		ON CONFLICT DO NOTHING`); err != nil {
		return fmt.Errorf("creating demo segments: %w", err)
	}
	return nil
}

// createOp is a sign-up; Run creates the starting customers with it too.
var createOp = Op{Name: OpCreate, Weight: 100, Run: create}

// create signs up a customer with a primary email and phone and a home address.
func create(ctx context.Context, s *Session) error {
	first, last := firstNames[s.Rand.IntN(len(firstNames))], lastNames[s.Rand.IntN(len(lastNames))]
	city := cities[s.Rand.IntN(len(cities))]
	var id int64
	err := s.inTx(ctx, OpCreate, func(ctx context.Context, tx pgx.Tx, _ *Commit) error {
		if err := tx.QueryRow(ctx, `INSERT INTO customer (first_name, last_name, retail_store_id) VALUES ($1, $2, '99999')
			RETURNING customer_id`, first, last).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO customer_email (customer_id, email_address, primary_flag) VALUES ($1, $2, true)`,
			id, fmt.Sprintf("%s.%s.%d@example.com", first, last, id)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO customer_phone (customer_id, phone_number, primary_flag) VALUES ($1, $2, true)`,
			id, fmt.Sprintf("+1555%07d", id%10000000)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO customer_address (customer_id, city) VALUES ($1, $2)`, id, city)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating a customer: %w", err)
	}
	s.Customers.Add(id)
	return nil
}

// updateSQL is a customer edit as CE's screens make it: a field and the time of the edit.
const updateSQL = `UPDATE customer SET first_name = $2, updated_at = now() WHERE customer_id = $1`

func update(ctx context.Context, s *Session) error {
	ids := s.Customers.Pick(s.Rand, 1)
	if len(ids) == 0 {
		return nil
	}
	if err := s.autocommit(ctx, OpUpdate, updateSQL, ids[0], firstNames[s.Rand.IntN(len(firstNames))]); err != nil {
		return fmt.Errorf("updating a customer: %w", err)
	}
	return nil
}

func card(ctx context.Context, s *Session) error {
	number := fmt.Sprintf("C%d-%d", time.Now().UnixNano(), s.Seq())
	ids := s.Customers.Pick(s.Rand, 1)
	if len(ids) == 0 {
		return nil
	}
	if err := s.autocommit(ctx, OpCard, `INSERT INTO card (card_number, customer_id, status, expiration_date)
		VALUES ($1, $2, 'ACTIVE', current_date + 730)`, number, ids[0]); err != nil {
		return fmt.Errorf("issuing a card: %w", err)
	}
	return nil
}

func segment(ctx context.Context, s *Session) error {
	ids := s.Customers.Pick(s.Rand, 1)
	if len(ids) == 0 {
		return nil
	}
	if err := s.autocommit(ctx, OpSegment, `INSERT INTO customer_segment (customer_id, segment_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		ids[0], 1+s.Rand.IntN(2)); err != nil {
		return fmt.Errorf("adding a customer to a segment: %w", err)
	}
	return nil
}

// transaction posts a till transaction: a sale, its tender and its tax.
func transaction(ctx context.Context, s *Session) error {
	seq := s.Seq()
	id := fmt.Sprintf("99901%d%06d", time.Now().UnixNano(), seq%1000000)
	ids := s.Customers.Pick(s.Rand, 1)
	if len(ids) == 0 {
		return nil
	}
	cust := ids[0]
	err := s.inTx(ctx, OpTransaction, func(ctx context.Context, tx pgx.Tx, _ *Commit) error {
		amount := float64(s.Rand.IntN(20000)) / 100
		if _, err := tx.Exec(ctx, `INSERT INTO retail_transaction (retail_transaction_id, customer_id, begin_datetime, end_datetime,
			operator_id, retail_location_id, subtotal, tax_total, total, transaction_sequence, transaction_status_code, workstation_id)
			VALUES ($1, $2, now(), now(), '101', '99901', $3, $3 * 0.06, $3 * 1.06, $4, 'DELIVERED', 2)`, id, cust, amount, seq); err != nil {
			return err
		}
		for i, typ := range []string{"Sale", "Tender", "Tax"} {
			if _, err := tx.Exec(ctx, `INSERT INTO line_item (retail_transaction_id, line_item_sequence, begin_date_timestamp,
				end_date_timestamp, line_item_tlog_sequence, line_item_type_code, extended_amount, cust_id)
				VALUES ($1, $2, now(), now(), $2, $3, $4, $5)`, id, i+1, typ, amount, cust); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("posting a transaction: %w", err)
	}
	return nil
}

// merge merges two live customers into a new one (merge_customers deletes both). Both leave
// the set before the merge is tried.
func merge(ctx context.Context, s *Session) error {
	ids := s.Customers.Pick(s.Rand, 2)
	if len(ids) < 2 {
		return nil
	}
	s.Customers.Forget(ids...)
	var merged int64
	err := s.inTx(ctx, OpMerge, func(ctx context.Context, tx pgx.Tx, c *Commit) error {
		if err := tx.QueryRow(ctx, `SELECT merge_customers($1)`, ids).Scan(&merged); err != nil {
			return err
		}
		c.Deleted = ids
		return nil
	})
	if err != nil {
		return fmt.Errorf("merging customers: %w", err)
	}
	s.Customers.Add(merged)
	return nil
}

// deleteOne deletes a live customer, which leaves the set before the delete is tried.
func deleteOne(ctx context.Context, s *Session) error {
	ids := s.Customers.Pick(s.Rand, 1)
	if len(ids) == 0 {
		return nil
	}
	s.Customers.Forget(ids...)
	err := s.inTx(ctx, OpDelete, func(ctx context.Context, tx pgx.Tx, c *Commit) error {
		tag, err := tx.Exec(ctx, `DELETE FROM customer WHERE customer_id = $1`, ids[0])
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			c.Deleted = ids
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting a customer: %w", err)
	}
	return nil
}

// interleaved is one transaction of 1-4 changes to one or two customers through different
// tables, some inside savepoints (half of those rolled back), some followed by SET CONSTRAINTS
// ALL IMMEDIATE (the deferred capture fires early, and the transaction stays open a moment).
func interleaved(ctx context.Context, s *Session, moreAfterEarly bool) error {
	ids := s.Customers.Pick(s.Rand, 1+s.Rand.IntN(2))
	if len(ids) == 0 {
		return nil
	}
	rng := s.Rand
	return s.inTx(ctx, OpInterleaved, func(ctx context.Context, tx pgx.Tx, c *Commit) error {
		var rolledBack, early, posted int
		for step := range 1 + rng.IntN(4) {
			id := ids[rng.IntN(len(ids))]
			sp := rng.IntN(3) == 0
			if sp {
				if _, err := tx.Exec(ctx, "SAVEPOINT s"+strconv.Itoa(step)); err != nil {
					return err
				}
			}
			tag := fmt.Sprintf("w%d-%d", s.Worker, s.Seq())
			var stmts []string
			var args [][]any
			switch rng.IntN(9) {
			case 0, 1:
				stmts, args = []string{updateSQL}, [][]any{{id, tag}}
			case 2:
				stmts, args = []string{`INSERT INTO card (card_number, customer_id, status, serial_number) VALUES ($1, $2, 'ACTIVE', $1)`}, [][]any{{"C-" + tag, id}}
			case 3:
				stmts, args = []string{`UPDATE card SET status = CASE status WHEN 'ACTIVE' THEN 'BLOCKED' ELSE 'ACTIVE' END, serial_number = $2
				WHERE card_number = (SELECT card_number FROM card WHERE customer_id = $1 ORDER BY card_number LIMIT 1)`}, [][]any{{id, tag}}
			case 4:
				stmts, args = []string{`INSERT INTO customer_segment (customer_id, segment_id) SELECT $1, segment_id FROM segment ORDER BY segment_id OFFSET $2 LIMIT 1 ON CONFLICT DO NOTHING`}, [][]any{{id, rng.IntN(6)}}
			case 5:
				stmts, args = []string{`DELETE FROM customer_segment WHERE customer_id = $1 AND segment_id = (SELECT segment_id FROM segment ORDER BY segment_id OFFSET $2 LIMIT 1)`}, [][]any{{id, rng.IntN(6)}}
			case 6:
				stmts, args = []string{`UPDATE customer_address SET city = $1 WHERE customer_id = $2`}, [][]any{{tag, id}}
			case 7:
				stmts, args = []string{`INSERT INTO customer_address (customer_id, city, address_type_code) VALUES ($1, $2, 'WORK')`}, [][]any{{id, tag}}
			case 8:
				amount := 1 + rng.IntN(500)
				stmts = []string{
					`INSERT INTO retail_transaction (retail_transaction_id, customer_id, posted_flag, subtotal, total) VALUES ($1, $2, true, $3, $3)`,
					`INSERT INTO line_item (retail_transaction_id, line_item_sequence, line_item_type_code, quantity, extended_amount) VALUES ($1, 1, 'Sale', 1, $2)`,
				}
				args = [][]any{{"T-" + tag, id, amount}, {"T-" + tag, amount}}
			}
			for i, st := range stmts {
				if _, err := tx.Exec(ctx, st, args[i]...); err != nil {
					return err
				}
			}
			if sp {
				if rng.IntN(2) == 0 {
					if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s"+strconv.Itoa(step)); err != nil {
						return err
					}
					rolledBack++
					continue
				} else if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT s"+strconv.Itoa(step)); err != nil {
					return err
				}
			}
			if len(stmts) == 2 {
				posted++
			}
			if rng.IntN(5) == 0 {
				// Fire the deferred capture now and keep the transaction open a little: another
				// worker may commit a change of the same customer in between.
				if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, float64(rng.IntN(30))/1000); err != nil {
					return err
				}
				early++
				if !moreAfterEarly {
					break
				}
				// Later statements of this transaction are deferred again, as usual.
				if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
					return err
				}
			}
		}
		c.Tally = map[string]int{TallySavepointsRolledBack: rolledBack, TallyEarlyCaptures: early, TallyPosted: posted}
		return nil
	})
}
