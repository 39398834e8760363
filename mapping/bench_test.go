package mapping_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/cdc-relay/cdc-relay/mapping"
)

func benchMessages(b *testing.B, n int) []mapping.Message {
	payload := samplePayload(b, "customer-update.body.json")
	msgs := make([]mapping.Message, n)
	for i := range msgs {
		msgs[i] = mapping.Message{Action: "CUSTOMERMOD", Payload: payload, Type: "CUSTOMER", UniqueID: fmt.Sprint(26764466 + i)}
	}
	return msgs
}

// BenchmarkAppendEnvelope compares the hand-written encoder with encoding/json on the same input
// (1 and 100 copies of the appendix's customer payload).
func BenchmarkAppendEnvelope(b *testing.B) {
	for _, n := range []int{1, 100} {
		msgs := benchMessages(b, n)
		size := len(mapping.AppendEnvelope(nil, msgs))
		b.Run(fmt.Sprintf("append/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			buf := make([]byte, 0, size)
			for b.Loop() {
				buf = mapping.AppendEnvelope(buf[:0], msgs)
			}
		})
		b.Run(fmt.Sprintf("json.Marshal/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			env := mapping.Envelope{Messages: msgs}
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				if err := enc.Encode(env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckPayload measures the strict validation a row gets before it is sent.
func BenchmarkCheckPayload(b *testing.B) {
	cust := []byte(samplePayload(b, "customer-update.body.json"))
	trn := []byte(samplePayload(b, "transaction-create.body.json"))
	b.Run("customer", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(cust)))
		for b.Loop() {
			if err := mapping.CheckPayload("Customer", "UPDATE", "2142", cust); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("transaction", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(trn)))
		for b.Loop() {
			if err := mapping.CheckPayload("Transaction", "CREATE", "99901000022017110710000100", trn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("delete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := mapping.CheckPayload("Customer", "DELETE", "2142", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCompact compares Compact with encoding/json.Compact on the appendix's customer payload
// spaced as PostgreSQL's json_build_object renders it (" : " and ", ").
func BenchmarkCompact(b *testing.B) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(samplePayload(b, "customer-update.body.json"))); err != nil {
		b.Fatal(err)
	}
	spaced := bytes.ReplaceAll(bytes.ReplaceAll(compact.Bytes(), []byte(`":`), []byte(`" : `)), []byte(`,"`), []byte(`, "`))
	b.Run("Compact", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(spaced)))
		for b.Loop() {
			mapping.Compact(spaced)
		}
	})
	b.Run("json.Compact", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(spaced)))
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			_ = json.Compact(&buf, spaced)
			_ = append([]byte(nil), buf.Bytes()...)
		}
	})
}
