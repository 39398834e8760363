package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "resync", Summary: "send existing customers or transactions again (resync customers|transactions ..., --status, --cancel ID)", Run: runResync})
}

const resyncUsage = `Usage:
  cdc-relay resync customers    --all | --customer ID ... | --segment ID | --changed-since TIMESTAMP
                                [--action update|create] [--rate N]
  cdc-relay resync transactions --all | --transaction ID ... | --since DATE [--rate N]
  cdc-relay resync --status
  cdc-relay resync --cancel ID

A resync is a request stored in data_sync_resync; the running relay queues it a page at a time
while the pending queues are drained (live changes first) and delivers each record with the
state it has when the relay moves it. Run it as the owner of the Data Sync tables.

--changed-since selects customers whose row or a child row says it changed since then:
customer created_at/updated_at, customer_segment added_at, card created_at, customer_note
create_date, and their retail transactions' create_date/update_date (by day). Addresses,
phones, emails and the other child tables carry no timestamp. A TIMESTAMP or DATE without a
time zone is UTC.

Flags:
`

// idList is a repeatable flag that also takes comma-separated values.
type idList []string

func (l *idList) String() string { return strings.Join(*l, ",") }
func (l *idList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty ID")
		}
		*l = append(*l, s)
	}
	return nil
}

func runResync(ctx context.Context, env Env, args []string) error {
	object := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		object, args = args[0], args[1:]
	}
	fs := newFlagSet(env, "resync")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), resyncUsage)
		fs.PrintDefaults()
	}
	db := databaseFlag(fs, env)
	all := fs.Bool("all", false, "every existing customer (or transaction)")
	var customers, transactions idList
	fs.Var(&customers, "customer", "customer ID to send (repeatable, or comma-separated)")
	fs.Var(&transactions, "transaction", "retail transaction ID to send (repeatable, or comma-separated)")
	segment := fs.String("segment", "", "every customer in this segment ID")
	changedSince := fs.String("changed-since", "", "customers changed at or after this instant (2006-01-02T15:04:05Z07:00, or a date)")
	since := fs.String("since", "", "transactions with a business date on or after this date (2006-01-02)")
	action := fs.String("action", "update", "customers: update (CUSTOMERMOD) or create (CUSTOMERCRE)")
	rateFlag := fs.Int("rate", 0, "rows per second at most (0: as fast as the relay delivers)")
	showStatus := fs.Bool("status", false, "show every resync request: progress, rate, time left")
	cancel := fs.Int64("cancel", 0, "cancel the resync request with this ID (rows already queued are still delivered)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch {
	case object == "" && *showStatus && !set["cancel"]:
		if len(set) > 1+boolInt(set["database-url"]) {
			return fmt.Errorf("%w: --status takes no other flag", ErrUsage)
		}
		return resyncStatus(ctx, env, *db)
	case object == "" && set["cancel"]:
		if len(set) > 1+boolInt(set["database-url"]) {
			return fmt.Errorf("%w: --cancel takes no other flag", ErrUsage)
		}
		return resyncCancel(ctx, env, *db, *cancel)
	case object == "":
		return fmt.Errorf("%w: say what to resync: cdc-relay resync customers|transactions ..., --status or --cancel ID (see cdc-relay resync -h)", ErrUsage)
	case set["status"] || set["cancel"]:
		return fmt.Errorf("%w: --status and --cancel go alone: cdc-relay resync --status", ErrUsage)
	}
	req, err := resyncSelection(object, set, *all, customers, transactions, *segment, *changedSince, *since, *action)
	if err != nil {
		return err
	}
	if set["rate"] {
		if *rateFlag < 1 {
			return fmt.Errorf("%w: --rate %d: give rows per second, 1 or more", ErrUsage, *rateFlag)
		}
		req.Rate = rateFlag
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id, estimate, err := relay.NewStore(conn).StartResync(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "resync %d started: %d %s(s) selected; the running relay sends them after any live changes\n", id, estimate, req.Object)
	fmt.Fprintln(env.Stdout, "follow it with: cdc-relay resync --status")
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// resyncSelection checks the flags of `resync customers|transactions` and builds the request.
func resyncSelection(object string, set map[string]bool, all bool, customers, transactions idList, segment, changedSince, since, action string) (relay.ResyncRequest, error) {
	var req relay.ResyncRequest
	var allowed []string
	switch object {
	case "customers", "customer":
		req.Object, allowed = "customer", []string{"all", "customer", "segment", "changed-since"}
		switch strings.ToLower(action) {
		case "update":
			req.Action = "UPDATE"
		case "create":
			req.Action = "CREATE"
		default:
			return req, fmt.Errorf("%w: --action %q: use update (CUSTOMERMOD) or create (CUSTOMERCRE)", ErrUsage, action)
		}
	case "transactions", "transaction":
		req.Object, req.Action, allowed = "transaction", "CREATE", []string{"all", "transaction", "since"}
		if set["action"] {
			return req, fmt.Errorf("%w: transactions are always sent as POSTRNCRE: drop --action", ErrUsage)
		}
	default:
		return req, fmt.Errorf("%w: unknown object %q: use resync customers or resync transactions", ErrUsage, object)
	}
	var given []string
	for _, f := range []string{"all", "customer", "transaction", "segment", "changed-since", "since"} {
		if !set[f] {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == f
		}
		if !ok {
			return req, fmt.Errorf("%w: --%s does not select %ss: use one of --%s", ErrUsage, f, req.Object, strings.Join(allowed, ", --"))
		}
		given = append(given, "--"+f)
	}
	switch {
	case len(given) == 0:
		return req, fmt.Errorf("%w: no selection: give one of --%s (--all for every %s)", ErrUsage, strings.Join(allowed, ", --"), req.Object)
	case len(given) > 1:
		return req, fmt.Errorf("%w: one selection per resync, got %s: start one resync for each", ErrUsage, strings.Join(given, " and "))
	}
	switch {
	case set["all"]:
		if !all {
			return req, fmt.Errorf("%w: --all=false selects nothing", ErrUsage)
		}
		req.All = true
	case set["customer"]:
		for _, s := range customers {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil || id < 1 {
				return req, fmt.Errorf("%w: --customer %q: a customer ID is a positive whole number", ErrUsage, s)
			}
			req.CustomerIDs = append(req.CustomerIDs, id)
		}
	case set["transaction"]:
		req.TransactionIDs = transactions
	case set["segment"]:
		id, err := strconv.ParseInt(segment, 10, 64)
		if err != nil {
			return req, fmt.Errorf("%w: --segment %q: a segment ID is a whole number", ErrUsage, segment)
		}
		req.SegmentID = &id
	case set["changed-since"]:
		t, err := parseInstant(changedSince)
		if err != nil {
			return req, fmt.Errorf("%w: --changed-since %q: %v", ErrUsage, changedSince, err)
		}
		req.ChangedSince = &t
	case set["since"]:
		d, err := time.Parse(time.DateOnly, since)
		if err != nil {
			return req, fmt.Errorf("%w: --since %q: not a date: use YYYY-MM-DD, for example 2026-11-24", ErrUsage, since)
		}
		req.SinceDate = &d
	}
	return req, nil
}

// parseInstant reads an RFC 3339 timestamp, with or without a zone (UTC then), or a date.
func parseInstant(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a timestamp: use 2026-11-24T09:00:00Z, 2026-11-24T09:00:00+01:00 or 2026-11-24 (UTC without a zone)")
}

// printActiveResyncs adds the running and pending resync requests to `cdc-relay status`.
func printActiveResyncs(ctx context.Context, w io.Writer, store *relay.Store) {
	list, err := store.ResyncRequests(ctx, relay.ActiveResyncs)
	switch {
	case err != nil:
		fmt.Fprintf(w, "\nResync requests: %v\n", err)
	case len(list) == 0:
		fmt.Fprintln(w, "\nResync requests: none active")
	default:
		fmt.Fprintln(w, "\nResync requests:")
		printResyncStatus(w, list)
	}
}

func resyncStatus(ctx context.Context, env Env, dbURL string) error {
	conn, err := connectDB(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	list, err := relay.NewStore(conn).ResyncRequests(ctx, relay.AllResyncs)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(env.Stdout, "no resync requests (start one with cdc-relay resync customers --all)")
		return nil
	}
	printResyncStatus(env.Stdout, list)
	return nil
}

func printResyncStatus(w io.Writer, list []relay.ResyncStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOBJECT\tACTION\tSELECTION\tSTATE\tPROGRESS\tQUEUED\tRATE\tLIMIT\tLEFT\tERROR")
	for _, r := range list {
		progress := fmt.Sprintf("%d", r.Selected)
		if r.Estimate != nil {
			progress += fmt.Sprintf("/%d", *r.Estimate)
		}
		if r.Percent != nil {
			progress += fmt.Sprintf(" (%.1f%%)", *r.Percent)
		}
		rate, limit, left, lastErr := "-", "-", "-", ""
		if r.RowsPerSec != nil {
			rate = fmt.Sprintf("%.0f/s", *r.RowsPerSec)
		}
		if r.RateLimit != nil {
			limit = fmt.Sprintf("%d/s", *r.RateLimit)
		}
		if r.SecondsLeft != nil {
			left = (time.Duration(*r.SecondsLeft) * time.Second).String()
		}
		if r.LastError != nil {
			lastErr = *r.LastError
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.ID, r.Object, r.Action,
			safetext.Clean(trimSelection(r.Selection)), r.State, progress, r.Queued, rate, limit, left, safetext.Clean(lastErr))
	}
	tw.Flush()
}

// trimSelection keeps a long list of IDs to one line.
func trimSelection(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

func resyncCancel(ctx context.Context, env Env, dbURL string, id int64) error {
	conn, err := connectDB(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	cancelled, state, err := relay.NewStore(conn).CancelResync(ctx, id)
	switch {
	case err != nil:
		return err
	case state == nil:
		return fmt.Errorf("no resync request %d (cdc-relay resync --status lists them)", id)
	case !cancelled:
		return fmt.Errorf("resync request %d is already %s", id, *state)
	}
	fmt.Fprintf(env.Stdout, "resync %d cancelled; rows it already queued are still delivered\n", id)
	return nil
}

// demoResyncAfter is when (in progress lines) `demo` starts a resync of every customer.
const demoResyncAfter = 5

// demoResync shows a resync in the demo: the first call starts one for every customer, each
// call prints the progress of the demo's resync requests.
func demoResync(ctx context.Context, w io.Writer, store *relay.Store, start bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if start {
		if _, _, err := store.StartResync(ctx, relay.ResyncRequest{Object: "customer", Action: "UPDATE", All: true}); err != nil {
			fmt.Fprintf(w, "resync: %v\n", err)
			return
		}
		fmt.Fprintln(w, "started a resync of every customer (cdc-relay resync customers --all): live changes keep priority")
	}
	list, err := store.ResyncRequests(ctx, relay.RecentResyncs)
	if err != nil {
		return
	}
	for _, r := range list {
		line := fmt.Sprintf("resync %d (%ss, %s): %s %d", r.ID, r.Object, safetext.Clean(trimSelection(r.Selection)), r.State, r.Selected)
		if r.Estimate != nil {
			line += fmt.Sprintf("/%d", *r.Estimate)
		}
		if r.RowsPerSec != nil {
			line += fmt.Sprintf(" | %.0f rows/s", *r.RowsPerSec)
		}
		if r.SecondsLeft != nil {
			line += fmt.Sprintf(" | %s left", time.Duration(*r.SecondsLeft*float64(time.Second)).Round(time.Second))
		}
		fmt.Fprintln(w, line)
	}
}
