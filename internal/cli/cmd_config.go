package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

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
	store := relay.NewStore(conn)
	var list []relay.SettingValue
	if rest[0] == "set" {
		// The database validates and canonicalises the name and value (data_sync_config_validate);
		// what it stored is what is printed.
		v, err := store.SetSetting(ctx, rest[1], rest[2])
		if err != nil {
			return err
		}
		list = []relay.SettingValue{v}
	} else if list, err = store.SettingValues(ctx); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	for _, v := range list {
		fmt.Fprintf(tw, "%s\t%s\n", v.Name, safetext.Clean(v.Value))
	}
	return tw.Flush()
}
