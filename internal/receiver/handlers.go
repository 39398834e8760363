package receiver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cdc-relay/cdc-relay/mapping"
)

// Rejection reasons counted in Stats.Rejected.
const (
	reasonMethod      = "method"
	reasonAuth        = "auth"
	reasonContentType = "content_type"
	reasonTooLarge    = "too_large"
	reasonBody        = "body"
	reasonEnvelope    = "envelope"
	reasonPayload     = "payload"
	reasonTokenClient = "token_client"
	reasonTokenGrant  = "token_grant"
	reasonTokenForm   = "token_request"
	reasonTokenScope  = "token_scope"
	reasonTokenAud    = "token_audience"
	reasonClientCert  = "client_certificate"
	reasonSignature   = "signature"
)

func (s *Server) reject(reason string) {
	s.mu.Lock()
	s.stats.Rejected[reason]++
	s.mu.Unlock()
}

func (s *Server) fault() {
	s.mu.Lock()
	s.stats.FaultsInjected++
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// problem answers an error with a short JSON reason (never the payload).
func problem(w http.ResponseWriter, status int, code, reason string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": reason})
}

func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
	}
}

// handleToken is the OAuth2 token endpoint (RFC 6749 section 4.4, client credentials).
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.reject(reasonMethod)
		w.Header().Set("Allow", http.MethodPost)
		problem(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
		return
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if f.TokenDown {
		s.fault()
		_, _ = io.Copy(io.Discard, r.Body)
		setRetryAfter(w, f.RetryAfter)
		http.Error(w, "token service unavailable", http.StatusServiceUnavailable)
		return
	}
	if f.TokenGarbage {
		s.fault()
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<html><body><h1>Welcome</h1><p>Single sign-on portal</p></body></html>\n")
		return
	}
	if s.cfg.ClientCertForToken && !hasClientCert(r) {
		s.reject(reasonClientCert)
		problem(w, http.StatusUnauthorized, "invalid_client", "a client certificate (mTLS) is required")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.reject(reasonTokenForm)
		problem(w, http.StatusBadRequest, "invalid_request", "the body must be a form (application/x-www-form-urlencoded)")
		return
	}
	id, secret, basic := r.BasicAuth()
	switch style := s.cfg.TokenAuthStyle; {
	case style == "basic" && !basic, style == "body" && basic:
		s.reject(reasonTokenClient)
		if style == "basic" {
			w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
		}
		problem(w, http.StatusUnauthorized, "invalid_client", "client authentication must use "+map[string]string{"basic": "HTTP Basic", "body": "client_id and client_secret in the form body"}[style])
		return
	}
	if basic {
		// RFC 6749 2.3.1: the credentials are form-encoded before Basic encoding.
		if u, err := url.QueryUnescape(id); err == nil {
			id = u
		}
		if u, err := url.QueryUnescape(secret); err == nil {
			secret = u
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	s.mu.Lock()
	wantID, wantSecret := s.clientID, s.secret
	s.mu.Unlock()
	okID := subtle.ConstantTimeCompare([]byte(id), []byte(wantID)) == 1
	okSecret := subtle.ConstantTimeCompare([]byte(secret), []byte(wantSecret)) == 1
	if !okID || !okSecret {
		s.reject(reasonTokenClient)
		if basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
		}
		problem(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		s.reject(reasonTokenGrant)
		problem(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	if missing := missingScopes(s.cfg.RequiredScope, r.PostForm.Get("scope")); missing != "" {
		s.reject(reasonTokenScope)
		problem(w, http.StatusBadRequest, "invalid_scope", "the scope "+missing+" is required")
		return
	}
	if want := s.cfg.RequiredAudience; want != "" && r.PostForm.Get("audience") != want {
		s.reject(reasonTokenAud)
		problem(w, http.StatusBadRequest, "invalid_request", "the audience parameter must name this API")
		return
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	token := hex.EncodeToString(raw[:])
	now := time.Now()
	s.mu.Lock()
	for t, exp := range s.tokens {
		if now.After(exp) {
			delete(s.tokens, t)
		}
	}
	s.tokens[token] = now.Add(s.cfg.TokenTTL)
	s.stats.TokensIssued++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(math.Ceil(s.cfg.TokenTTL.Seconds())),
	})
}

// authorized reports whether r carries a valid, unexpired, unrevoked bearer token.
func (s *Server) authorized(r *http.Request) (ok bool, present bool) {
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return false, false
	}
	s.mu.Lock()
	exp, known := s.tokens[strings.TrimSpace(token)]
	s.mu.Unlock()
	return known && time.Now().Before(exp), true
}

func isSample(m mapping.Message) bool { return m.Payload == "Test message" && m.UniqueID == "0" }

// handleDataSync is the Data Sync endpoint.
func (s *Server) handleDataSync(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if r.Method != http.MethodPost {
		s.reject(reasonMethod)
		w.Header().Set("Allow", http.MethodPost)
		problem(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	s.mu.Lock()
	s.stats.Requests++
	f := s.faults
	lim := s.limiter
	s.mu.Unlock()

	if n := s.inflight.Add(1); f.MaxInflight > 0 && n > int64(f.MaxInflight) {
		s.inflight.Add(-1)
		s.mu.Lock()
		s.stats.OverInflight++
		s.mu.Unlock()
		s.fault()
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		setRetryAfter(w, f.RetryAfter)
		problem(w, http.StatusTooManyRequests, "too_many_requests", "too many requests in flight")
		return
	}
	defer s.inflight.Add(-1)
	if f.ResetRate > 0 && mrand.Float64() < f.ResetRate && s.reset(w) {
		return
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if f.Down {
		s.fault()
		_, _ = io.Copy(io.Discard, r.Body)
		setRetryAfter(w, f.RetryAfter)
		problem(w, http.StatusServiceUnavailable, "unavailable", "receiver is down")
		return
	}
	if f.RedirectTo != "" {
		s.fault()
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, f.RedirectTo, http.StatusTemporaryRedirect)
		return
	}
	if ok, present := s.authorized(r); !ok {
		s.reject(reasonAuth)
		_, _ = io.Copy(io.Discard, r.Body)
		if present {
			w.Header().Set("WWW-Authenticate", `Bearer realm="datasync", error="invalid_token", error_description="unknown, expired or revoked token"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="datasync"`)
		}
		problem(w, http.StatusUnauthorized, "invalid_token", "a valid Bearer token from the token endpoint is required")
		return
	}
	if s.cfg.ClientCertForAPI && !hasClientCert(r) {
		s.reject(reasonClientCert)
		_, _ = io.Copy(io.Discard, r.Body)
		problem(w, http.StatusUnauthorized, "client_certificate_required", "a client certificate (mTLS) is required")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.reject(reasonContentType)
		_, _ = io.Copy(io.Discard, r.Body)
		problem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.reject(reasonTooLarge)
			problem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body exceeds %d bytes", MaxBodyBytes))
			return
		}
		s.reject(reasonBody)
		return // the client went away mid-body; nobody to answer
	}
	webhookID := ""
	if len(s.signKeys) > 0 {
		if webhookID, err = s.verifySignature(r.Header, body, time.Now()); err != nil {
			s.reject(reasonSignature)
			problem(w, http.StatusUnauthorized, "invalid_signature", err.Error())
			return
		}
		s.mu.Lock()
		s.signedIDs = append(s.signedIDs, webhookID)
		s.mu.Unlock()
	}
	env, err := mapping.DecodeEnvelope(body)
	if err != nil {
		s.reject(reasonEnvelope)
		problem(w, http.StatusBadRequest, "bad_envelope", err.Error())
		return
	}
	if lim != nil {
		n := min(len(env.Messages), lim.Burst())
		if !lim.AllowN(time.Now(), n) {
			s.fault()
			retry := f.RetryAfter
			if retry <= 0 {
				retry = time.Duration(float64(n) / f.RateLimit * float64(time.Second))
			}
			setRetryAfter(w, max(retry, time.Second))
			problem(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("at most %g messages per second", f.RateLimit))
			return
		}
	}
	if f.FailRate > 0 && mrand.Float64() < f.FailRate {
		s.fault()
		setRetryAfter(w, f.RetryAfter)
		problem(w, f.FailStatus, "injected_failure", "failure injected by the reference receiver")
		return
	}
	if s.cfg.Strict {
		for i, m := range env.Messages {
			if isSample(m) {
				continue
			}
			if err := mapping.CheckMessage(m); err != nil {
				s.reject(reasonPayload)
				problem(w, http.StatusBadRequest, "bad_payload", fmt.Sprintf("message %d (uniqueId %q): %v", i, clip(m.UniqueID), err))
				return
			}
		}
	}
	s.accept(env.Messages, at, r.UserAgent(), r.Proto, webhookID)
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "accepted": len(env.Messages)})
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// accept records messages, logs them and calls the hook.
func (s *Server) accept(msgs []mapping.Message, at time.Time, userAgent, proto, webhookID string) {
	recs := make([]Received, len(msgs))
	s.mu.Lock()
	for i, m := range msgs {
		rec := Received{Message: m, At: at, UserAgent: userAgent, Proto: proto, WebhookID: webhookID, Sample: isSample(m)}
		if rec.Sample {
			s.stats.Samples++
		} else {
			s.stats.Messages++
			if _, dup := s.seen[m.UniqueID]; dup {
				rec.Duplicate = true
				s.stats.Duplicates++
			} else {
				s.seen[m.UniqueID] = struct{}{}
			}
		}
		recs[i] = rec
	}
	s.mu.Unlock()
	if s.cfg.Log != nil {
		s.logMu.Lock()
		enc := json.NewEncoder(s.cfg.Log)
		for _, rec := range recs {
			_ = enc.Encode(logLine{
				At: rec.At.UTC().Format(time.RFC3339Nano), Action: rec.Message.Action, Type: rec.Message.Type,
				UniqueID: rec.Message.UniqueID, PayloadBytes: len(rec.Message.Payload), Duplicate: rec.Duplicate, Sample: rec.Sample,
			})
		}
		s.logMu.Unlock()
	}
	if s.cfg.OnMessage != nil {
		for _, rec := range recs {
			s.cfg.OnMessage(rec)
		}
	}
}

type logLine struct {
	At           string `json:"at"`
	Action       string `json:"action"`
	Type         string `json:"type"`
	UniqueID     string `json:"uniqueId"`
	PayloadBytes int    `json:"payloadBytes"`
	Duplicate    bool   `json:"duplicate,omitempty"`
	Sample       bool   `json:"sample,omitempty"`
}

// reset closes the request's TCP connection abruptly (RST, no TLS close_notify, no response).
func (s *Server) reset(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	s.fault()
	raw := conn
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
	return true
}

// hasClientCert reports whether the TLS handshake verified a client certificate.
func hasClientCert(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

// missingScopes returns the required scopes (space-separated) absent from the requested ones.
func missingScopes(required, requested string) string {
	have := map[string]bool{}
	for _, sc := range strings.Fields(requested) {
		have[sc] = true
	}
	var missing []string
	for _, sc := range strings.Fields(required) {
		if !have[sc] {
			missing = append(missing, sc)
		}
	}
	return strings.Join(missing, " ")
}

// verifySignature checks a request's Standard Webhooks headers: webhook-id, a webhook-timestamp
// within the tolerance, and a webhook-signature holding at least one "v1,<base64>" equal to
// HMAC-SHA256(key, id "." timestamp "." body) under one of the configured keys. It returns the
// webhook-id.
func (s *Server) verifySignature(h http.Header, body []byte, now time.Time) (string, error) {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return "", errors.New("webhook-id, webhook-timestamp and webhook-signature are required")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", errors.New("webhook-timestamp must be Unix seconds")
	}
	if d := now.Sub(time.Unix(secs, 0)); d > s.cfg.SignatureTolerance || d < -s.cfg.SignatureTolerance {
		return "", fmt.Errorf("webhook-timestamp is %s away from now (tolerance %s)", d.Round(time.Second), s.cfg.SignatureTolerance)
	}
	signed := append([]byte(id+"."+ts+"."), body...)
	for _, key := range s.signKeys {
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		want := mac.Sum(nil)
		for _, sig := range strings.Fields(sigs) {
			version, b64, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return id, nil
			}
		}
	}
	return "", errors.New("no webhook-signature matches the body under a known secret")
}
