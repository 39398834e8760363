package sender

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/cdc-relay/cdc-relay/internal/credentials"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// Token endpoint client authentication styles (DataSyncTokenAuthStyle).
const (
	AuthStyleAuto  = "auto"  // HTTP Basic first; the form body if the endpoint refuses it (remembered)
	AuthStyleBasic = "basic" // HTTP Basic only (RFC 6749 2.3.1's MUST for servers)
	AuthStyleBody  = "body"  // client_id and client_secret in the form body only
)

// Standard Webhooks headers, set when Config.Sign is true.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// CredentialSource gives the credential to use now. *credentials.Source reads it again after a
// rotation; its Origin.Version tells the sender when to rebuild what depends on it.
type CredentialSource interface {
	Get() (credentials.Credential, credentials.Origin, error)
}

// staticSource serves Config.Credential when no Source is given.
type staticSource struct{ c credentials.Credential }

func (s staticSource) Get() (credentials.Credential, credentials.Origin, error) {
	return s.c, credentials.Origin{Where: "the configured credential", Version: 1}, nil
}

// identity is everything derived from one version of the credential.
type identity struct {
	version   int
	cred      credentials.Credential
	origin    credentials.Origin
	conf      *clientcredentials.Config
	cert      *tls.Certificate // mTLS client certificate; nil when none
	signKeys  [][]byte         // Standard Webhooks keys, when signing
	scope     string
	audience  string
	authStyle string
}

func authStyle(name string) (oauth2.AuthStyle, error) {
	switch name {
	case AuthStyleAuto:
		return oauth2.AuthStyleAutoDetect, nil
	case "", AuthStyleBasic:
		return oauth2.AuthStyleInHeader, nil
	case AuthStyleBody:
		return oauth2.AuthStyleInParams, nil
	}
	return 0, fmt.Errorf("%w: DataSyncTokenAuthStyle %q: use auto, basic or body", ErrBadURL, name)
}

// identity returns what the current credential gives, rebuilding it when the source read a new
// version (a rotated secret, store or certificate): the token is then dropped and, when the
// client certificate changed, idle connections closed, so the next request uses the new one.
func (s *Sender) identity() (*identity, error) {
	cred, origin, err := s.src.Get()
	if err != nil {
		return nil, err
	}
	cur := s.cur.Load()
	if cur == nil || cur.version != origin.Version {
		s.identMu.Lock()
		if cur = s.cur.Load(); cur == nil || cur.version != origin.Version {
			next, err := s.buildIdentity(cred, origin)
			if err != nil {
				s.identMu.Unlock()
				return nil, err
			}
			s.cur.Store(next)
			if cur != nil {
				s.tokens.drop()
				if cur.cert != next.cert {
					s.transport.CloseIdleConnections()
				}
				s.log.Info("the credential changed and was read again; using it from now on",
					zap.String("from", origin.Where), zap.String("client_id", cred.ClientID), zap.Int("version", origin.Version))
			}
			cur = next
		}
		s.identMu.Unlock()
	}
	if cur.cert != nil && time.Now().After(cur.cert.Leaf.NotAfter) {
		_, err := cur.cred.Certificate(time.Now()) // says it expired, naming the fix
		return nil, fmt.Errorf("%w (client certificate from %s)", err, origin)
	}
	return cur, nil
}

func (s *Sender) buildIdentity(cred credentials.Credential, origin credentials.Origin) (*identity, error) {
	if !cred.Complete() {
		return nil, fmt.Errorf("%w: no OAuth2 client id and secret in %s: run cdc-relay credentials set", credentials.ErrIncomplete, origin)
	}
	id := &identity{version: origin.Version, cred: cred, origin: origin, scope: s.scope, audience: s.audience, authStyle: s.authStyle}
	if cred.ClientCertPEM != "" || cred.ClientKeyPEM != "" {
		cert, err := cred.Certificate(time.Now())
		if err != nil {
			return nil, fmt.Errorf("%w (client certificate from %s)", err, origin)
		}
		id.cert = &cert
		if warn := cred.ExpiryWarning(time.Now()); warn != "" {
			s.log.Warn(warn, zap.String("from", origin.Where))
		}
	}
	if s.sign {
		for _, secret := range cred.SigningSecrets {
			key, err := credentials.SigningKey(secret)
			if err != nil {
				return nil, fmt.Errorf("%w (%s)", err, origin)
			}
			id.signKeys = append(id.signKeys, key)
		}
		if len(id.signKeys) == 0 {
			return nil, fmt.Errorf("%w: DataSyncSigning is standard-webhooks but %s holds no signing secret: run cdc-relay credentials set --signing-secret-file FILE, or set DataSyncSigning off",
				credentials.ErrSigningSecret, origin)
		}
	}
	style, err := authStyle(s.authStyle)
	if err != nil {
		return nil, err
	}
	id.conf = &clientcredentials.Config{
		ClientID:     cred.ClientID,
		ClientSecret: cred.ClientSecret,
		TokenURL:     s.tokenURL,
		Scopes:       strings.Fields(s.scope),
		AuthStyle:    style,
	}
	if s.audience != "" {
		id.conf.EndpointParams = url.Values{"audience": {s.audience}}
	}
	return id, nil
}

// clientCertificate hands the TLS stack the current client certificate (an empty one when none
// is configured, which a server that does not require one accepts).
func (s *Sender) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if id := s.cur.Load(); id != nil && id.cert != nil {
		return id.cert, nil
	}
	return &tls.Certificate{}, nil
}

// Signed is what a Standard Webhooks signature covered, for `send-sample` and diagnostics: the
// headers sent, never the secrets.
type Signed struct {
	ID        string
	Timestamp string
	Signature string // the webhook-signature header: "v1,<base64>" per secret, space-separated
}

// webhookID is the body's stable id: the uniqueId of a single message, or for a batch "batch_"
// and a hash of its uniqueIds in order, so a retry of the same records carries the same id.
func webhookID(body []byte) (string, error) {
	env, err := mapping.DecodeEnvelope(body)
	if err != nil {
		return "", fmt.Errorf("signing the request: the body is not a Data Sync envelope: %w", err)
	}
	if len(env.Messages) == 1 {
		return env.Messages[0].UniqueID, nil
	}
	h := sha256.New()
	for _, m := range env.Messages {
		h.Write([]byte(m.UniqueID))
		h.Write([]byte{'\n'})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// sign sets the Standard Webhooks headers on h: HMAC-SHA256 over "id.timestamp.body" with each
// key, base64, as "v1,<sig>" separated by spaces.
func sign(h http.Header, keys [][]byte, id string, now time.Time, body []byte) Signed {
	ts := strconv.FormatInt(now.Unix(), 10)
	sigs := make([]string, len(keys))
	for i, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	sg := Signed{ID: id, Timestamp: ts, Signature: strings.Join(sigs, " ")}
	h.Set(HeaderWebhookID, sg.ID)
	h.Set(HeaderWebhookTimestamp, sg.Timestamp)
	h.Set(HeaderWebhookSignature, sg.Signature)
	return sg
}
