package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgconn"
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
		tag, err := conn.Exec(ctx, `INSERT INTO data_sync_config (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, rest[1], rest[2])
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Hint != "" {
				return fmt.Errorf("%s: %s", pgErr.Message, pgErr.Hint)
			}
			return fmt.Errorf("setting %s: %w", rest[1], err)
		}
		_ = tag
	}
	rows, err := conn.Query(ctx, `SELECT name, coalesce(value, '(not set)'), updated_at FROM data_sync_config ORDER BY
		array_position(ARRAY['DataSyncEnabled','DataSyncApiUrl','DataSyncTokenUrl','DataSyncCredentialMapName','DataSyncCredentialKeyName'], name), name`)
	if err != nil {
		return fmt.Errorf("reading data_sync_config (run cdc-relay install first?): %w", err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	for rows.Next() {
		var name, value string
		var at any
		if err := rows.Scan(&name, &value, &at); err != nil {
			return err
		}
		if rest[0] == "set" && name != canonicalName(rest[1]) {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, value)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}

// canonicalName matches a setting name the way data_sync_config_validate does (case-insensitively).
func canonicalName(n string) string {
	for _, k := range []string{"DataSyncEnabled", "DataSyncApiUrl", "DataSyncTokenUrl", "DataSyncCredentialMapName", "DataSyncCredentialKeyName", "DataSyncSnapshotMode"} {
		if equalFold(k, n) {
			return k
		}
	}
	return n
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
