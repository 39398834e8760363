package sender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/internal/safetext"
)

// expiryMargin is how long before its expiry a token stops being reused, so a token does not
// expire between being handed out and reaching the receiver.
const expiryMargin = 10 * time.Second

// tokenCache holds the current OAuth2 token. clientcredentials.Config.Token always fetches;
// tokenCache reuses the token until shortly before it expires, makes concurrent callers share
// one fetch, and lets a 401 drop exactly the token that was rejected (compare-and-swap).
type tokenCache struct {
	tokenURL   string
	ident      func() (*identity, error) // the credential to use now (re-read after a rotation)
	base       context.Context           // long-lived; carries the token endpoint's HTTP client
	timeout    time.Duration
	defaultTTL time.Duration
	now        func() time.Time
	log        *zap.Logger
	fetches    *prometheus.CounterVec // token requests by result (ok, error)

	mu       sync.Mutex
	tok      string
	expiry   time.Time
	fetching chan struct{} // closed when the fetch in progress ends; nil when none
	lastErr  error         // result of the fetch that just ended, for its waiters
	warned   bool          // "no expires_in" warning logged
	waiters  int           // callers waiting for a fetch, for tests
}

// get returns a valid access token, fetching one when there is none or it is about to expire.
// Concurrent callers wait for the same fetch; a caller whose ctx ends stops waiting, while the
// fetch itself carries on for the others.
func (c *tokenCache) get(ctx context.Context) (string, error) {
	c.mu.Lock()
	for {
		if c.tok != "" && c.now().Before(c.expiry) {
			tok := c.tok
			c.mu.Unlock()
			return tok, nil
		}
		if c.fetching == nil {
			break
		}
		done := c.fetching
		c.waiters++
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			c.mu.Lock()
			c.waiters--
			c.mu.Unlock()
			return "", fmt.Errorf("%w: waiting for an OAuth2 token: %w", ErrToken, ctx.Err())
		}
		c.mu.Lock()
		c.waiters--
		if c.tok == "" && c.lastErr != nil && c.fetching == nil {
			err := c.lastErr
			c.mu.Unlock()
			return "", err
		}
	}
	done := make(chan struct{})
	c.fetching = done
	c.mu.Unlock()

	tok, expiry, err := c.fetch()

	c.mu.Lock()
	c.fetching = nil
	c.lastErr = err
	if err == nil {
		c.tok, c.expiry = tok, expiry
	}
	close(done)
	c.mu.Unlock()
	if err != nil {
		return "", err
	}
	return tok, nil
}

// invalidate drops tok if it is still the current token, so of many requests rejected with the
// same token only the first causes a new fetch.
func (c *tokenCache) invalidate(tok string) {
	c.mu.Lock()
	if c.tok == tok {
		c.tok, c.expiry = "", time.Time{}
	}
	c.mu.Unlock()
}

// drop forgets the current token whatever it is: the credential it was issued for changed.
func (c *tokenCache) drop() {
	c.mu.Lock()
	c.tok, c.expiry = "", time.Time{}
	c.mu.Unlock()
}

// fetch asks the token endpoint for a new token, bounded by the request timeout.
func (c *tokenCache) fetch() (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(c.base, c.timeout)
	defer cancel()
	start := c.now()
	id, err := c.ident()
	if err != nil {
		c.fetches.WithLabelValues("error").Inc()
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrToken, err)
	}
	t, err := id.conf.Token(ctx)
	if err != nil {
		c.fetches.WithLabelValues("error").Inc()
		return "", time.Time{}, c.describe(err, id)
	}
	c.fetches.WithLabelValues("ok").Inc()
	var lifetime time.Duration
	switch {
	case !t.Expiry.IsZero():
		// clientcredentials sets Expiry from expires_in against the real clock; take the lifetime.
		lifetime = time.Until(t.Expiry)
	default:
		lifetime = c.defaultTTL
		c.mu.Lock()
		first := !c.warned
		c.warned = true
		c.mu.Unlock()
		if first {
			c.log.Warn("token endpoint gave no expires_in; reusing each token for the default TTL",
				zap.String("token_url", c.tokenURL), zap.Duration("default_token_ttl", c.defaultTTL))
		}
	}
	// Stop reusing a token expiryMargin before it expires, or halfway through a short life.
	margin := min(expiryMargin, lifetime/2)
	return t.AccessToken, start.Add(lifetime - margin), nil
}

// describe turns an oauth2 error into one naming the token URL, the credential's origin and
// the fix. It quotes the endpoint's error and error_description (cleaned, bounded, with the
// secret redacted should the endpoint echo it) but never the rest of the body.
func (c *tokenCache) describe(err error, id *identity) error {
	prefix := fmt.Sprintf("fetching OAuth2 token from %s", c.tokenURL)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		status := re.Response.StatusCode
		said := quoteOAuthError(re, id.cred)
		whose := fmt.Sprintf("client id %q from %s", id.cred.ClientID, id.origin)
		switch {
		case status >= 300 && status < 400:
			return fmt.Errorf("%w: %s: the token endpoint redirected to %s; cdc-relay never follows redirects: set DataSyncTokenUrl to the final URL",
				ErrToken, prefix, locationHost(re.Response))
		case re.ErrorCode == "invalid_scope":
			return fmt.Errorf("%w: %s: the token endpoint refused the scope %q (HTTP %d%s): set DataSyncTokenScope to a scope the client is granted, such as api://partner/.default",
				ErrToken, prefix, id.scope, status, said)
		case status == http.StatusUnauthorized || status == http.StatusForbidden || re.ErrorCode == "invalid_client" || re.ErrorCode == "unauthorized_client":
			return fmt.Errorf("%w: %s: the token endpoint rejected the client credentials (%s; HTTP %d%s): check them with cdc-relay credentials show and set them again with cdc-relay credentials set, or set DataSyncTokenAuthStyle (now %s) to the style the provider accepts",
				ErrToken, prefix, whose, status, said, id.authStyle)
		case status >= 200 && status < 300:
			return fmt.Errorf("%w: %s: the token endpoint answered HTTP %d with an OAuth2 error%s: check the client's grants at the token provider",
				ErrToken, prefix, status, said)
		case status == http.StatusBadRequest:
			return fmt.Errorf("%w: %s: the token endpoint refused the request for %s (HTTP %d%s): check DataSyncTokenScope (%q), DataSyncTokenAudience (%q) and DataSyncTokenAuthStyle (%s) against the provider's documentation",
				ErrToken, prefix, whose, status, said, id.scope, id.audience, id.authStyle)
		default:
			return fmt.Errorf("%w: %s: the token endpoint answered HTTP %d%s", ErrToken, prefix, status, said)
		}
	}
	if tlsErr := classifyTLS(err); tlsErr != nil {
		return fmt.Errorf("%w: %s: %w", ErrToken, prefix, tlsErr)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("%w: %s: no answer within %s: check the token endpoint is up, or raise the request timeout", ErrToken, prefix, c.timeout)
		}
		return fmt.Errorf("%w: %s: %w", ErrToken, prefix, ue.Err)
	}
	// Parse failures: oauth2's own messages may quote the body, so say what happened in our words.
	if strings.Contains(err.Error(), "missing access_token") {
		return fmt.Errorf("%w: %s: the response has no access_token: check DataSyncTokenUrl", ErrToken, prefix)
	}
	return fmt.Errorf("%w: %s: the response is not a valid OAuth2 token (not JSON or a form with access_token): check DataSyncTokenUrl", ErrToken, prefix)
}

// quoteOAuthError renders RFC 6749's error and error_description as `, error "x": "y"`,
// control characters escaped, each bounded, and any secret of cred replaced.
func quoteOAuthError(re *oauth2.RetrieveError, cred credentials.Credential) string {
	if re.ErrorCode == "" {
		return ""
	}
	clean := func(s string) string {
		for _, secret := range append([]string{cred.ClientSecret, cred.ClientKeyPEM}, cred.SigningSecrets...) {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, "[redacted]")
			}
		}
		s = safetext.Clean(s)
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		return s
	}
	out := fmt.Sprintf(", error %q", clean(re.ErrorCode))
	if re.ErrorDescription != "" {
		out += fmt.Sprintf(": %q", clean(re.ErrorDescription))
	}
	return out
}
