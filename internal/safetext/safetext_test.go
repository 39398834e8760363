package safetext

import "testing"

func TestClean(t *testing.T) {
	cases := map[string]string{
		"plain text, ünïcode":      "plain text, ünïcode",
		"line\nforged":             `line\nforged`,
		"\x1b[2Jclear":             `\x1b[2Jclear`,
		"tab\there":                "tab here",
		"bad \xff utf8":            `bad \ufffd utf8`,
		"c1 \u0085 next line":      `c1 \x85 next line`,
		"bidi \u202e override":     `bidi \u202e override`,
		"separator \u2028 in JSON": `separator \u2028 in JSON`,
		"carriage\rreturn":         `carriage\rreturn`,
	}
	for in, want := range cases {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}
