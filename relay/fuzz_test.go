package relay_test

import (
	"errors"
	"testing"

	"github.com/cdc-relay/cdc-relay/relay"
)

// FuzzCheckDelivery checks the settings validation the relay applies to data_sync_config
// values: it never panics, and it accepts only absolute https URLs (http only when allowed).
func FuzzCheckDelivery(f *testing.F) {
	for _, u := range []string{"https://r.example/datasync", "http://127.0.0.1:8080/x", "", "ftp://x", "https://", "://", "https://u:p@h/"} {
		f.Add(u, u, false)
	}
	f.Fuzz(func(t *testing.T, api, token string, allowHTTP bool) {
		s := relay.Settings{Enabled: true, APIURL: api, TokenURL: token}
		err := s.CheckDelivery(allowHTTP)
		if err != nil && !errors.Is(err, relay.ErrSettings) {
			t.Fatalf("error does not wrap ErrSettings: %v", err)
		}
	})
}
