package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "config", Summary: "show or set the Data Sync settings (config show | config set NAME VALUE)", Run: runConfig})
}

func runConfig(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "config")
	db := databaseFlag(fs, env)
	if err := parse(fs, args, 3); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 || (rest[0] == "show" && len(rest) != 1) || (rest[0] == "set" && len(rest) != 3) || (rest[0] != "show" && rest[0] != "set") {
		return fmt.Errorf("%w: use config show, or config set NAME VALUE", ErrUsage)
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if rest[0] == "set" {
		// The database validates and canonicalises the name and value (data_sync_config_validate);
		// what it stored is what is printed.
		var name, value string
		err := conn.QueryRow(ctx, `INSERT INTO data_sync_config (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value
			RETURNING name, coalesce(value, '(not set)')`, rest[1], rest[2]).Scan(&name, &value)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Hint != "" {
				return fmt.Errorf("%s: %s", safetext.Clean(pgErr.Message), safetext.Clean(pgErr.Hint))
			}
			return fmt.Errorf("setting %s: %w", safetext.Clean(rest[1]), err)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\t%s\n", name, safetext.Clean(value))
		return tw.Flush()
	}
	order := make([]string, len(relay.SettingDefs))
	for i, d := range relay.SettingDefs {
		order[i] = d.Name
	}
	rows, err := conn.Query(ctx, `SELECT name, coalesce(value, '(not set)') FROM data_sync_config
		ORDER BY array_position($1::text[], name), name`, order)
	if err != nil {
		return fmt.Errorf("reading data_sync_config (run cdc-relay install first?): %w", err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, safetext.Clean(value))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}
