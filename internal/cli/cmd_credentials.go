package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/relay"
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
		fmt.Fprintln(env.Stdout, `Usage: cdc-relay credentials set --client-id ID [--client-secret-file F] [--map NAME] [--key NAME] [--path P]
                              [--client-cert FILE --client-key FILE] [--remove-client-cert]
                              [--signing-secret-file FILE]... [--remove-signing-secret FINGERPRINT]...
       cdc-relay credentials show [--map NAME] [--key NAME] [--path P]

Without --client-id, set changes only the certificate or signing secrets of a stored entry.`)
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

// namesFromDatabase reads DataSyncCredentialMapName and DataSyncCredentialKeyName, the
// relay's way (their defaults when unset).
func namesFromDatabase(ctx context.Context, dbURL string) (string, string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", "", fmt.Errorf("reading the credential map and key names from the database: %w (or pass --map and --key)", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := relay.NewStore(conn).Settings(ctx)
	if err != nil {
		return "", "", fmt.Errorf("%w (or pass --map and --key)", err)
	}
	return s.CredentialMapName, s.CredentialKeyName, nil
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// readSigningSecrets returns the Standard Webhooks secrets (whsec_...) of the given
// --signing-secret-file files, in order; each file must be private to its owner.
func readSigningSecrets(files []string) ([]string, error) {
	var secrets []string
	for _, f := range files {
		b, err := credentials.ReadPrivateFile(f, "--signing-secret-file")
		if err != nil {
			return nil, err
		}
		s, err := credentials.ParseSigningSecrets(b)
		if err != nil {
			return nil, fmt.Errorf("--signing-secret-file %s: %w", f, err)
		}
		secrets = append(secrets, s...)
	}
	return secrets, nil
}

func runCredentialsSet(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "credentials set")
	clientID := fs.String("client-id", "", "OAuth2 client id (required for a new entry; with it the secret is read from stdin or --client-secret-file)")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (default: first line of stdin)")
	certFile := fs.String("client-cert", "", "PEM client certificate (chain) for mTLS, stored in the entry (needs --client-key)")
	keyFile := fs.String("client-key", "", "PEM private key of --client-cert, stored in the entry")
	removeCert := fs.Bool("remove-client-cert", false, "drop the stored client certificate and key")
	var addSigning, removeSigning repeated
	fs.Var(&addSigning, "signing-secret-file", "file holding a Standard Webhooks secret (whsec_...) to sign with; repeatable, every stored secret signs")
	fs.Var(&removeSigning, "remove-signing-secret", "fingerprint (sha256:..., from credentials show) of a signing secret to drop; repeatable")
	sf := addStoreFlags(fs, env)
	dbURL := databaseFlag(fs, env)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	id := strings.TrimSpace(*clientID)
	extras := *certFile != "" || *keyFile != "" || *removeCert || len(addSigning) > 0 || len(removeSigning) > 0
	if id == "" && !extras {
		return fmt.Errorf("%w: --client-id is required (CE's Save needs both the client id and the secret)", ErrUsage)
	}
	if (*certFile == "") != (*keyFile == "") {
		return fmt.Errorf("%w: --client-cert and --client-key go together", ErrUsage)
	}
	if *removeCert && *certFile != "" {
		return fmt.Errorf("%w: give either --client-cert/--client-key or --remove-client-cert", ErrUsage)
	}
	var secret string
	if id != "" {
		var err error
		if secret, err = readSecret(env.Stdin, *secretFile); err != nil {
			return err
		}
	}
	var certPEM, keyPEM []byte
	if *certFile != "" {
		var err error
		if certPEM, err = os.ReadFile(*certFile); err != nil {
			return fmt.Errorf("reading --client-cert: %w", err)
		}
		if keyPEM, err = credentials.ReadPrivateFile(*keyFile, "--client-key"); err != nil {
			return err
		}
	}
	newSigning, err := readSigningSecrets(addSigning)
	if err != nil {
		return err
	}
	mapName, key, err := sf.names(ctx, *dbURL)
	if err != nil {
		return err
	}
	var saved credentials.Credential
	err = credentials.Update(*sf.path, mapName, key, func(c *credentials.Credential) error {
		if id != "" {
			c.ClientID, c.ClientSecret = id, secret
		} else if !c.Complete() {
			return fmt.Errorf("%w: map %q key %q has no client id and secret yet: pass --client-id (secret on stdin) too", credentials.ErrIncomplete, mapName, key)
		}
		if certPEM != nil {
			c.ClientCertPEM, c.ClientKeyPEM = string(certPEM), string(keyPEM)
		}
		if *removeCert {
			c.ClientCertPEM, c.ClientKeyPEM = "", ""
		}
		for _, fp := range removeSigning {
			kept := c.SigningSecrets[:0:0]
			for _, s := range c.SigningSecrets {
				if credentials.Fingerprint(s) != fp {
					kept = append(kept, s)
				}
			}
			if len(kept) == len(c.SigningSecrets) {
				return fmt.Errorf("%w: no stored signing secret has fingerprint %q: see cdc-relay credentials show", ErrUsage, fp)
			}
			c.SigningSecrets = kept
		}
		for _, s := range newSigning {
			if !slices.Contains(c.SigningSecrets, s) {
				c.SigningSecrets = append(c.SigningSecrets, s)
			}
		}
		saved = *c
		return nil
	})
	if err != nil {
		return fmt.Errorf("saving the credential: %w", err)
	}
	if id != "" {
		fmt.Fprintf(env.Stdout, "saved client id %q and secret (%d chars) as map %q key %q in %s\n", id, len(secret), mapName, key, *sf.path)
	} else {
		fmt.Fprintf(env.Stdout, "updated map %q key %q in %s\n", mapName, key, *sf.path)
	}
	if extras {
		printExtras(env.Stdout, saved)
	}
	return nil
}

// printExtras describes the signing secrets (by fingerprint) and the client certificate
// (subject, issuer, expiry) of c, never a secret.
func printExtras(w io.Writer, c credentials.Credential) {
	if len(c.SigningSecrets) == 0 {
		fmt.Fprintln(w, "signing secrets: none")
	}
	for i, s := range c.SigningSecrets {
		fmt.Fprintf(w, "signing secret %d: %s\n", i+1, credentials.Fingerprint(s))
	}
	if c.ClientCertPEM == "" {
		fmt.Fprintln(w, "client certificate: none")
		return
	}
	cert, err := c.Certificate(time.Now())
	if err != nil {
		fmt.Fprintf(w, "client certificate: UNUSABLE: %v\n", err)
		return
	}
	leaf := cert.Leaf
	warn := ""
	if msg := c.ExpiryWarning(time.Now()); msg != "" {
		warn = " (WARNING: " + msg + ")"
	}
	fmt.Fprintf(w, "client certificate: %s\nclient certificate issuer: %s\nclient certificate expires: %s%s\n",
		safetext.Clean(leaf.Subject.String()), safetext.Clean(leaf.Issuer.String()), leaf.NotAfter.UTC().Format(time.RFC3339), warn)
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
		if err := credentials.CheckPrivate(f, file); err != nil {
			return "", fmt.Errorf("reading --client-secret-file: %w", err)
		}
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
	printExtras(env.Stdout, c)
	return nil
}

// credentialWarning is what `status` says about the credential the relay would use (the default
// store, or the environment): a client certificate expiring within 14 days, or "" when there is
// nothing to say or the credential cannot be read (status reports queues, not credentials).
func credentialWarning(env Env, mapName, key string) string {
	c, _, err := credentials.Resolve(env.Getenv, credentials.DefaultPath(env.Getenv), mapName, key)
	if err != nil {
		return ""
	}
	return c.ExpiryWarning(time.Now())
}
