package mapping_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cdc-relay/cdc-relay/mapping"
)

func FuzzAppendEnvelope(f *testing.F) {
	f.Add("CUSTOMERMOD", samplePayload(f, "customer-update.body.json"), "CUSTOMER", "26764466")
	f.Add("POSTRNCRE", samplePayload(f, "transaction-create.body.json"), "POSTRN", "26764581")
	f.Add("CUSTOMERCRE", "Test message", "CUSTOMER", "0")
	for _, s := range trickyStrings {
		f.Add(s, s, s, s)
	}
	f.Fuzz(func(t *testing.T, action, payload, typ, uniqueID string) {
		msgs := []mapping.Message{{Action: action, Payload: payload, Type: typ, UniqueID: uniqueID}, {Payload: uniqueID}}
		got := mapping.AppendEnvelope(nil, msgs)
		want := marshalNoHTML(t, mapping.Envelope{Messages: msgs})
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendEnvelope differs from encoding/json:\n got %q\nwant %q", got, want)
		}
		if _, err := mapping.DecodeEnvelope(got); err != nil {
			t.Fatalf("own output does not decode: %v", err)
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, name := range []string{"customer-update.body.json", "transaction-create.body.json", "send-sample-message.body.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"messages":[]}`))
	f.Add([]byte(`{"messages":[{"action":"A","payload":"\u2028\ud800","type":"T","uniqueId":"1"}]} `))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := mapping.DecodeEnvelope(body)
		if err != nil {
			if !errors.Is(err, mapping.ErrBadEnvelope) {
				t.Fatalf("error does not wrap ErrBadEnvelope: %v", err)
			}
			return
		}
		if len(env.Messages) == 0 {
			t.Fatal("accepted an envelope without messages")
		}
		// Whatever is accepted re-encodes to an equivalent body that decodes to the same messages.
		out := mapping.AppendEnvelope(nil, env.Messages)
		again, err := mapping.DecodeEnvelope(out)
		if err != nil {
			t.Fatalf("re-encoded envelope rejected: %v", err)
		}
		if len(again.Messages) != len(env.Messages) {
			t.Fatal("message count changed")
		}
		for i := range env.Messages {
			if again.Messages[i] != env.Messages[i] {
				t.Fatalf("message %d changed: %+v -> %+v", i, env.Messages[i], again.Messages[i])
			}
		}
	})
}

func FuzzCheckPayload(f *testing.F) {
	f.Add("Customer", "UPDATE", "2142", []byte(samplePayload(f, "customer-update.body.json")))
	f.Add("Customer", "CREATE", "2142", readTestdata(f, "customer-update.payload.json"))
	f.Add("Transaction", "CREATE", "99901000022017110710000100", []byte(samplePayload(f, "transaction-create.body.json")))
	f.Add("Transaction", "CREATE", "99901000022017110710000100", readTestdata(f, "transaction-create.payload.json"))
	f.Add("Customer", "DELETE", "2142", []byte(nil))
	f.Add("Customer", "DELETE", "2142", []byte("2142"))
	f.Add("Customer", "CREATE", "0", []byte("Test message"))
	f.Fuzz(func(t *testing.T, obj, action, key string, payload []byte) {
		err := mapping.CheckPayload(obj, action, key, payload)
		if err == nil {
			typ, act, lerr := mapping.Lookup(obj, action)
			if lerr != nil {
				t.Fatalf("accepted an unmapped row: %v", lerr)
			}
			switch act {
			case mapping.ActionCustomerDelete:
				if key == "" {
					t.Fatal("accepted a delete without id")
				}
			case mapping.ActionTransactionCreate:
				tr, derr := mapping.DecodeTransaction(payload)
				if derr != nil || tr.RetailTransactionID != key {
					t.Fatalf("accepted %s payload that does not decode or match: %v", typ, derr)
				}
			default:
				c, derr := mapping.DecodeCustomer(payload)
				if derr != nil || c.CustomerID != key {
					t.Fatalf("accepted %s payload that does not decode or match: %v", typ, derr)
				}
			}
			return
		}
		if !errors.Is(err, mapping.ErrBadPayload) && !errors.Is(err, mapping.ErrUnknownObject) && !errors.Is(err, mapping.ErrUnknownAction) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if len(payload) >= 32 && bytes.Contains([]byte(err.Error()), payload) {
			t.Fatalf("error echoes the payload: %v", err)
		}
	})
}

// FuzzCompact: for every valid JSON document, Compact gives what encoding/json.Compact gives.
func FuzzCompact(f *testing.F) {
	for _, s := range []string{`{"customerID" : "1", "firstName" : "A \" b", "x" : [1, 2, {"y" : null}]}`,
		"{\n\t\"a\\\\\" : \" \\\" \\\\ \"\r\n}", `"plain"`, `{}`, ` [ ] `, `{"k":"v"}`, `{"a b" : "c\td"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if !json.Valid(src) {
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, src); err != nil {
			t.Fatalf("json.Compact refused valid JSON %q: %v", src, err)
		}
		if got := mapping.Compact(src); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("Compact(%q) = %q, want %q", src, got, want.Bytes())
		}
	})
}
