package mapping_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cdc-relay/cdc-relay/mapping"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	good := []struct{ obj, action, typ, msgAction string }{
		{mapping.ObjCustomer, mapping.ActionCreate, mapping.TypeCustomer, "CUSTOMERCRE"},
		{mapping.ObjCustomer, mapping.ActionUpdate, mapping.TypeCustomer, "CUSTOMERMOD"},
		{mapping.ObjCustomer, mapping.ActionDelete, mapping.TypeCustomer, "CUSTOMERDEL"},
		{mapping.ObjTransaction, mapping.ActionCreate, mapping.TypeTransaction, "POSTRNCRE"},
	}
	for _, g := range good {
		typ, act, err := mapping.Lookup(g.obj, g.action)
		require.NoError(t, err)
		require.Equal(t, g.typ, typ)
		require.Equal(t, g.msgAction, act)
		// And back again.
		obj, action, err := mapping.ObjectAction(typ, act)
		require.NoError(t, err)
		require.Equal(t, g.obj, obj)
		require.Equal(t, g.action, action)
	}
	require.Equal(t, "CUSTOMER", mapping.TypeCustomer)
	require.Equal(t, "POSTRN", mapping.TypeTransaction)

	bad := []struct {
		obj, action string
		sentinel    error
		mention     []string
	}{
		{"customer", "CREATE", mapping.ErrUnknownObject, []string{`"customer"`, "Customer, Transaction"}},
		{"CUSTOMER", "CREATE", mapping.ErrUnknownObject, []string{`"CUSTOMER"`}},
		{"", "CREATE", mapping.ErrUnknownObject, []string{`""`}},
		{"Custome", "UPDATE", mapping.ErrUnknownObject, []string{`"Custome"`}},
		{"Customer", "create", mapping.ErrUnknownAction, []string{`"create"`, "CREATE, UPDATE, DELETE"}},
		{"Customer", "MERGE", mapping.ErrUnknownAction, []string{`"MERGE"`}},
		{"Transaction", "UPDATE", mapping.ErrUnknownAction, []string{`"UPDATE"`, "CREATE"}},
		{"Transaction", "DELETE", mapping.ErrUnknownAction, []string{`"DELETE"`}},
	}
	for _, b := range bad {
		typ, act, err := mapping.Lookup(b.obj, b.action)
		require.ErrorIs(t, err, b.sentinel, "%q/%q", b.obj, b.action)
		require.Empty(t, typ)
		require.Empty(t, act)
		for _, m := range b.mention {
			require.Contains(t, err.Error(), m)
		}
	}
}

func TestObjectActionUnknown(t *testing.T) {
	t.Parallel()
	_, _, err := mapping.ObjectAction("CUSTOMERS", "CUSTOMERCRE")
	require.ErrorIs(t, err, mapping.ErrUnknownObject)
	require.Contains(t, err.Error(), "CUSTOMER, POSTRN")
	_, _, err = mapping.ObjectAction("CUSTOMER", "POSTRNCRE")
	require.ErrorIs(t, err, mapping.ErrUnknownAction)
	_, _, err = mapping.ObjectAction("POSTRN", "CUSTOMERCRE")
	require.ErrorIs(t, err, mapping.ErrUnknownAction)
}

func TestLookupDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := mapping.Lookup(mapping.ObjTransaction, mapping.ActionCreate); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

func TestGoldenBodies(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"customer-update.body.json", "transaction-create.body.json", "send-sample-message.body.json"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw := readTestdata(t, name)
			env, err := mapping.DecodeEnvelope(raw)
			require.NoError(t, err)
			require.Len(t, env.Messages, 1)

			out := mapping.AppendEnvelope(nil, env.Messages)
			requireEquivalentJSON(t, raw, out)
			// The sample's escaping is exactly ours: compacting it gives our bytes.
			var compact bytes.Buffer
			require.NoError(t, json.Compact(&compact, raw))
			require.Equal(t, compact.String(), string(out))
			require.Equal(t, string(marshalNoHTML(t, env)), string(out))
		})
	}
}

func TestGoldenCustomer(t *testing.T) {
	t.Parallel()
	env, err := mapping.DecodeEnvelope(readTestdata(t, "customer-update.body.json"))
	require.NoError(t, err)
	m := env.Messages[0]
	require.Equal(t, mapping.TypeCustomer, m.Type)
	require.Equal(t, "CUSTOMERMOD", m.Action)
	require.Equal(t, "26764466", m.UniqueID)

	c, err := mapping.DecodeCustomer([]byte(m.Payload))
	require.NoError(t, err)
	require.Equal(t, "2142", c.CustomerID, "uniqueId is the queue row, not the customer")
	require.False(t, c.Prospect)
	require.Nil(t, c.FirstPurchaseDate)
	require.Equal(t, "true", c.Validation.ValidFlag)
	require.Equal(t, "Vzxcv", *c.EntityInformation.Individual.Name.Name[0].Value)
	require.Nil(t, c.EntityInformation.Individual.Name.Name[1].Value)
	require.Len(t, c.Franchisees.Franchisee, 4)
	require.Equal(t, int64(8), c.Franchisees.Franchisee[1].FranchiseeID)
	require.Equal(t, "<FRANCHISEE NAME> ", c.Franchisees.Franchisee[0].FranchiseeName)

	// Re-encoding gives back the very bytes CE sent, and the decoded sample file.
	require.Equal(t, m.Payload, string(marshalNoHTML(t, c)))
	std, err := json.Marshal(c)
	require.NoError(t, err)
	requireEquivalentJSON(t, readTestdata(t, "customer-update.payload.json"), std)

	fromFile, err := mapping.DecodeCustomer(readTestdata(t, "customer-update.payload.json"))
	require.NoError(t, err)
	require.Equal(t, c, fromFile)
}

func TestGoldenTransaction(t *testing.T) {
	t.Parallel()
	env, err := mapping.DecodeEnvelope(readTestdata(t, "transaction-create.body.json"))
	require.NoError(t, err)
	m := env.Messages[0]
	require.Equal(t, mapping.TypeTransaction, m.Type)
	require.Equal(t, "POSTRNCRE", m.Action)

	tr, err := mapping.DecodeTransaction([]byte(m.Payload))
	require.NoError(t, err)
	require.Equal(t, "99901000022017110710000100", tr.RetailTransactionID)
	require.Equal(t, mapping.Decimal("1325.00"), tr.Subtotal, "amount text kept")
	require.Equal(t, mapping.Decimal("79.50"), tr.TaxTotal)
	require.Equal(t, int64(10000100), tr.TransactionSequence)
	require.Len(t, tr.LineItems, 3)
	require.Len(t, tr.LineItems[0].LineItemModifiers, 1)
	require.Equal(t, "Tender", tr.LineItems[1].LineItemTypeCode)
	require.NotNil(t, tr.LineItems[1].LineItemModifiers, "empty array stays an array")
	require.NotNil(t, tr.TransactionProperties)

	require.Equal(t, m.Payload, string(marshalNoHTML(t, tr)))
	std, err := json.Marshal(tr)
	require.NoError(t, err)
	// The pretty file says 1325.0 where the body says 1325.00: equal numerically.
	requireEquivalentJSON(t, readTestdata(t, "transaction-create.payload.json"), std)

	fromFile, err := mapping.DecodeTransaction(readTestdata(t, "transaction-create.payload.json"))
	require.NoError(t, err)
	require.Equal(t, mapping.Decimal("1325.0"), fromFile.Subtotal)
}

func TestDecimal(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0", "-0", "1325.00", "1e10", "-1.5E-3", "12345678901234567890123.000001"} {
		var d mapping.Decimal
		require.NoError(t, json.Unmarshal([]byte(s), &d), s)
		out, err := json.Marshal(d)
		require.NoError(t, err)
		require.Equal(t, s, string(out))
	}
	for _, s := range []string{`"1"`, `true`, `null`, `{}`, `[]`} {
		var d mapping.Decimal
		err := json.Unmarshal([]byte(s), &d)
		var typeErr *json.UnmarshalTypeError
		require.ErrorAs(t, err, &typeErr, s)
	}
	out, err := json.Marshal(mapping.Decimal(""))
	require.NoError(t, err)
	require.Equal(t, "0", string(out), "zero value is 0")
	for _, s := range []string{"01", "1.", ".5", "1e", "+1", "0x10", "NaN", "1 "} {
		_, err := json.Marshal(mapping.Decimal(s))
		require.Error(t, err, s)
	}
}

// trickyStrings exercise every escaping branch of encoding/json.
var trickyStrings = []string{
	"", "plain", `quote " and backslash \`, "\\\"\\\"", "<FRANCHISEE NAME> & co >",
	"ctl \x00\x01\x07\b\t\n\v\f\r\x1b\x1f end", "del \x7f", "line\u2028para\u2029sep",
	"invalid \xff\xfe utf8 \xc3", "truncated \xe2\x80", "surrogate \xed\xa0\x80", "émoji 😀 ünïcödé",
	"\u2027\u202a", "/slash/", "\u00a0nbsp", strings.Repeat("ab\"", 100),
}

func TestAppendEnvelopeMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	var msgs []mapping.Message
	for i, s := range trickyStrings {
		m := mapping.Message{Action: s, Payload: s, Type: s, UniqueID: s}
		require.Equal(t, string(marshalNoHTML(t, mapping.Envelope{Messages: []mapping.Message{m}})),
			string(mapping.AppendEnvelope(nil, []mapping.Message{m})), "string %d %q", i, s)
		msgs = append(msgs, mapping.Message{Action: "CUSTOMERMOD", Payload: s, Type: "CUSTOMER", UniqueID: s})
	}
	require.Equal(t, string(marshalNoHTML(t, mapping.Envelope{Messages: msgs})), string(mapping.AppendEnvelope(nil, msgs)))
}

func TestAppendEnvelopeEdges(t *testing.T) {
	t.Parallel()
	require.Equal(t, `{"messages":null}`, string(mapping.AppendEnvelope(nil, nil)))
	require.Equal(t, `{"messages":[]}`, string(mapping.AppendEnvelope(nil, []mapping.Message{})))
	// It appends: the prefix is kept.
	out := mapping.AppendEnvelope([]byte("prefix:"), []mapping.Message{{UniqueID: "1"}})
	require.Equal(t, `prefix:{"messages":[{"action":"","payload":"","type":"","uniqueId":"1"}]}`, string(out))
}

func TestAppendEnvelopeDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	msgs := make([]mapping.Message, 100)
	for i := range msgs {
		msgs[i] = mapping.Message{Action: "CUSTOMERMOD", Payload: samplePayload(t, "customer-update.body.json"), Type: "CUSTOMER", UniqueID: "26764466"}
	}
	buf := mapping.AppendEnvelope(nil, msgs)
	allocs := testing.AllocsPerRun(20, func() {
		buf = mapping.AppendEnvelope(buf[:0], msgs)
	})
	require.Zero(t, allocs)
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	t.Parallel()
	const secret = "S3CRET-PAYLOAD"
	cases := []struct{ name, body, want string }{
		{"empty", ``, "empty"},
		{"blank", "  \n", "empty"},
		{"array", `[{"messages":[]}]`, "not a JSON object"},
		{"string", `"messages"`, "not a JSON object"},
		{"malformed", `{"messages":[{"action":"A","payload":"` + secret + `",}]}`, "not valid JSON"},
		{"truncated", `{"messages":[{"action":"A","payload":"` + secret, "truncated"},
		{"trailing", `{"messages":[{"action":"A","payload":"` + secret + `","type":"T","uniqueId":"1"}]} {}`, "trailing data"},
		{"unknown top field", `{"messages":[{"action":"A","payload":"x","type":"T","uniqueId":"1"}],"extra":1}`, `unknown field "extra"`},
		{"unknown message field", `{"messages":[{"action":"A","payload":"x","type":"T","uniqueId":"1","id":2}]}`, `unknown field "id"`},
		{"no messages", `{}`, `"messages" is missing or empty`},
		{"null messages", `{"messages":null}`, `"messages" is missing or empty`},
		{"empty messages", `{"messages":[]}`, `"messages" is missing or empty`},
		{"messages object", `{"messages":{}}`, `field "messages": expected array, got object`},
		{"missing action", `{"messages":[{"payload":"x","type":"T","uniqueId":"1"}]}`, `message 0: "action" is missing`},
		{"missing payload", `{"messages":[{"action":"A","type":"T","uniqueId":"1"}]}`, `"payload" is missing`},
		{"null payload", `{"messages":[{"action":"A","payload":null,"type":"T","uniqueId":"1"}]}`, `"payload" is missing`},
		{"missing type", `{"messages":[{"action":"A","payload":"x","uniqueId":"1"}]}`, `"type" is missing`},
		{"missing uniqueId", `{"messages":[{"action":"A","payload":"x","type":"T"},{"action":"A","payload":"x","type":"T"}]}`, `"uniqueId" is missing`},
		{"numeric uniqueId", `{"messages":[{"action":"A","payload":"x","type":"T","uniqueId":26764466}]}`, `field "messages.uniqueId": expected string, got number`},
		{"object payload", `{"messages":[{"action":"A","payload":{"k":"` + secret + `"},"type":"T","uniqueId":"1"}]}`, `field "messages.payload": expected string, got object`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env, err := mapping.DecodeEnvelope([]byte(c.body))
			require.Nil(t, env)
			require.ErrorIs(t, err, mapping.ErrBadEnvelope)
			require.Contains(t, err.Error(), c.want)
			require.NotContains(t, err.Error(), secret)
		})
	}
}

func TestDecodeEnvelopeMany(t *testing.T) {
	t.Parallel()
	msgs := []mapping.Message{
		{Action: "CUSTOMERDEL", Payload: "2142", Type: "CUSTOMER", UniqueID: "1"},
		{Action: "POSTRNCRE", Payload: "{}", Type: "POSTRN", UniqueID: "2"},
	}
	env, err := mapping.DecodeEnvelope(mapping.AppendEnvelope(nil, msgs))
	require.NoError(t, err)
	require.Equal(t, msgs, env.Messages)
}

func TestCheckPayloadAccepts(t *testing.T) {
	t.Parallel()
	cust := []byte(samplePayload(t, "customer-update.body.json"))
	trn := []byte(samplePayload(t, "transaction-create.body.json"))
	require.NoError(t, mapping.CheckPayload("Customer", "CREATE", "2142", cust))
	require.NoError(t, mapping.CheckPayload("Customer", "UPDATE", "2142", cust))
	require.NoError(t, mapping.CheckPayload("Customer", "UPDATE", "2142", readTestdata(t, "customer-update.payload.json")))
	require.NoError(t, mapping.CheckPayload("Transaction", "CREATE", "99901000022017110710000100", trn))
	require.NoError(t, mapping.CheckPayload("Customer", "DELETE", "2142", nil), "JSON_OBJECT is null for deletes")
	require.NoError(t, mapping.CheckPayload("Customer", "DELETE", "2142", []byte("2142")))

	require.NoError(t, mapping.CheckMessage(mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERMOD", Payload: string(cust), UniqueID: "26764466"}))
	require.NoError(t, mapping.CheckMessage(mapping.Message{Type: "POSTRN", Action: "POSTRNCRE", Payload: string(trn), UniqueID: "26764581"}))
	require.NoError(t, mapping.CheckMessage(mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERDEL", Payload: "2142", UniqueID: "9"}))
}

func TestCheckPayloadLarge(t *testing.T) {
	t.Parallel()
	// A customer with 100,000 franchisees: several MB, valid, accepted.
	var b strings.Builder
	b.WriteString(`{"customerID":"2142","franchisees":{"franchisee":[`)
	for i := range 100000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"franchiseeId":12345,"franchiseeName":"<FRANCHISEE NAME> number twelve thousand"}`)
	}
	b.WriteString(`]}}`)
	require.Greater(t, b.Len(), 5<<20)
	require.NoError(t, mapping.CheckPayload("Customer", "CREATE", "2142", []byte(b.String())))
}

func TestCheckPayloadRejects(t *testing.T) {
	t.Parallel()
	const secret = "S3CRET-VALUE"
	cust := samplePayload(t, "customer-update.body.json")
	trn := samplePayload(t, "transaction-create.body.json")
	replace := func(s, old, new string) string {
		t.Helper()
		require.Contains(t, s, old)
		return strings.Replace(s, old, new, 1)
	}
	cases := []struct {
		name, obj, action, key, payload string
		sentinel                        error
		want                            string
	}{
		{"unknown object", "customer", "UPDATE", "2142", cust, mapping.ErrUnknownObject, `OBJ_NAME "customer"`},
		{"unknown action", "Customer", "MERGE", "2142", cust, mapping.ErrUnknownAction, `ACTION "MERGE"`},
		{"transaction update", "Transaction", "UPDATE", "1", trn, mapping.ErrUnknownAction, `ACTION "UPDATE"`},
		{"empty", "Customer", "CREATE", "2142", "", mapping.ErrBadPayload, "payload is empty"},
		{"json null", "Customer", "CREATE", "2142", "null", mapping.ErrBadPayload, "payload is not a JSON object"},
		{"array", "Customer", "UPDATE", "2142", "[" + cust + "]", mapping.ErrBadPayload, "payload is not a JSON object"},
		{"string", "Transaction", "CREATE", "1", `"` + secret + `"`, mapping.ErrBadPayload, "payload is not a JSON object"},
		{"malformed", "Customer", "UPDATE", "2142", `{"customerID":"2142","orgName":` + secret + `}`, mapping.ErrBadPayload, "payload is not valid JSON at byte"},
		{"truncated", "Customer", "UPDATE", "2142", cust[:len(cust)/2], mapping.ErrBadPayload, "payload is truncated JSON"},
		{"trailing", "Customer", "UPDATE", "2142", cust + ` {"customerID":"2142"}`, mapping.ErrBadPayload, "trailing data"},
		{"unknown field", "Customer", "UPDATE", "2142", replace(cust, `"prospect":false`, `"prospect":false,"vip":"`+secret+`"`), mapping.ErrBadPayload, `unknown field "vip"`},
		{"bool as string", "Customer", "UPDATE", "2142", replace(cust, `"prospect":false`, `"prospect":"`+secret+`"`), mapping.ErrBadPayload, `field "prospect": expected boolean, got string`},
		{"string as number", "Customer", "UPDATE", "2142", replace(cust, `"customerID":"2142"`, `"customerID":2142`), mapping.ErrBadPayload, `field "customerID": expected string, got number`},
		{"nested wrong type", "Customer", "UPDATE", "2142", replace(cust, `"franchiseeId":8`, `"franchiseeId":8.5`), mapping.ErrBadPayload, `field "franchisees.franchisee.franchiseeId": expected integer, got number`},
		{"object as array", "Customer", "UPDATE", "2142", replace(cust, `"affiliation":[{"retailStoreID":null}]`, `"affiliation":{"retailStoreID":null}`), mapping.ErrBadPayload, `field "affiliation": expected array, got object`},
		{"amount as string", "Transaction", "CREATE", "99901000022017110710000100", replace(trn, `"subtotal":1325.00`, `"subtotal":"1325.00"`), mapping.ErrBadPayload, `field "subtotal": expected number, got string`},
		{"amount null", "Transaction", "CREATE", "99901000022017110710000100", replace(trn, `"taxTotal":79.50`, `"taxTotal":null`), mapping.ErrBadPayload, `field "taxTotal": expected number, got null`},
		{"customer id mismatch", "Customer", "UPDATE", "8", replace(cust, `"customerID":"2142"`, `"customerID":"7"`), mapping.ErrBadPayload, `customerID "7" does not match UNIQUE_ID "8"`},
		{"queue id is not customer id", "Customer", "UPDATE", "26764466", cust, mapping.ErrBadPayload, `customerID "2142" does not match UNIQUE_ID "26764466"`},
		{"customer id missing", "Customer", "CREATE", "", `{"source":"Relate"}`, mapping.ErrBadPayload, "customerID is missing or empty"},
		{"transaction id mismatch", "Transaction", "CREATE", "1", trn, mapping.ErrBadPayload, `retailTransactionId "99901000022017110710000100" does not match UNIQUE_ID "1"`},
		{"customer payload as transaction", "Transaction", "CREATE", "2142", cust, mapping.ErrBadPayload, `unknown field "signupDate"`},
		{"delete empty id", "Customer", "DELETE", "", "", mapping.ErrBadPayload, "customer id (UNIQUE_ID) of a DELETE is empty"},
		{"delete non-numeric id", "Customer", "DELETE", "21a42", "", mapping.ErrBadPayload, `"21a42" of a DELETE is not a decimal integer`},
		{"delete negative id", "Customer", "DELETE", "-1", "", mapping.ErrBadPayload, "not a decimal integer"},
		{"delete with other payload", "Customer", "DELETE", "2142", secret + "xxxxxxxxxxxxxx", mapping.ErrBadPayload, `must be empty or the customer id "2142"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := mapping.CheckPayload(c.obj, c.action, c.key, []byte(c.payload))
			require.ErrorIs(t, err, c.sentinel)
			require.Contains(t, err.Error(), c.want)
			require.NotContains(t, err.Error(), secret, "errors never echo the payload")
			if len(c.payload) > 40 {
				require.NotContains(t, err.Error(), c.payload[:40])
			}
		})
	}
}

func TestCheckMessageRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		m        mapping.Message
		sentinel error
		want     string
	}{
		{mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERCRE", Payload: "Test message", UniqueID: "0"}, mapping.ErrBadPayload, "not a JSON object"},
		{mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERDEL", Payload: "", UniqueID: "1"}, mapping.ErrBadPayload, "empty"},
		{mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERDEL", Payload: `{"customerID":"1"}`, UniqueID: "1"}, mapping.ErrBadPayload, "not a decimal integer"},
		{mapping.Message{Type: "CUSTOMER", Action: "CUSTOMERCRE", Payload: `{"customerID":""}`, UniqueID: "1"}, mapping.ErrBadPayload, "customerID is missing"},
		{mapping.Message{Type: "POSTRN", Action: "POSTRNCRE", Payload: `{}`, UniqueID: "1"}, mapping.ErrBadPayload, "retailTransactionId is missing"},
		{mapping.Message{Type: "ORDER", Action: "CUSTOMERCRE", Payload: `{}`, UniqueID: "1"}, mapping.ErrUnknownObject, `"ORDER"`},
		{mapping.Message{Type: "POSTRN", Action: "POSTRNDEL", Payload: `{}`, UniqueID: "1"}, mapping.ErrUnknownAction, `"POSTRNDEL"`},
	}
	for _, c := range cases {
		err := mapping.CheckMessage(c.m)
		require.ErrorIs(t, err, c.sentinel, "%+v", c.m)
		require.Contains(t, err.Error(), c.want)
	}
}

func TestDecodePayloadErrorsAreBadPayload(t *testing.T) {
	t.Parallel()
	_, err := mapping.DecodeCustomer([]byte(`{"customerID":1}`))
	require.True(t, errors.Is(err, mapping.ErrBadPayload))
	_, err = mapping.DecodeTransaction([]byte(`{"lineItems":[{"lineItemModifiers":[{"voidFlag":"no"}]}]}`))
	require.ErrorIs(t, err, mapping.ErrBadPayload)
	require.Contains(t, err.Error(), `field "lineItems.lineItemModifiers.voidFlag": expected boolean, got string`)
}
