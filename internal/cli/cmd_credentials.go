package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
)

func init() {
	register(&Command{
		Name:    "credentials",
		Summary: "store or show the OAuth2 client id and secret (credential store map)",
		Run:     runCredentials,
	})
}

// maxSecretBytes bounds what `credentials set` reads from stdin or --client-secret-file.
const maxSecretBytes = 64 << 10

func runCredentials(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing subcommand: use cdc-relay credentials set or cdc-relay credentials show", ErrUsage)
	}
	switch args[0] {
	case "set":
		return runCredentialsSet(ctx, env, args[1:])
	case "show":
		return runCredentialsShow(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.Stdout, "Usage: cdc-relay credentials set --client-id ID [--client-secret-file F] [--map NAME] [--key NAME] [--path P]\n       cdc-relay credentials show [--map NAME] [--key NAME] [--path P]")
		return nil
	default:
		return fmt.Errorf("%w: unknown subcommand %q: use set or show", ErrUsage, args[0])
	}
}

// storeFlags are the flags shared by set and show.
type storeFlags struct {
	mapName, key, path *string
}

func addStoreFlags(fs *flag.FlagSet, env Env) storeFlags {
	return storeFlags{
		mapName: fs.String("map", "", "credential map name (default DataSyncCredentialMapName from the database, else "+credentials.DefaultMapName+")"),
		key:     fs.String("key", "", "credential key name (default DataSyncCredentialKeyName from the database, else "+credentials.DefaultKeyName+")"),
		path:    fs.String("path", credentials.DefaultPath(env.Getenv), "credential store file"),
	}
}

// names returns the map and key: the flags, else the database's Data Sync settings when a
// database URL is given, else the defaults.
func (f storeFlags) names(ctx context.Context, dbURL string) (string, string, error) {
	mapName, key := *f.mapName, *f.key
	if (mapName == "" || key == "") && dbURL != "" {
		dbMap, dbKey, err := namesFromDatabase(ctx, dbURL)
		if err != nil {
			return "", "", err
		}
		if mapName == "" {
			mapName = dbMap
		}
		if key == "" {
			key = dbKey
		}
	}
	if mapName == "" {
		mapName = credentials.DefaultMapName
	}
	if key == "" {
		key = credentials.DefaultKeyName
	}
	return mapName, key, nil
}

// namesFromDatabase reads DataSyncCredentialMapName and DataSyncCredentialKeyName.
func namesFromDatabase(ctx context.Context, dbURL string) (string, string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", "", fmt.Errorf("reading the credential map and key names from the database: %w (or pass --map and --key)", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT name, value FROM data_sync_config")
	if err != nil {
		return "", "", fmt.Errorf("reading data_sync_config: %w (install cdc-relay first, or pass --map and --key)", err)
	}
	var mapName, key string
	for rows.Next() {
		var name string
		var value *string
		if err := rows.Scan(&name, &value); err != nil {
			return "", "", fmt.Errorf("reading data_sync_config: %w", err)
		}
		if value == nil {
			continue
		}
		switch strings.ToLower(name) {
		case "datasynccredentialmapname":
			mapName = *value
		case "datasynccredentialkeyname":
			key = *value
		}
	}
	if err := rows.Err(); err != nil {
		return "", "", fmt.Errorf("reading data_sync_config: %w (install cdc-relay first, or pass --map and --key)", err)
	}
	return mapName, key, nil
}

func runCredentialsSet(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "credentials set")
	clientID := fs.String("client-id", "", "OAuth2 client id (required)")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (default: first line of stdin)")
	sf := addStoreFlags(fs, env)
	dbURL := databaseFlag(fs, env)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if strings.TrimSpace(*clientID) == "" {
		return fmt.Errorf("%w: --client-id is required (CE's Save needs both the client id and the secret)", ErrUsage)
	}
	secret, err := readSecret(env.Stdin, *secretFile)
	if err != nil {
		return err
	}
	mapName, key, err := sf.names(ctx, *dbURL)
	if err != nil {
		return err
	}
	if err := credentials.Save(*sf.path, mapName, key, credentials.Credential{ClientID: strings.TrimSpace(*clientID), ClientSecret: secret}); err != nil {
		return fmt.Errorf("saving the credential: %w", err)
	}
	fmt.Fprintf(env.Stdout, "saved client id %q and secret (%d chars) as map %q key %q in %s\n", strings.TrimSpace(*clientID), len(secret), mapName, key, *sf.path)
	return nil
}

// readSecret returns the trimmed first line of the secret file, or of stdin when no file is
// given. An empty secret is refused.
func readSecret(stdin io.Reader, file string) (string, error) {
	src, where := stdin, "stdin"
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("reading --client-secret-file: %w", err)
		}
		defer f.Close()
		src, where = f, file
	}
	if src == nil {
		src = strings.NewReader("")
	}
	line, err := bufio.NewReaderSize(io.LimitReader(src, maxSecretBytes), 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the client secret from %s: %w", where, err)
	}
	secret := strings.TrimSpace(line)
	if secret == "" {
		return "", fmt.Errorf("%w: %w: no client secret on %s: pipe it in (printf %%s \"$SECRET\" | cdc-relay credentials set ...) or pass --client-secret-file", ErrUsage, credentials.ErrIncomplete, where)
	}
	return secret, nil
}

func runCredentialsShow(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "credentials show")
	sf := addStoreFlags(fs, env)
	dbURL := databaseFlag(fs, env)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	mapName, key, err := sf.names(ctx, *dbURL)
	if err != nil {
		return err
	}
	c, source, err := credentials.Resolve(env.Getenv, *sf.path, mapName, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "source: %s\npath: %s\nmap: %s\nkey: %s\nclient id: %s\nclient secret: set (%d chars)\n",
		source, *sf.path, mapName, key, c.ClientID, len(c.ClientSecret))
	return nil
}
