// Package load writes realistic CE activity (customers, cards, segments, posted transactions,
// merges and deletes) through the capture triggers, at a steady rate. `cdc-relay demo` shows
// the relay with it and `cdc-relay load` drives a staging database with it.
package load

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes the generator.
type Config struct {
	// Rate is operations (CE transactions) per second; default 50.
	Rate float64
	// Customers is how many customers are created before the steady load; default 100.
	Customers int
	// Duration stops the load after this long; 0 runs until ctx is cancelled.
	Duration time.Duration
	// Seed makes the sequence of operations repeatable; 0 picks one.
	Seed uint64
}

// Counts reports what was written, by operation.
type Counts struct {
	Creates, Updates, Cards, Segments, Transactions, Merges, Deletes atomic.Int64
}

// Total is the number of operations written.
func (c *Counts) Total() int64 {
	return c.Creates.Load() + c.Updates.Load() + c.Cards.Load() + c.Segments.Load() + c.Transactions.Load() + c.Merges.Load() + c.Deletes.Load()
}

// Generator writes CE activity.
type Generator struct {
	cfg    Config
	db     *pgxpool.Pool
	rnd    *rand.Rand
	ids    []int64
	seq    int64
	Counts Counts
}

// New returns a Generator writing to db.
func New(cfg Config, db *pgxpool.Pool) *Generator {
	if cfg.Rate <= 0 {
		cfg.Rate = 50
	}
	if cfg.Customers <= 0 {
		cfg.Customers = 100
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	return &Generator{cfg: cfg, db: db, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Run writes the initial customers then the steady load until ctx ends or Duration passes;
// it returns nil then.
func (g *Generator) Run(ctx context.Context) error {
	if g.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Duration)
		defer cancel()
	}
	if _, err := g.db.Exec(ctx, `INSERT INTO segment (segment_id, segment_name) VALUES (1, 'VIP'), (2, 'Newsletter')
		ON CONFLICT DO NOTHING`); err != nil {
		return ignoreDone(ctx, fmt.Errorf("creating demo segments: %w", err))
	}
	for i := 0; i < g.cfg.Customers; i++ {
		if err := g.create(ctx); err != nil {
			return ignoreDone(ctx, err)
		}
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / g.cfg.Rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := g.step(ctx); err != nil {
			return ignoreDone(ctx, err)
		}
	}
}

func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (g *Generator) pick() int64 { return g.ids[g.rnd.IntN(len(g.ids))] }

// step writes one operation, chosen with CE-like frequencies.
func (g *Generator) step(ctx context.Context) error {
	switch p := g.rnd.IntN(1000); {
	case p < 100 || len(g.ids) < 4:
		return g.create(ctx)
	case p < 450:
		return g.update(ctx)
	case p < 550:
		return g.card(ctx)
	case p < 650:
		return g.segment(ctx)
	case p < 990:
		return g.transaction(ctx)
	case p < 995:
		return g.merge(ctx)
	default:
		return g.delete(ctx)
	}
}

var firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Niklaus"}
var lastNames = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Wirth"}

func (g *Generator) create(ctx context.Context) error {
	var id int64
	err := pgx.BeginFunc(ctx, g.db, func(tx pgx.Tx) error {
		first, last := firstNames[g.rnd.IntN(len(firstNames))], lastNames[g.rnd.IntN(len(lastNames))]
		if err := tx.QueryRow(ctx, `INSERT INTO customer (first_name, last_name, retail_store_id) VALUES ($1, $2, '99999')
			RETURNING customer_id`, first, last).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO customer_email (customer_id, email_address, primary_flag) VALUES ($1, $2, true)`,
			id, fmt.Sprintf("%s.%s.%d@example.com", first, last, id)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO customer_phone (customer_id, phone_number, primary_flag) VALUES ($1, $2, true)`,
			id, fmt.Sprintf("+1555%07d", id%10000000))
		return err
	})
	if err != nil {
		return fmt.Errorf("creating a customer: %w", err)
	}
	g.ids = append(g.ids, id)
	g.Counts.Creates.Add(1)
	return nil
}

func (g *Generator) update(ctx context.Context) error {
	_, err := g.db.Exec(ctx, `UPDATE customer SET first_name = $2, updated_at = now() WHERE customer_id = $1`,
		g.pick(), firstNames[g.rnd.IntN(len(firstNames))])
	if err != nil {
		return fmt.Errorf("updating a customer: %w", err)
	}
	g.Counts.Updates.Add(1)
	return nil
}

func (g *Generator) card(ctx context.Context) error {
	g.seq++
	_, err := g.db.Exec(ctx, `INSERT INTO card (card_number, customer_id, status, expiration_date)
		VALUES ($1, $2, 'ACTIVE', current_date + 730)`, fmt.Sprintf("C%d-%d", time.Now().UnixNano(), g.seq), g.pick())
	if err != nil {
		return fmt.Errorf("issuing a card: %w", err)
	}
	g.Counts.Cards.Add(1)
	return nil
}

func (g *Generator) segment(ctx context.Context) error {
	_, err := g.db.Exec(ctx, `INSERT INTO customer_segment (customer_id, segment_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		g.pick(), 1+g.rnd.IntN(2))
	if err != nil {
		return fmt.Errorf("adding a customer to a segment: %w", err)
	}
	g.Counts.Segments.Add(1)
	return nil
}

func (g *Generator) transaction(ctx context.Context) error {
	g.seq++
	id := fmt.Sprintf("99901%d%06d", time.Now().UnixNano(), g.seq%1000000)
	cust := g.pick()
	err := pgx.BeginFunc(ctx, g.db, func(tx pgx.Tx) error {
		amount := float64(g.rnd.IntN(20000)) / 100
		if _, err := tx.Exec(ctx, `INSERT INTO retail_transaction (retail_transaction_id, customer_id, begin_datetime, end_datetime,
			operator_id, retail_location_id, subtotal, tax_total, total, transaction_sequence, transaction_status_code, workstation_id)
			VALUES ($1, $2, now(), now(), '101', '99901', $3, $3 * 0.06, $3 * 1.06, $4, 'DELIVERED', 2)`, id, cust, amount, g.seq); err != nil {
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
	g.Counts.Transactions.Add(1)
	return nil
}

func (g *Generator) merge(ctx context.Context) error {
	a, b := g.pick(), g.pick()
	if a == b {
		return g.update(ctx)
	}
	var merged int64
	if err := g.db.QueryRow(ctx, `SELECT merge_customers($1)`, []int64{a, b}).Scan(&merged); err != nil {
		return fmt.Errorf("merging customers: %w", err)
	}
	g.remove(a)
	g.remove(b)
	g.ids = append(g.ids, merged)
	g.Counts.Merges.Add(1)
	return nil
}

func (g *Generator) delete(ctx context.Context) error {
	id := g.pick()
	if _, err := g.db.Exec(ctx, `DELETE FROM customer WHERE customer_id = $1`, id); err != nil {
		return fmt.Errorf("deleting a customer: %w", err)
	}
	g.remove(id)
	g.Counts.Deletes.Add(1)
	return nil
}

func (g *Generator) remove(id int64) {
	for i, v := range g.ids {
		if v == id {
			g.ids[i] = g.ids[len(g.ids)-1]
			g.ids = g.ids[:len(g.ids)-1]
			return
		}
	}
}
