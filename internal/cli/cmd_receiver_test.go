package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// notifyWriter collects output and signals when it first matches a pattern.
type notifyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	re    *regexp.Regexp
	match chan []string
	sent  bool
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if !w.sent {
		if m := w.re.FindStringSubmatch(w.buf.String()); m != nil {
			w.match <- m
			w.sent = true
		}
	}
	return n, err
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// receiverSecretEnv is an environment giving the receiver command its client secret.
func receiverSecretEnv(k string) string {
	if k == "CDC_RELAY_RECEIVER_CLIENT_SECRET" {
		return "env-secret"
	}
	return ""
}

// runningReceiver is a `cdc-relay receiver` command started by startReceiverCommand.
type runningReceiver struct {
	apiURL, tokenURL string
	client           *http.Client // trusts the certificate the command wrote to --ca-out
	stdout           *notifyWriter
	stop             func() error // ends the command (as SIGINT would) and returns its error
}

// startReceiverCommand runs `cdc-relay receiver --addr 127.0.0.1:0 --ca-out FILE args...` and
// returns once it has printed its URLs.
func startReceiverCommand(t *testing.T, getenv func(string) string, args ...string) *runningReceiver {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	matched := make(chan []string, 1)
	stdout := &notifyWriter{re: regexp.MustCompile(`API URL:\s+(\S+)\nToken URL:\s+(\S+)\n`), match: matched}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runReceiver(ctx, Env{Stdout: stdout, Stderr: &bytes.Buffer{}, Getenv: getenv},
			append([]string{"--addr", "127.0.0.1:0", "--ca-out", caFile}, args...))
	}()
	var urls []string
	select {
	case urls = <-matched:
	case err := <-done:
		cancel()
		t.Fatalf("receiver exited early: %v", err)
	}
	ca, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return &runningReceiver{apiURL: urls[1], tokenURL: urls[2], client: client, stdout: stdout,
		stop: func() error { cancel(); return <-done }}
}

func TestReceiverCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outFile, secretFile := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("file-secret\n"), 0o600))
	r := startReceiverCommand(t, func(string) string { return "" }, "--client-id", "relay", "--client-secret-file", secretFile,
		"--strict", "--out", outFile, "--token-ttl", "10m")

	cc := &clientcredentials.Config{ClientID: "relay", ClientSecret: "file-secret", TokenURL: r.tokenURL}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, r.client)
	c := oauth2.NewClient(ctx, cc.TokenSource(ctx))
	body := mapping.AppendEnvelope(nil, []mapping.Message{{Action: "CUSTOMERDEL", Type: "CUSTOMER", Payload: "2142", UniqueID: "77"}})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, r.apiURL, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, r.stop(), "SIGINT/SIGTERM stop is a clean exit")
	out, err := os.ReadFile(outFile)
	require.NoError(t, err)
	require.Contains(t, string(out), `"uniqueId":"77"`)
	require.Contains(t, r.stdout.String(), "1 messages")
}

func TestReceiverCommandUsage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args   []string
		getenv func(string) string
		want   string
	}{
		{[]string{}, receiverSecretEnv, "--client-id"},
		{[]string{"--client-id", "x"}, func(string) string { return "" }, "CDC_RELAY_RECEIVER_CLIENT_SECRET"},
		{[]string{"--client-id", "x", "--fail-rate", "2"}, receiverSecretEnv, "between 0 and 1"},
		{[]string{"--client-id", "x", "--reset-rate", "-1"}, receiverSecretEnv, "between 0 and 1"},
		{[]string{"--client-id", "x", "--rate", "-1"}, receiverSecretEnv, "--rate"},
		{[]string{"--client-id", "x", "--fail-status", "200"}, receiverSecretEnv, "400 and 599"},
		{[]string{"--client-id", "x", "--min-tls", "1.4"}, receiverSecretEnv, "--min-tls"},
		{[]string{"--client-id", "x", "--max-tls", "2"}, receiverSecretEnv, "--max-tls"},
		{[]string{"--client-id", "x", "--min-tls", "1.3", "--max-tls", "1.2"}, receiverSecretEnv, "MaxTLSVersion"},
		{[]string{"--client-id", "x", "--cert", "a.pem"}, receiverSecretEnv, "give both"},
		{[]string{"--client-id", "x", "stray"}, receiverSecretEnv, "unexpected arguments"},
		{[]string{"--no-such-flag"}, receiverSecretEnv, "no-such-flag"},
	}
	for _, c := range cases {
		env := Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: c.getenv}
		err := runReceiver(t.Context(), env, c.args)
		require.ErrorIs(t, err, ErrUsage, "%v", c.args)
		require.Contains(t, err.Error(), c.want)
	}
	// A config error is also a receiver.ErrConfig.
	err := runReceiver(t.Context(), Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: receiverSecretEnv}, []string{"--client-id", "x", "--key", "k.pem"})
	require.True(t, errors.Is(err, receiver.ErrConfig))
}

func TestReceiverCommandRuntimeErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: receiverSecretEnv}

	err := runReceiver(t.Context(), env, []string{"--client-id", "x", "--client-secret-file", filepath.Join(dir, "missing")})
	require.ErrorContains(t, err, "read client secret file")
	err = runReceiver(t.Context(), env, []string{"--client-id", "x", "--out", filepath.Join(dir, "no", "out.jsonl")})
	require.ErrorContains(t, err, "open --out file")
	err = runReceiver(t.Context(), env, []string{"--client-id", "x", "--addr", "127.0.0.1:0", "--ca-out", filepath.Join(dir, "no", "ca.pem")})
	require.ErrorContains(t, err, "write receiver CA file")

	// Address in use.
	s, err := receiver.New(receiver.Config{ClientID: "a", ClientSecret: "b"})
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	u, err := url.Parse(s.APIURL())
	require.NoError(t, err)
	err = runReceiver(t.Context(), env, []string{"--client-id", "x", "--addr", u.Host})
	require.ErrorContains(t, err, "listen")
	require.False(t, strings.Contains(err.Error(), "env-secret"))
}
