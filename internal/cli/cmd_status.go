package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/cdc-relay/cdc-relay/internal/status"
)

func init() {
	register(&Command{Name: "status", Summary: "queue depths, oldest undelivered change, failing rows, replication slot lag", Run: runStatus})
}

func runStatus(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "status")
	db := databaseFlag(fs, env)
	asJSON := fs.Bool("json", false, "print one JSON object")
	limit := fs.Int("failing", 10, "failing rows to list per queue")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	pool, err := poolDB(ctx, *db)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := status.Collect(ctx, pool, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	w := env.Stdout
	fmt.Fprintf(w, "Data Sync enabled: %v   snapshot at move: %v   wal_level: %s\n", rep.Enabled, rep.Settings.SnapshotAtMove, rep.WALLevel)
	fmt.Fprintf(w, "API URL: %s\nToken URL: %s\nCredentials: map %s, key %s\n\n", orNotSet(rep.Settings.APIURL), orNotSet(rep.Settings.TokenURL),
		rep.Settings.CredentialMapName, rep.Settings.CredentialKeyName)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tSTAGE\tROWS\tOLDEST AGE\tFAILING\tLAST ERROR")
	for _, q := range rep.Queues {
		age := "-"
		if q.OldestAgeSeconds != nil {
			age = fmt.Sprintf("%.1fs", *q.OldestAgeSeconds)
		}
		last := ""
		if q.LastError != nil {
			last = *q.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", q.Queue, q.Stage, q.Rows, age, q.FailingRows, last)
	}
	tw.Flush()
	if len(rep.Failing) > 0 {
		fmt.Fprintln(w, "\nFailing rows:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "QUEUE\tID\tUNIQUE_ID\tACTION\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
		for _, f := range rep.Failing {
			next, last, key := "-", "", "null"
			if f.NextAttempt != nil {
				next = f.NextAttempt.Format("15:04:05")
			}
			if f.LastError != nil {
				last = *f.LastError
			}
			if f.UniqueID != nil {
				key = *f.UniqueID
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", f.Queue, f.ID, key, f.Action, f.Attempts, next, last)
		}
		tw.Flush()
	}
	printActiveResyncs(ctx, w, pool) // cmd_resync.go
	fmt.Fprintln(w, "\nReplication slots:")
	if len(rep.Slots) == 0 {
		fmt.Fprintln(w, "  none (no relay connected; its slot is temporary, so nothing retains WAL)")
	}
	for _, s := range rep.Slots {
		fmt.Fprintf(w, "  %s  database %s  active %v  temporary %v  lag %d bytes\n", s.Name, s.Database, s.Active, s.Temporary, s.LagBytes)
	}
	return nil
}

func orNotSet(s string) string {
	if s == "" {
		return "(not set)"
	}
	return s
}
