package credentials

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Environment variables naming files that complete a credential in containers: the mTLS client
// certificate and key (PEM), and the Standard Webhooks signing secrets (one per line).
const (
	EnvClientCertFile     = "CDC_RELAY_CLIENT_CERT_FILE"
	EnvClientKeyFile      = "CDC_RELAY_CLIENT_KEY_FILE"
	EnvSigningSecretsFile = "CDC_RELAY_SIGNING_SECRETS_FILE"
)

var (
	// ErrSigningSecret means a signing secret is not a Standard Webhooks secret.
	ErrSigningSecret = errors.New("invalid signing secret")
	// ErrClientCert means the mTLS client certificate or key is unusable: unreadable, not
	// matching, expired or not yet valid.
	ErrClientCert = errors.New("unusable client certificate")
)

// maxPrivateFile bounds what ReadPrivateFile reads: secrets, keys and certificate chains.
const maxPrivateFile = 1 << 20

// ReadPrivateFile reads a file holding a secret after CheckPrivate has accepted it. what names
// where the path came from (a flag or environment variable) for errors.
func ReadPrivateFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %s does not exist: %w", what, path, err)
		}
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	defer f.Close()
	if err := CheckPrivate(f, path); err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPrivateFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s (%s): %w", what, path, err)
	}
	if len(b) > maxPrivateFile {
		return nil, fmt.Errorf("reading %s: %s is larger than %d bytes: give the secret, key or certificate file itself", what, path, maxPrivateFile)
	}
	return b, nil
}

// overlay applies the environment's (or the run flags') certificate files and signing secrets
// file to c and returns the files it read.
func overlay(getenv func(string) string, c *Credential, certFile, keyFile string) ([]string, error) {
	var files []string
	if certFile == "" && keyFile == "" {
		certFile, keyFile = getenv(EnvClientCertFile), getenv(EnvClientKeyFile)
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both a certificate file and a key file (%s and %s, or --client-cert and --client-key)",
			ErrClientCert, EnvClientCertFile, EnvClientKeyFile)
	}
	if certFile != "" {
		files = append(files, certFile, keyFile)
		cert, err := os.ReadFile(certFile) // public: no permission check
		if err != nil {
			return files, fmt.Errorf("%w: reading the client certificate: %w", ErrClientCert, err)
		}
		key, err := ReadPrivateFile(keyFile, "the client key file")
		if err != nil {
			return files, fmt.Errorf("%w: %w", ErrClientCert, err)
		}
		c.ClientCertPEM, c.ClientKeyPEM = string(cert), string(key)
	}
	if f := getenv(EnvSigningSecretsFile); f != "" {
		files = append(files, f)
		b, err := ReadPrivateFile(f, EnvSigningSecretsFile)
		if err != nil {
			return files, err
		}
		secrets, err := ParseSigningSecrets(b)
		if err != nil {
			return files, fmt.Errorf("%s (%s): %w", EnvSigningSecretsFile, f, err)
		}
		c.SigningSecrets = secrets
	}
	return files, nil
}

// Check validates the optional parts of c: every signing secret, and the client certificate
// against its key and the current time.
func (c Credential) Check() error {
	for _, s := range c.SigningSecrets {
		if _, err := SigningKey(s); err != nil {
			return err
		}
	}
	if c.ClientCertPEM != "" || c.ClientKeyPEM != "" {
		if _, err := c.Certificate(time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// ParseSigningSecrets reads Standard Webhooks secrets, one per line (blank lines and lines
// starting with # ignored), and validates each.
func ParseSigningSecrets(b []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := SigningKey(line); err != nil {
			return nil, err
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSigningSecret, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no secret found: put one whsec_... secret per line", ErrSigningSecret)
	}
	return out, nil
}

// SigningKey decodes a Standard Webhooks secret: "whsec_" followed by base64 of 24 to 64 random
// bytes (shorter keys, down to 16 bytes, are accepted as some providers issue them). The error
// never quotes the secret.
func SigningKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(secret), "whsec_")
	if !ok {
		return nil, fmt.Errorf("%w: a Standard Webhooks secret starts with whsec_ followed by base64: generate one with printf 'whsec_%%s\\n' \"$(head -c 32 /dev/urandom | base64)\"", ErrSigningSecret)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: the part after whsec_ is not standard base64", ErrSigningSecret)
	}
	if len(key) < 16 || len(key) > 1024 {
		return nil, fmt.Errorf("%w: the key is %d bytes; use 24 to 64 random bytes", ErrSigningSecret, len(key))
	}
	return key, nil
}

// Fingerprint names a secret without revealing it: "sha256:" and the first 12 hex digits of the
// SHA-256 of the secret string. `credentials show` prints it and --remove-signing-secret takes it.
func Fingerprint(secret string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// Certificate parses the client certificate and key, checks they belong together and that the
// certificate is valid at now. Errors name the fix and never quote the key.
func (c Credential) Certificate(now time.Time) (tls.Certificate, error) {
	if c.ClientCertPEM == "" || c.ClientKeyPEM == "" {
		return tls.Certificate{}, fmt.Errorf("%w: a client certificate needs both the certificate and its key", ErrClientCert)
	}
	cert, err := tls.X509KeyPair([]byte(c.ClientCertPEM), []byte(c.ClientKeyPEM))
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return tls.Certificate{}, fmt.Errorf("%w: the client key does not match the client certificate: give the key the certificate was issued for", ErrClientCert)
		}
		// tls's parse errors name the PEM block type, never key material.
		return tls.Certificate{}, fmt.Errorf("%w: %w: give a PEM certificate (chain) and its PEM private key", ErrClientCert, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("%w: parsing the client certificate: %w", ErrClientCert, err)
		}
		cert.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return tls.Certificate{}, fmt.Errorf("%w: the client certificate %q expired on %s: ask the partner's CA for a new one and store it with cdc-relay credentials set --client-cert FILE --client-key FILE",
			ErrClientCert, leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return tls.Certificate{}, fmt.Errorf("%w: the client certificate %q is not valid before %s: check this machine's clock",
			ErrClientCert, leaf.Subject.String(), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// CertExpiryWarning is how long before its expiry a client certificate is reported as expiring
// (by credentials show, status and the relay's log).
const CertExpiryWarning = 14 * 24 * time.Hour

// ExpiryWarning returns a warning when c's client certificate expires within CertExpiryWarning
// of now (or has expired), naming its subject and the fix; "" otherwise or without a certificate.
func (c Credential) ExpiryWarning(now time.Time) string {
	if c.ClientCertPEM == "" {
		return ""
	}
	block, _ := pem.Decode([]byte(c.ClientCertPEM))
	if block == nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	left := leaf.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return fmt.Sprintf("the client certificate %q expired on %s: store a new one with cdc-relay credentials set --client-cert FILE --client-key FILE",
			leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < CertExpiryWarning:
		return fmt.Sprintf("the client certificate %q expires in %s (%s): renew it and store it with cdc-relay credentials set --client-cert FILE --client-key FILE",
			leaf.Subject.String(), roughly(left), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return ""
}

// roughly renders a duration for people: whole days from two days up, else hours and minutes.
func roughly(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return d.Round(time.Minute).String()
}
