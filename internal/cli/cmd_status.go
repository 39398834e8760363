package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/internal/status"
	"github.com/cdc-relay/cdc-relay/relay"
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
	// Every string below comes from the database (settings, queue rows, receiver answers kept
	// as last_error): printed through safetext.Clean so none can drive the terminal.
	w, c := env.Stdout, safetext.Clean
	fmt.Fprintf(w, "Data Sync enabled: %v   snapshot at move: %v   wal_level: %s\n", rep.Enabled, rep.Settings.SnapshotAtMove, c(rep.WALLevel))
	fmt.Fprintf(w, "API URL: %s\nToken URL: %s\nCredentials: map %s, key %s\n\n", c(orNotSet(rep.Settings.APIURL)), c(orNotSet(rep.Settings.TokenURL)),
		c(rep.Settings.CredentialMapName), c(rep.Settings.CredentialKeyName))
	if warn := credentialWarning(env, rep.Settings.CredentialMapName, rep.Settings.CredentialKeyName); warn != "" {
		fmt.Fprintf(w, "WARNING: %s\n\n", c(warn))
	}
	switch l := rep.Leader; {
	case l.Holder == nil || l.LeaseUntil == nil || l.LeaseUntil.Before(time.Now()):
		fmt.Fprintf(w, "Leader: none (no relay delivers now)\n")
	default:
		fmt.Fprintf(w, "Leader: %s since %s (epoch %d)\n", c(*l.Holder), l.Since.UTC().Format(time.RFC3339), l.Epoch)
		if l.ConcurrencyLimit != nil && l.ConcurrencyMax != nil {
			mode := "fixed by --concurrency; halved on 429/503"
			if l.ConcurrencyAdaptive != nil && *l.ConcurrencyAdaptive {
				mode = "adaptive, --max-concurrency"
			}
			fmt.Fprintf(w, "Requests in flight: limit %d of at most %d (%s)\n", *l.ConcurrencyLimit, *l.ConcurrencyMax, mode)
		}
	}
	if l := rep.Leader; l.EndpointFailingSince != nil {
		fmt.Fprintf(w, "Endpoint failing: %s since %s (delivery paused and probed; nothing is dead-lettered meanwhile)\n",
			c(deref(l.EndpointError)), l.EndpointFailingSince.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(w)
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", c(q.Queue), c(q.Stage), q.Rows, age, q.FailingRows, c(last))
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
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", c(f.Queue), f.ID, c(key), c(f.Action), f.Attempts, next, c(last))
		}
		tw.Flush()
	}
	printActiveResyncs(ctx, w, relay.NewStore(pool)) // cmd_resync.go
	fmt.Fprintln(w, "\nReplication slots:")
	if len(rep.Slots) == 0 {
		fmt.Fprintln(w, "  none (no relay connected; its slot is temporary, so nothing retains WAL)")
	}
	for _, s := range rep.Slots {
		fmt.Fprintf(w, "  %s  database %s  active %v  temporary %v  lag %d bytes\n", c(s.Name), c(s.Database), s.Active, s.Temporary, s.LagBytes)
	}
	return nil
}

func orNotSet(s string) string {
	if s == "" {
		return "(not set)"
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
