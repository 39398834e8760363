// Package safetext makes strings that came from outside (a receiver's answer, a database row,
// an error) safe to print on a terminal or into a log line: control characters cannot move the
// cursor, clear the screen or forge a line.
package safetext

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean replaces control characters (C0, DEL, C1, and Unicode line and paragraph separators)
// and invalid UTF-8 with a visible escape, keeping ordinary text as it is. Tabs become spaces.
func Clean(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unsafe(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\ufffd`)
		case r == '\t':
			b.WriteByte(' ')
		case unsafe(r):
			b.WriteString(escape(r))
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func unsafe(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}

func escape(r rune) string {
	switch r {
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	}
	const hex = "0123456789abcdef"
	if r < 0x100 {
		return `\x` + string([]byte{hex[r>>4], hex[r&0xf]})
	}
	return `\u` + string([]byte{hex[(r>>12)&0xf], hex[(r>>8)&0xf], hex[(r>>4)&0xf], hex[r&0xf]})
}
