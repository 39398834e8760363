package mapping_test

import (
	"bytes"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// readTestdata reads a file of the repository's testdata directory.
func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	require.NoError(tb, err)
	return b
}

// samplePayload returns the payload string carried by a testdata body.
func samplePayload(tb testing.TB, body string) string {
	tb.Helper()
	var env struct {
		Messages []struct {
			Payload string `json:"payload"`
		} `json:"messages"`
	}
	require.NoError(tb, json.Unmarshal(readTestdata(tb, body), &env))
	require.Len(tb, env.Messages, 1)
	return env.Messages[0].Payload
}

// marshalNoHTML is json.Marshal without HTML escaping and without the trailing newline: the
// reference AppendEnvelope must equal.
func marshalNoHTML(tb testing.TB, v any) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(tb, enc.Encode(v))
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// parseNumbers decodes JSON keeping numbers as json.Number.
func parseNumbers(tb testing.TB, b []byte) any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	require.NoError(tb, dec.Decode(&v))
	return v
}

// requireEquivalentJSON asserts two documents are the same JSON value, numbers compared
// numerically (1325.00 equals 1325) and exactly (no float rounding).
func requireEquivalentJSON(tb testing.TB, want, got []byte) {
	tb.Helper()
	if !equivalent(parseNumbers(tb, want), parseNumbers(tb, got)) {
		tb.Fatalf("JSON differs:\nwant %s\n got %s", want, got)
	}
}

func equivalent(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			bv, ok := bm[k]
			if !ok || !equivalent(av, bv) {
				return false
			}
		}
		return true
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return false
		}
		for i := range a {
			if !equivalent(a[i], bs[i]) {
				return false
			}
		}
		return true
	case json.Number:
		bn, ok := b.(json.Number)
		if !ok {
			return false
		}
		ar, ok1 := new(big.Rat).SetString(string(a))
		br, ok2 := new(big.Rat).SetString(string(bn))
		return ok1 && ok2 && ar.Cmp(br) == 0
	default:
		return a == b
	}
}
