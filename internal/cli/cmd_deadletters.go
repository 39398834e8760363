package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

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
	list, err := relay.NewStore(conn).DeadLetters(ctx, *limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tID\tUNIQUE_ID\tACTION\tREASON\tATTEMPTS\tSTATUS\tFAILED AT\tERROR")
	for _, d := range list {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Queue, d.ID, safetext.Clean(d.UniqueID), safetext.Clean(d.Action),
			safetext.Clean(d.Reason), d.Attempts, safetext.Clean(d.Status), d.FailedAt.Format(time.RFC3339), safetext.Clean(d.Error))
	}
	tw.Flush()
	fmt.Fprintf(env.Stdout, "%d dead-letter rows (requeue with: cdc-relay requeue --customer ID | --id N | --all)\n", len(list))
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
	n, err := relay.NewStore(conn).Requeue(ctx, relay.RequeueSelection{All: *all, ID: *id, Customer: *customer, Transaction: *trn})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "requeued %d rows into the pending queues\n", n)
	return nil
}
