package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "dead-letters", Summary: "list rows the relay gave up on (and rows held behind them)", Run: runDeadLetters})
	register(&Command{Name: "requeue", Summary: "put dead letters back in the pending queue (--id N | --customer ID | --transaction ID | --all)", Run: runRequeue})
}

func runDeadLetters(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "dead-letters")
	db := databaseFlag(fs, env)
	limit := fs.Int("limit", 100, "rows to list per queue")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tID\tUNIQUE_ID\tACTION\tREASON\tATTEMPTS\tSTATUS\tFAILED AT\tERROR")
	total := 0
	for _, q := range relay.Queues() {
		rows, err := conn.Query(ctx, `SELECT id, coalesce(unique_id, 'null'), coalesce(action, ''), reason, attempts,
			coalesce(last_status::text, '-'), failed_at, coalesce(last_error, '') FROM `+q.Failed+` ORDER BY id LIMIT $1`, *limit)
		if err != nil {
			return fmt.Errorf("reading %s: %w", q.Failed, err)
		}
		for rows.Next() {
			var id int64
			var key, action, reason, st, msg string
			var attempts int
			var at time.Time
			if err := rows.Scan(&id, &key, &action, &reason, &attempts, &st, &at, &msg); err != nil {
				rows.Close()
				return err
			}
			total++
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", q.Name, id, safetext.Clean(key), safetext.Clean(action),
				safetext.Clean(reason), attempts, safetext.Clean(st), at.Format(time.RFC3339), safetext.Clean(msg))
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	tw.Flush()
	fmt.Fprintf(env.Stdout, "%d dead-letter rows (requeue with: cdc-relay requeue --customer ID | --id N | --all)\n", total)
	return nil
}

func runRequeue(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "requeue")
	db := databaseFlag(fs, env)
	id := fs.Int64("id", 0, "requeue this dead letter and the rows held behind it")
	customer := fs.String("customer", "", "requeue every dead letter of this customer id")
	trn := fs.String("transaction", "", "requeue every dead letter of this retail transaction id")
	all := fs.Bool("all", false, "requeue every dead letter")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	chosen := 0
	for _, b := range []bool{*id != 0, *customer != "", *trn != "", *all} {
		if b {
			chosen++
		}
	}
	if chosen != 1 {
		return fmt.Errorf("%w: choose exactly one of --id, --customer, --transaction, --all", ErrUsage)
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The rows are chosen here and moved by data_sync_requeue (SECURITY DEFINER), which also
	// takes the rows held behind each one, so this runs as the relay's least-privileged role too.
	var n int64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, q := range relay.Queues() {
			var where string
			var arg any
			switch {
			case *all:
				where, arg = "$1::bool", true
			case *id != 0:
				where, arg = "id = $1", *id
			case *customer != "":
				if q.Name != "cust" {
					continue
				}
				where, arg = "unique_id = $1", *customer
			default:
				if q.Name != "trn" {
					continue
				}
				where, arg = "unique_id = $1", *trn
			}
			var moved int64
			if err := tx.QueryRow(ctx, `SELECT data_sync_requeue($2, ARRAY(SELECT id FROM `+q.Failed+` WHERE `+where+`))`,
				arg, q.Name).Scan(&moved); err != nil {
				return fmt.Errorf("requeueing from %s: %w", q.Failed, err)
			}
			n += moved
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "requeued %d rows into the pending queues\n", n)
	return nil
}
