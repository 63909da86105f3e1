package main

import "testing"

// escape leaves printable text alone and escapes the rest as Go quotes it.
func TestEscape(t *testing.T) {
	cases := map[string]string{
		"init failed: no database":   "init failed: no database",
		"naïve – ünïcode ✓":          "naïve – ünïcode ✓",
		"\x1b[8mhidden\x1b[0m":       `\x1b[8mhidden\x1b[0m`,
		"row\r\nforged  running":     `row\r\nforged  running`,
		"bell\a tab\t nul\x00":       `bell\a tab\t nul\x00`,
		"bidi \u202eevil":            `bidi \u202eevil`,
		"bad utf8 \xff\xfe":          `bad utf8 \xff\xfe`,
		"csi \u009b31m":              `csi \u009b31m`,
		`a backslash \ stays as one`: `a backslash \ stays as one`,
	}
	for in, want := range cases {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}
