package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cdc-relay/cdc-relay/internal/receiver"
)

func init() {
	register(&Command{
		Name:    "receiver",
		Summary: "run the reference Data Sync receiver (HTTPS + OAuth2) with optional fault injection",
		Run:     runReceiver,
	})
}

// tlsVersions maps --min-tls/--max-tls values to crypto/tls constants.
var tlsVersions = map[string]uint16{
	"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13,
}

func parseTLSVersion(flagName, v string) (uint16, error) {
	if v == "" {
		return 0, nil
	}
	ver, ok := tlsVersions[v]
	if !ok {
		return 0, fmt.Errorf("%w: --%s %q: use 1.0, 1.1, 1.2 or 1.3", ErrUsage, flagName, v)
	}
	return ver, nil
}

func runReceiver(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "receiver")
	addr := fs.String("addr", "127.0.0.1:8443", "listen address")
	certFile := fs.String("cert", "", "PEM certificate (chain); default: generate a self-signed one for 127.0.0.1, ::1 and localhost")
	keyFile := fs.String("key", "", "PEM private key for --cert")
	minTLS := fs.String("min-tls", "1.2", "lowest TLS version accepted: 1.0, 1.1, 1.2 or 1.3")
	maxTLS := fs.String("max-tls", "", "highest TLS version accepted (default: highest supported)")
	clientID := fs.String("client-id", "", "OAuth2 client id accepted by the token endpoint (required)")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (default $CDC_RELAY_RECEIVER_CLIENT_SECRET)")
	tokenTTL := fs.Duration("token-ttl", time.Hour, "lifetime of issued access tokens")
	strict := fs.Bool("strict", false, "validate every payload strictly (400 on a malformed Customer or Transaction)")
	out := fs.String("out", "", "append one JSON line per accepted message (action, type, uniqueId, payload size) to this file")
	hostname := fs.String("hostname", "", "extra DNS name for the generated certificate (e.g. receiver in Docker Compose)")
	caOut := fs.String("ca-out", "", "write the certificate clients must trust to this file")
	failRate := fs.Float64("fail-rate", 0, "fraction (0..1) of message POSTs answered --fail-status")
	failStatus := fs.Int("fail-status", 503, "HTTP status of injected failures")
	retryAfter := fs.Duration("retry-after", 0, "Retry-After sent with injected failures and 429s")
	latency := fs.Duration("latency", 0, "added delay before answering each POST (a remote partner: 100ms)")
	maxInflight := fs.Int("max-inflight", 0, "POSTs handled at once; more are answered 429 at once (0: unlimited)")
	http2 := fs.Bool("http2", false, "offer HTTP/2 beside HTTP/1.1 (--reset-rate needs HTTP/1.1 connections)")
	rateLimit := fs.Float64("rate", 0, "messages per second accepted; excess answered 429 (0: unlimited)")
	resetRate := fs.Float64("reset-rate", 0, "fraction (0..1) of POSTs whose connection is reset")
	down := fs.Bool("down", false, "answer every POST 503")
	tokenDown := fs.Bool("token-down", false, "answer the token endpoint 503")
	tokenGarbage := fs.Bool("token-garbage", false, "answer the token endpoint with an HTML page")
	redirectTo := fs.String("redirect-to", "", "answer POSTs 307 with this Location")
	requiredScope := fs.String("required-scope", "", "space-separated scopes a token request must ask for (400 invalid_scope otherwise)")
	requiredAudience := fs.String("required-audience", "", "audience a token request must carry (400 invalid_request otherwise)")
	tokenAuthStyle := fs.String("token-auth-style", "", "client authentication the token endpoint accepts: basic, body (default: both)")
	clientCAFile := fs.String("client-ca-file", "", "PEM CA that client certificates (mTLS) must be issued by")
	requireClientCert := fs.String("require-client-cert", "", "require a client certificate on: token, api or both (needs --client-ca-file)")
	var signingFiles repeated
	fs.Var(&signingFiles, "signing-secret-file", "file holding a Standard Webhooks secret (whsec_...) to verify webhook-signature with; repeatable")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *clientID == "" {
		return fmt.Errorf("%w: no client id: pass --client-id NAME", ErrUsage)
	}
	secret := env.Getenv("CDC_RELAY_RECEIVER_CLIENT_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("read client secret file: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
	}
	if secret == "" {
		return fmt.Errorf("%w: no client secret: pass --client-secret-file FILE or set CDC_RELAY_RECEIVER_CLIENT_SECRET", ErrUsage)
	}
	for name, v := range map[string]float64{"fail-rate": *failRate, "reset-rate": *resetRate} {
		if v < 0 || v > 1 {
			return fmt.Errorf("%w: --%s %g: use a fraction between 0 and 1", ErrUsage, name, v)
		}
	}
	if *maxInflight < 0 {
		return fmt.Errorf("%w: --max-inflight %d: use 0 (unlimited) or a positive number of requests", ErrUsage, *maxInflight)
	}
	if *rateLimit < 0 {
		return fmt.Errorf("%w: --rate %g: use 0 (unlimited) or a positive number of messages per second", ErrUsage, *rateLimit)
	}
	if *failStatus < 400 || *failStatus > 599 {
		return fmt.Errorf("%w: --fail-status %d: use an HTTP error status between 400 and 599", ErrUsage, *failStatus)
	}
	minV, err := parseTLSVersion("min-tls", *minTLS)
	if err != nil {
		return err
	}
	maxV, err := parseTLSVersion("max-tls", *maxTLS)
	if err != nil {
		return err
	}
	cfg := receiver.Config{
		Addr: *addr, CertFile: *certFile, KeyFile: *keyFile, MinTLSVersion: minV, MaxTLSVersion: maxV, HTTP2: *http2,
		ClientID: *clientID, ClientSecret: secret, TokenTTL: *tokenTTL, Strict: *strict,
	}
	if *hostname != "" {
		cfg.Hostnames = []string{*hostname}
	}
	cfg.RequiredScope, cfg.RequiredAudience, cfg.TokenAuthStyle = *requiredScope, *requiredAudience, *tokenAuthStyle
	if *clientCAFile != "" {
		if cfg.ClientCAPEM, err = os.ReadFile(*clientCAFile); err != nil {
			return fmt.Errorf("reading --client-ca-file: %w", err)
		}
	}
	switch *requireClientCert {
	case "":
	case "token":
		cfg.ClientCertForToken = true
	case "api":
		cfg.ClientCertForAPI = true
	case "both":
		cfg.ClientCertForToken, cfg.ClientCertForAPI = true, true
	default:
		return fmt.Errorf("%w: --require-client-cert %q: use token, api or both", ErrUsage, *requireClientCert)
	}
	if cfg.SigningSecrets, err = readSigningSecrets(signingFiles); err != nil {
		return err
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("open --out file: %w", err)
		}
		defer f.Close()
		cfg.Log = f
	}
	srv, err := receiver.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	srv.SetFaults(receiver.Faults{
		FailRate: *failRate, FailStatus: *failStatus, RetryAfter: *retryAfter, Delay: *latency, MaxInflight: *maxInflight,
		RateLimit: *rateLimit, ResetRate: *resetRate, Down: *down, TokenDown: *tokenDown,
		TokenGarbage: *tokenGarbage, RedirectTo: *redirectTo,
	})
	if *caOut != "" {
		if err := srv.WriteCAFile(*caOut); err != nil {
			return err
		}
	}
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "API URL:   %s\nToken URL: %s\n", srv.APIURL(), srv.TokenURL())
	if *caOut != "" {
		fmt.Fprintf(env.Stdout, "CA file:   %s\n", *caOut)
	}
	if err := srv.Run(ctx); err != nil {
		return err
	}
	st := srv.Stats()
	fmt.Fprintf(env.Stdout, "stopped: %d requests, %d messages (%d unique, %d duplicates), %d samples, %d tokens issued\n",
		st.Requests, st.Messages, st.Unique, st.Duplicates, st.Samples, st.TokensIssued)
	return nil
}
