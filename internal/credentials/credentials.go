// Package credentials is cdc-relay's credential store: the appendix's "credential store map", a
// JSON file mapping a map name and a key name to an OAuth2 client ID and secret, and optionally
// an mTLS client certificate and key and Standard Webhooks signing secrets.
//
// The file lives at ${XDG_CONFIG_HOME:-$HOME/.config}/cdc-relay/credentials.json, is written
// atomically with mode 0600 in a 0700 directory, and is refused when other users could read or
// replace it (see CheckPrivate). Containers may bypass the file with CDC_RELAY_CLIENT_ID and
// CDC_RELAY_CLIENT_SECRET (or CDC_RELAY_CLIENT_SECRET_FILE), and name certificate and signing
// secret files in the environment. Source reads a credential again when its files change.
// Nothing in this package ever puts a secret into an error or a formatted string.
package credentials

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Default names of the credential map and key, as in CE's DataSyncCredentialMapName and
// DataSyncCredentialKeyName defaults.
const (
	DefaultMapName = "ce_credentials"
	DefaultKeyName = "datasync"
)

// Environment variables that override the credential file, for containers where a mounted
// secret is more natural than a config file.
const (
	EnvClientID         = "CDC_RELAY_CLIENT_ID"
	EnvClientSecret     = "CDC_RELAY_CLIENT_SECRET"
	EnvClientSecretFile = "CDC_RELAY_CLIENT_SECRET_FILE"
)

// SourceEnvironment is the source Resolve reports when the credential came from the environment.
const SourceEnvironment = "environment"

var (
	// ErrNotFound means the credential file does not exist, so nothing was ever saved.
	ErrNotFound = errors.New("credential store not found")
	// ErrInsecurePermissions means a secret file (the store, a secret, key or signing secrets file),
	// its owner, mode or directory lets other users read or replace the secret.
	ErrInsecurePermissions = errors.New("secret file has insecure permissions")
	// ErrCorrupt means the file is not the JSON this package writes.
	ErrCorrupt = errors.New("credential store is corrupt")
	// ErrIncomplete means a client ID or secret is missing; like CE's Save button, the store
	// accepts only both together.
	ErrIncomplete = errors.New("credential is incomplete")
	// ErrNoCredential means the file exists but holds nothing under the map and key asked for.
	ErrNoCredential = errors.New("no credential for this map and key")
)

// Credential is an OAuth2 client ID and secret. Its String, GoString, Format and MarshalJSON
// redact the secret, so logging or printing a Credential by mistake never leaks it.
type Credential struct {
	ClientID     string
	ClientSecret string
	// SigningSecrets are Standard Webhooks secrets ("whsec_" + base64); each signs every request
	// when DataSyncSigning is standard-webhooks, so a receiver can rotate by accepting both.
	SigningSecrets []string
	// ClientCertPEM and ClientKeyPEM are the mTLS client certificate (chain) and its private
	// key, both PEM; empty when the receiver needs no client certificate.
	ClientCertPEM, ClientKeyPEM string
}

// String describes the credential with the secret redacted, so it is safe in logs.
func (c Credential) String() string {
	secret := "unset"
	if c.ClientSecret != "" {
		secret = "[redacted]"
	}
	extra := ""
	if n := len(c.SigningSecrets); n > 0 {
		extra += fmt.Sprintf(" signing_secrets=%d[redacted]", n)
	}
	if c.ClientCertPEM != "" || c.ClientKeyPEM != "" {
		extra += " client_certificate=set client_key=[redacted]"
	}
	return fmt.Sprintf("client_id=%q client_secret=%s%s", c.ClientID, secret, extra)
}

// GoString is String for %#v, so even debugging output never shows the secret.
func (c Credential) GoString() string { return "credentials.Credential{" + c.String() + "}" }

// Format makes every fmt verb (%v, %+v, %s, %q, %x, ...) print the redacted form.
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, c.GoString())
		return
	}
	fmt.Fprint(f, c.String())
}

// MarshalJSON redacts the secret, so a Credential handed to a JSON logger stays safe. Save writes
// the file through its own unexported type and is the only place the secret is serialised.
func (c Credential) MarshalJSON() ([]byte, error) {
	secret := ""
	if c.ClientSecret != "" {
		secret = "[redacted]"
	}
	e := fileEntry{ClientID: c.ClientID, ClientSecret: secret}
	for range c.SigningSecrets {
		e.SigningSecrets = append(e.SigningSecrets, "[redacted]")
	}
	if c.ClientKeyPEM != "" {
		e.ClientKey = "[redacted]"
	}
	e.ClientCert = c.ClientCertPEM // a certificate is public
	return json.Marshal(e)
}

// Complete reports whether both the client ID and the secret are present.
func (c Credential) Complete() bool {
	return strings.TrimSpace(c.ClientID) != "" && strings.TrimSpace(c.ClientSecret) != ""
}

// fileEntry is the on-disk form of one credential.
type fileEntry struct {
	ClientID       string   `json:"client_id"`
	ClientSecret   string   `json:"client_secret"`
	SigningSecrets []string `json:"signing_secrets,omitempty"`
	ClientCert     string   `json:"client_cert,omitempty"`
	ClientKey      string   `json:"client_key,omitempty"`
}

func (e fileEntry) credential() Credential {
	return Credential{ClientID: e.ClientID, ClientSecret: e.ClientSecret, SigningSecrets: e.SigningSecrets,
		ClientCertPEM: e.ClientCert, ClientKeyPEM: e.ClientKey}
}

// clone copies c so an edit of its signing secrets does not change the original's.
func (c Credential) clone() Credential {
	c.SigningSecrets = append([]string(nil), c.SigningSecrets...)
	return c
}

func entryOf(c Credential) fileEntry {
	return fileEntry{ClientID: c.ClientID, ClientSecret: c.ClientSecret, SigningSecrets: c.SigningSecrets,
		ClientCert: c.ClientCertPEM, ClientKey: c.ClientKeyPEM}
}

// store is the on-disk file: map name → key name → credential.
type store map[string]map[string]fileEntry

// DefaultPath returns ${XDG_CONFIG_HOME:-$HOME/.config}/cdc-relay/credentials.json. A relative
// XDG_CONFIG_HOME is ignored, as the XDG spec requires. getenv is injected so tests and
// subcommands control the environment.
func DefaultPath(getenv func(string) string) string {
	base := getenv("XDG_CONFIG_HOME")
	if base == "" || !filepath.IsAbs(base) {
		base = filepath.Join(getenv("HOME"), ".config")
	}
	return filepath.Join(base, "cdc-relay", "credentials.json")
}

// setHint is the command that fixes a missing or incomplete credential.
func setHint(mapName, key string) string {
	return fmt.Sprintf("run cdc-relay credentials set --map %s --key %s --client-id ID (secret on stdin)", mapName, key)
}

// Load reads the credential stored under mapName and key in the file at path.
func Load(path, mapName, key string) (Credential, error) {
	st, err := readStore(path)
	if err != nil {
		return Credential{}, err
	}
	e, ok := st[mapName][key]
	if !ok {
		return Credential{}, fmt.Errorf("%w: map %q has no key %q in %s: %s", ErrNoCredential, mapName, key, path, setHint(mapName, key))
	}
	c := e.credential()
	if !c.Complete() {
		return Credential{}, fmt.Errorf("%w: map %q key %q in %s has an empty client id or secret: %s", ErrIncomplete, mapName, key, path, setHint(mapName, key))
	}
	return c, nil
}

// readStore opens, permission-checks and parses the file at path.
func readStore(path string) (store, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist: run cdc-relay credentials set --client-id ID (secret on stdin)", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening credential store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspecting credential store: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file: remove it and run cdc-relay credentials set", ErrCorrupt, path)
	}
	if err := CheckPrivate(f, path); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("reading credential store: %w", err)
	}
	return parseStore(path, buf.Bytes())
}

// parseStore decodes the file's bytes. Its errors give the line and column but never the JSON
// decoder's own message, which could quote part of a secret.
func parseStore(path string, b []byte) (store, error) {
	st := store{}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%w: %s is empty: delete it and run cdc-relay credentials set", ErrCorrupt, path)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// Only the position is reported: the decoder's own message may quote part of a secret.
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		where, offset := "", int64(-1)
		if errors.As(err, &syn) {
			offset = syn.Offset
		} else if errors.As(err, &typ) {
			where, offset = " (want {\"map\": {\"key\": {\"client_id\": ..., \"client_secret\": ...}}})", typ.Offset
		}
		if offset >= 0 {
			line, col := position(b, offset)
			where = fmt.Sprintf(" at line %d, column %d%s", line, col, where)
		}
		return nil, fmt.Errorf("%w: %s is not valid credential JSON%s: fix it or delete it and run cdc-relay credentials set", ErrCorrupt, path, where)
	}
	return st, nil
}

// position converts a byte offset into a 1-based line and column.
func position(b []byte, offset int64) (line, col int) {
	if offset > int64(len(b)) {
		offset = int64(len(b))
	}
	if offset < 0 {
		offset = 0
	}
	before := b[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	if col < 1 {
		col = 1
	}
	return line, col
}

// Save stores c under mapName and key in the file at path, keeping every other entry. It refuses
// an incomplete credential (CE's Save button needs both values) and refuses to touch an existing
// file that is insecure or corrupt rather than silently replace it. The directory is created with
// mode 0700 and the file is replaced atomically with mode 0600.
func Save(path, mapName, key string, c Credential) error {
	return Update(path, mapName, key, func(old *Credential) error {
		*old = c
		return nil
	})
}

// Update changes the credential stored under mapName and key in the file at path with edit,
// which receives the stored credential (zero when there is none), under the same lock, checks
// and atomic write as Save. The result must be complete and its certificate and signing
// secrets valid.
func Update(path, mapName, key string, edit func(c *Credential) error) error {
	if err := validName("map", mapName); err != nil {
		return err
	}
	if err := validName("key", key); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating credential directory: %w", err)
	}
	if err := checkDir(dir, path); err != nil {
		return fmt.Errorf("refusing to update the credential store: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()

	st, err := readStore(path)
	switch {
	case errors.Is(err, ErrNotFound):
		st = store{}
	case err != nil:
		return fmt.Errorf("refusing to update the credential store: %w", err)
	}
	before := st[mapName][key].credential()
	c := before.clone()
	if err := edit(&c); err != nil {
		return err
	}
	if !c.Complete() {
		return fmt.Errorf("%w: both a client id and a client secret are needed: pass --client-id and the secret on stdin or with --client-secret-file", ErrIncomplete)
	}
	// Check what is new: a stored certificate that has expired since must not block, say, a
	// new client secret (the relay reports it when it is used).
	if c.ClientCertPEM == before.ClientCertPEM && c.ClientKeyPEM == before.ClientKeyPEM {
		c.ClientCertPEM, c.ClientKeyPEM = "", ""
		err = c.Check()
		c.ClientCertPEM, c.ClientKeyPEM = before.ClientCertPEM, before.ClientKeyPEM
	} else {
		err = c.Check()
	}
	if err != nil {
		return err
	}
	if st[mapName] == nil {
		st[mapName] = map[string]fileEntry{}
	}
	st[mapName][key] = entryOf(c)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding credential store: %w", err)
	}
	return writeAtomic(path, append(b, '\n'))
}

// validName refuses names the database's data_sync_config would refuse too.
func validName(what, name string) error {
	if name == "" || len(name) > 128 || strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
		return fmt.Errorf("%w: invalid credential %s name %q: use 1 to 128 letters, digits, dot, dash or underscore", ErrIncomplete, what, name)
	}
	return nil
}

// writeAtomic writes data to a temporary file in path's directory, syncs it, sets mode 0600 and
// renames it over path, so a crash leaves either the old file or the new one, never half of one.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".credentials-*.tmp")
	if err != nil {
		return fmt.Errorf("creating temporary credential file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("setting credential file mode: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing credential file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing credential file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing credential file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing credential store: %w", err)
	}
	// Sync the directory so the rename itself survives a crash; not every platform allows it.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// FromEnv reads the container override: CDC_RELAY_CLIENT_ID with CDC_RELAY_CLIENT_SECRET or
// CDC_RELAY_CLIENT_SECRET_FILE. ok is false when none of them is set. Setting only half of a
// credential is an error, so a typo is not silently replaced by the file's credential.
func FromEnv(getenv func(string) string) (Credential, bool, error) {
	id, secret, file := getenv(EnvClientID), getenv(EnvClientSecret), getenv(EnvClientSecretFile)
	if id == "" {
		if secret != "" || file != "" {
			return Credential{}, false, fmt.Errorf("%w: a client secret is set in the environment but %s is not: set %s too, or unset the secret to use the credential file", ErrIncomplete, EnvClientID, EnvClientID)
		}
		return Credential{}, false, nil
	}
	switch {
	case secret != "" && file != "":
		return Credential{}, false, fmt.Errorf("%w: both %s and %s are set: set only one", ErrIncomplete, EnvClientSecret, EnvClientSecretFile)
	case secret == "" && file == "":
		return Credential{}, false, fmt.Errorf("%w: %s is set but no secret: set %s or %s too", ErrIncomplete, EnvClientID, EnvClientSecret, EnvClientSecretFile)
	case file != "":
		b, err := ReadPrivateFile(file, EnvClientSecretFile)
		if err != nil {
			return Credential{}, false, err
		}
		secret = strings.TrimSpace(string(b))
		if secret == "" {
			return Credential{}, false, fmt.Errorf("%w: the file named by %s (%s) is empty: put the client secret in it", ErrIncomplete, EnvClientSecretFile, file)
		}
	}
	return Credential{ClientID: id, ClientSecret: secret}, true, nil
}

// Resolve returns the credential to use: the environment override when present, else the one
// stored in the file at path under mapName and key. source says where it came from
// (SourceEnvironment or the path), for start-up logs and `credentials show`.
//
// The files named by CDC_RELAY_CLIENT_CERT_FILE and CDC_RELAY_CLIENT_KEY_FILE (or certFile and
// keyFile when given, from run flags) replace the stored client certificate, and
// CDC_RELAY_SIGNING_SECRETS_FILE the stored signing secrets, whichever source gave the client
// id and secret.
func Resolve(getenv func(string) string, path, mapName, key string) (Credential, string, error) {
	c, where, _, err := resolve(getenv, path, mapName, key, "", "")
	return c, where, err
}

// resolve is Resolve that also returns the files the credential was read from, for Source.
func resolve(getenv func(string) string, path, mapName, key, certFile, keyFile string) (Credential, string, []string, error) {
	c, ok, err := FromEnv(getenv)
	if err != nil {
		return Credential{}, SourceEnvironment, nil, err
	}
	where, files := SourceEnvironment, []string(nil)
	if f := getenv(EnvClientSecretFile); ok && f != "" {
		files = append(files, f)
	}
	if !ok {
		if c, err = Load(path, mapName, key); err != nil {
			return Credential{}, path, []string{path}, err
		}
		where, files = path, append(files, path)
	}
	more, err := overlay(getenv, &c, certFile, keyFile)
	files = append(files, more...)
	if err != nil {
		return Credential{}, where, files, err
	}
	return c, where, files, nil
}
