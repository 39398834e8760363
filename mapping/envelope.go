package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Message is one queue row as sent to the receiver. Payload is a JSON document (or, for
// CUSTOMERDEL, the customer id) carried as a string; UniqueID is the queue row's ID, not the
// customer id.
type Message struct {
	Action   string `json:"action"`
	Payload  string `json:"payload"`
	Type     string `json:"type"`
	UniqueID string `json:"uniqueId"`
}

// Envelope is the request body of every POST to the receiver.
type Envelope struct {
	Messages []Message `json:"messages"`
}

// AppendEnvelope appends the JSON envelope of msgs to dst and returns the extended slice. The
// output is byte-identical to json.Marshal of Envelope through an Encoder with SetEscapeHTML(false)
// (minus the trailing newline): keys in struct order, compact, strings escaped as encoding/json
// does but with <, > and & left raw as the appendix's sample shows. It is hand-written because it
// runs for every delivery: it allocates nothing beyond growing dst.
func AppendEnvelope(dst []byte, msgs []Message) []byte {
	if msgs == nil {
		return append(dst, `{"messages":null}`...)
	}
	dst = append(dst, `{"messages":[`...)
	for i := range msgs {
		m := &msgs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"action":`...)
		dst = appendString(dst, m.Action)
		dst = append(dst, `,"payload":`...)
		dst = appendString(dst, m.Payload)
		dst = append(dst, `,"type":`...)
		dst = appendString(dst, m.Type)
		dst = append(dst, `,"uniqueId":`...)
		dst = appendString(dst, m.UniqueID)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does without HTML escaping:
// quotes, backslashes and control characters escaped, invalid UTF-8 replaced by \ufffd, U+2028
// and U+2029 escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// wireMessage detects absent fields, which a plain Message would silently leave empty.
type wireMessage struct {
	Action   *string `json:"action"`
	Payload  *string `json:"payload"`
	Type     *string `json:"type"`
	UniqueID *string `json:"uniqueId"`
}

type wireEnvelope struct {
	Messages []wireMessage `json:"messages"`
}

// DecodeEnvelope decodes a request body strictly, so a receiver (ours or a test) notices any
// drift from the format: exactly one JSON object, no unknown fields, at least one message, and
// every message with all four fields as strings. Errors wrap ErrBadEnvelope and never contain the
// payloads. Like encoding/json, key matching is case-insensitive and duplicate keys are not
// detected.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if err := firstByte(b, '{'); err != nil {
		return nil, fmt.Errorf("%w: body %s", ErrBadEnvelope, err.Error())
	}
	var w wireEnvelope
	if err := decodeStrict(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadEnvelope, describe(err, "body"))
	}
	if len(w.Messages) == 0 {
		return nil, fmt.Errorf("%w: \"messages\" is missing or empty: send at least one message", ErrBadEnvelope)
	}
	env := &Envelope{Messages: make([]Message, len(w.Messages))}
	for i, m := range w.Messages {
		switch {
		case m.Action == nil:
			return nil, fmt.Errorf("%w: message %d: \"action\" is missing", ErrBadEnvelope, i)
		case m.Payload == nil:
			return nil, fmt.Errorf("%w: message %d: \"payload\" is missing", ErrBadEnvelope, i)
		case m.Type == nil:
			return nil, fmt.Errorf("%w: message %d: \"type\" is missing", ErrBadEnvelope, i)
		case m.UniqueID == nil:
			return nil, fmt.Errorf("%w: message %d: \"uniqueId\" is missing", ErrBadEnvelope, i)
		}
		env.Messages[i] = Message{Action: *m.Action, Payload: *m.Payload, Type: *m.Type, UniqueID: *m.UniqueID}
	}
	return env, nil
}

// firstByte checks that the first non-blank byte of b is want ('{' for an object).
func firstByte(b []byte, want byte) error {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 {
		return errors.New("is empty")
	}
	if t[0] != want {
		return errors.New("is not a JSON object")
	}
	return nil
}

// decodeStrict decodes exactly one JSON value from b into v, rejecting unknown fields and
// trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailing
	}
	return nil
}

var errTrailing = errors.New("trailing data after the JSON value")

// describe turns an encoding/json error into a short phrase that names the problem without
// quoting the document (what names the subject, e.g. "payload").
func describe(err error, what string) string {
	var typeErr *json.UnmarshalTypeError
	var synErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		got := typeErr.Value
		if i := bytes.IndexByte([]byte(got), ' '); i >= 0 {
			got = got[:i] // "number 1.5" -> "number": never echo values
		}
		if got == "bool" {
			got = "boolean"
		}
		if typeErr.Field == "" {
			return fmt.Sprintf("%s is not a JSON object (got %s)", what, got)
		}
		return fmt.Sprintf("field %q: expected %s, got %s", typeErr.Field, jsonKind(typeErr), got)
	case errors.As(err, &synErr):
		return fmt.Sprintf("%s is not valid JSON at byte %d: %s", what, synErr.Offset, trimJSON(synErr.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return what + " is truncated JSON"
	case errors.Is(err, errTrailing):
		return what + " has trailing data after the JSON value"
	}
	msg := trimJSON(err.Error())
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return msg
}

func trimJSON(s string) string {
	if len(s) > 6 && s[:6] == "json: " {
		return s[6:]
	}
	return s
}

// Compact returns valid JSON without its insignificant whitespace (spaces, tabs and line breaks
// outside strings), as encoding/json.Compact would, or src itself when it has none. It does not
// validate: every payload comes from a PostgreSQL json column, which refuses malformed JSON at
// INSERT (CheckPayload then checks the fields of rows not captured by the triggers). PostgreSQL
// renders json_build_object with a space around every colon and after every comma; this
// skips them at about the cost of a copy, where encoding/json's validating scanner cost the
// relay a tenth of its CPU.
func Compact(src []byte) []byte {
	i := nextSpace(src, 0)
	if i < 0 {
		return src
	}
	dst := make([]byte, 0, len(src)-1)
	start := 0
	for ; i >= 0; i = nextSpace(src, start) {
		dst = append(dst, src[start:i]...)
		start = i + 1 // a space is outside any string, so the scan goes on from there
	}
	return append(dst, src[start:]...)
}

// nextSpace returns the index of the first whitespace byte at or after from outside a string
// (-1: none).
func nextSpace(src []byte, from int) int {
	for i := from; i < len(src); {
		switch src[i] {
		case ' ', '\t', '\n', '\r':
			return i
		case '"':
			i = stringEnd(src, i)
		default:
			i++
		}
	}
	return -1
}

// stringEnd returns the index just past the string that opens at src[start] (its closing quote
// is the first one not escaped by an odd run of backslashes), or len(src) if it never closes.
func stringEnd(src []byte, start int) int {
	for k := start + 1; k < len(src); k++ {
		q := bytes.IndexByte(src[k:], '"')
		if q < 0 {
			break
		}
		k += q
		n := 0
		for m := k - 1; m > start && src[m] == '\\'; m-- {
			n++
		}
		if n%2 == 0 {
			return k + 1
		}
	}
	return len(src)
}
