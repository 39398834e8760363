package receiver

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func whsec(t *testing.T) (string, []byte) {
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	return "whsec_" + base64.StdEncoding.EncodeToString(key), key
}

// signedPost posts b with Standard Webhooks headers computed here over signed (id.timestamp.body,
// HMAC-SHA256); signed is b unless a test tampers.
func signedPost(t *testing.T, s *Server, c *http.Client, tok string, b, signed []byte, id string, ts time.Time, keys ...[]byte) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL(), bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	if id != "" {
		stamp := strconv.FormatInt(ts.Unix(), 10)
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", stamp)
		var sigs []byte
		for _, k := range keys {
			m := hmac.New(sha256.New, k)
			m.Write([]byte(id + "." + stamp + "."))
			m.Write(signed)
			if len(sigs) > 0 {
				sigs = append(sigs, ' ')
			}
			sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil))...)
		}
		req.Header.Set("webhook-signature", string(sigs))
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: buf.String()}
}

func TestSignatureVerification(t *testing.T) {
	t.Parallel()
	secretA, keyA := whsec(t)
	secretB, keyB := whsec(t)
	_, keyC := whsec(t)
	var got []Received
	s := start(t, Config{SigningSecrets: []string{secretA, secretB}, OnMessage: func(r Received) { got = append(got, r) }})
	c := client(t, s, nil)
	tok := token(t, s, c)
	b := body(msg("5"))
	now := time.Now()

	for name, tc := range map[string]struct {
		id   string
		ts   time.Time
		keys [][]byte
		want int
	}{
		"missing headers":       {"", now, nil, http.StatusUnauthorized},
		"unknown secret":        {"5", now, [][]byte{keyC}, http.StatusUnauthorized},
		"too old":               {"5", now.Add(-6 * time.Minute), [][]byte{keyA}, http.StatusUnauthorized},
		"from the future":       {"5", now.Add(6 * time.Minute), [][]byte{keyA}, http.StatusUnauthorized},
		"first secret":          {"5", now, [][]byte{keyA}, http.StatusOK},
		"second secret":         {"5", now, [][]byte{keyB}, http.StatusOK},
		"one of two signatures": {"5", now, [][]byte{keyC, keyB}, http.StatusOK},
	} {
		r := signedPost(t, s, c, tok, b, b, tc.id, tc.ts, tc.keys...)
		assert.Equal(t, tc.want, r.status, "%s: %s", name, r.body)
		if tc.want != http.StatusOK {
			assert.Contains(t, r.body, "invalid_signature", name)
		}
	}
	// The signature covers the body.
	req := signedPost(t, s, c, tok, append(b[:len(b):len(b)], ' '), b, "5", now, keyA)
	assert.Equal(t, http.StatusUnauthorized, req.status, "a changed body is refused")
	assert.Equal(t, 5, s.Stats().Rejected[reasonSignature])
	require.Len(t, got, 3)
	assert.Equal(t, "5", got[0].WebhookID)
}

func TestIdentityConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TokenAuthStyle: "header"}, "use basic, body, or empty for both"},
		{Config{ClientCertForAPI: true}, "needs ClientCAPEM"},
		{Config{ClientCertForToken: true, ClientCAPEM: []byte("not pem")}, "holds no PEM certificate"},
		{Config{SigningSecrets: []string{"plain-secret"}}, "starts with whsec_"},
	} {
		tc.cfg.ClientID, tc.cfg.ClientSecret = testID, testSecret
		_, err := New(tc.cfg)
		require.ErrorIs(t, err, ErrConfig)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "plain-secret")
	}
}
