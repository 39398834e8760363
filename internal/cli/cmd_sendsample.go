package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/daemon"
	"github.com/cdc-relay/cdc-relay/internal/safetext"
	"github.com/cdc-relay/cdc-relay/mapping"
	"github.com/cdc-relay/cdc-relay/relay"
)

func init() {
	register(&Command{Name: "send-sample", Summary: "post the appendix's sample message with the saved settings and credentials", Run: runSendSample})
}

// SampleMessage is the appendix's "Send Sample Message" body content.
var SampleMessage = mapping.Message{Action: "CUSTOMERCRE", Payload: "Test message", Type: "CUSTOMER", UniqueID: "0"}

func runSendSample(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "send-sample")
	db := databaseFlag(fs, env)
	var cfg daemon.Config
	fs.StringVar(&cfg.CAFile, "ca-file", "", "extra PEM CA bundle trusted for the receiver and token endpoint")
	fs.StringVar(&cfg.ClientCertFile, "client-cert", "", "PEM client certificate for mTLS (default $CDC_RELAY_CLIENT_CERT_FILE, else the stored one)")
	fs.StringVar(&cfg.ClientKeyFile, "client-key", "", "PEM private key of --client-cert (default $CDC_RELAY_CLIENT_KEY_FILE)")
	fs.StringVar(&cfg.CredentialsPath, "credentials", "", "credential store path (default ${XDG_CONFIG_HOME:-$HOME/.config}/cdc-relay/credentials.json)")
	fs.BoolVar(&cfg.AllowInsecureHTTP, "allow-insecure-http", false, "permit http:// URLs (local testing only)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 10*time.Second, "timeout of each request")
	logger := logFlags(fs, env)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	cfg.Getenv, cfg.Logger = env.Getenv, log
	pool, err := poolDB(ctx, *db)
	if err != nil {
		return err
	}
	defer pool.Close()
	settings, err := relay.NewStore(pool).Settings(ctx)
	if err != nil {
		return err
	}
	snd, err := daemon.NewSender(cfg, settings, nil) // nil: no metrics served
	if err != nil {
		return err
	}
	defer snd.Close()
	body := mapping.AppendEnvelope(nil, []mapping.Message{SampleMessage})
	start := time.Now()
	resp, err := snd.Post(ctx, body)
	took := time.Since(start).Round(time.Millisecond)
	// The receiver's answer and the URL are outside strings: printed through safetext.Clean.
	apiURL := safetext.Clean(settings.APIURL)
	if resp.Signed != nil {
		// What was signed, never the secrets: the receiver can recompute the signature from
		// these headers and the body with its copy of the secret.
		fmt.Fprintf(env.Stdout, "signed (Standard Webhooks, %d signature(s)):\n  webhook-id: %s\n  webhook-timestamp: %s\n  webhook-signature: %s\n  signed content: %s.%s.%s\n",
			len(strings.Fields(resp.Signed.Signature)), resp.Signed.ID, resp.Signed.Timestamp, resp.Signed.Signature, resp.Signed.ID, resp.Signed.Timestamp, body)
	}
	if err != nil {
		return fmt.Errorf("sample message to %s failed after %s: %w", apiURL, took, cleanError{err})
	}
	if resp.Status != 200 {
		return fmt.Errorf("sample message to %s: receiver answered HTTP %d after %s (200 expected): %s", apiURL, resp.Status, took, safetext.Clean(resp.Excerpt))
	}
	fmt.Fprintf(env.Stdout, "sample message delivered to %s: HTTP 200 in %s\n", apiURL, took)
	return nil
}
