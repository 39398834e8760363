package credentials

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseStore feeds arbitrary bytes to the credential store parser: it must never panic,
// must report failures as ErrCorrupt, and must never echo a secret in its error.
func FuzzParseStore(f *testing.F) {
	f.Add([]byte(`{"ce_credentials":{"datasync":{"client_id":"id","client_secret":"TOPSECRET"}}}`))
	f.Add([]byte(`{"ce_credentials":{"datasync":{"client_id":"id"`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Add([]byte(`{"a":{"b":{"client_id":1,"client_secret":"TOPSECRET"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStore("/x/credentials.json", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parse error does not wrap ErrCorrupt: %v", err)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error echoes the secret: %v", err)
			}
			return
		}
		for _, m := range st {
			for _, e := range m {
				_ = e
			}
		}
	})
}
