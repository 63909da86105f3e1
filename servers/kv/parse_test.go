package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// parseAll feeds in to a fresh parser in chunks of size step (0: all at
// once), the way a connection would, and returns every request and the
// first error.
func parseAll(in []byte, step int) ([][]string, error) {
	var (
		p    parser
		reqs [][]string
		buf  []byte
	)
	if step <= 0 {
		step = len(in) + 1
	}
	for off := 0; ; {
		end := min(off+step, len(in))
		buf = append(buf, in[off:end]...)
		off = end
		for {
			got, used, err := p.parse(buf, 3) // small max: exercise resumption
			reqs = append(reqs, got...)
			buf = buf[used:]
			if err != nil {
				return reqs, err
			}
			if len(got) < 3 {
				break
			}
		}
		if off == len(in) {
			return reqs, nil
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want [][]string
	}{
		{"array", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", [][]string{{"GET", "k"}}},
		{"binary safe", "*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n", [][]string{{"ECHO", "a\r\nb"}}},
		{"empty argument", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", [][]string{{"ECHO", ""}}},
		{"pipelined", "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\nPING\r\n", [][]string{{"PING"}, {"PING"}, {"PING"}}},
		{"inline CRLF", "SET k v\r\n", [][]string{{"SET", "k", "v"}}},
		{"inline LF", "GET  k\n", [][]string{{"GET", "k"}}},
		{"inline tabs", "\tGET\tk \r\n", [][]string{{"GET", "k"}}},
		{"empty lines skipped", "\r\n\n  \r\nPING\r\n", [][]string{{"PING"}}},
		{"empty arrays skipped", "*0\r\n*-1\r\nPING\r\n", [][]string{{"PING"}}},
		{"double quotes", `SET "a key" "x\ty\n\x41\"\\"` + "\r\n", [][]string{{"SET", "a key", "x\ty\nA\"\\"}}},
		{"single quotes", `SET k 'it\'s "x"'` + "\r\n", [][]string{{"SET", "k", `it's "x"`}}},
		{"empty quoted", `ECHO ""` + "\n", [][]string{{"ECHO", ""}}},
		{"quote inside word", `ECHO a"b c"` + "\n", [][]string{{"ECHO", "ab c"}}},
		{"bad hex is literal", `ECHO "\xZZ"` + "\n", [][]string{{"ECHO", "xZZ"}}},
		{"incomplete array", "*2\r\n$3\r\nGET\r\n$1\r\n", nil},
		{"incomplete inline", "PING", nil},
		{"complete then incomplete", "PING\r\n*1\r\n$4\r\nPI", [][]string{{"PING"}}},
	}
	for _, tt := range tests {
		for _, step := range []int{0, 1, 2, 7} {
			got, err := parseAll([]byte(tt.in), step)
			if err != nil {
				t.Errorf("%s (step %d): %v", tt.name, step, err)
				continue
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s (step %d) = %q, want %q", tt.name, step, got, tt.want)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the error text, which goes to the client
		reqs int    // requests parsed before the error
	}{
		{"bad count", "*x\r\n", "Protocol error: invalid multibulk length", 0},
		{"plus count", "*+1\r\n", "Protocol error: invalid multibulk length", 0},
		{"count too big", "*1048577\r\n", "Protocol error: invalid multibulk length", 0},
		{"count overflow", "*99999999999999999999\r\n", "Protocol error: invalid multibulk length", 0},
		{"not a bulk", "*1\r\n:1\r\n", "Protocol error: expected '$', got ':'", 0},
		{"bad bulk length", "*1\r\n$-1\r\n", "Protocol error: invalid bulk length", 0},
		{"bulk too big", "*1\r\n$536870913\r\n", "Protocol error: invalid bulk length", 0},
		{"bulk not terminated", "*1\r\n$1\r\nab\r\n", "Protocol error: bulk string not terminated by CRLF", 0},
		{"header without CR", "*1\n", "Protocol error: expected CRLF", 0},
		{"unbalanced quote", "ECHO \"abc\r\n", "Protocol error: unbalanced quotes in request", 0},
		{"text after quote", "ECHO \"a\"b\r\n", "Protocol error: unbalanced quotes in request", 0},
		{"unbalanced single", "ECHO 'a\r\n", "Protocol error: unbalanced quotes in request", 0},
		{"inline too long", strings.Repeat("x", maxLineLen), "Protocol error: too big inline request", 0},
		{"header too long", "*" + strings.Repeat("1", maxLineLen), "Protocol error: too big mbulk count string", 0},
		{"error after good ones", "PING\r\nPING\r\n*z\r\n", "Protocol error: invalid multibulk length", 2},
	}
	for _, tt := range tests {
		// Byte by byte also checks that a long line is not rescanned
		// from its start on every call (it would take minutes).
		for _, step := range []int{0, 1, 5} {
			reqs, err := parseAll([]byte(tt.in), step)
			var pe protocolError
			if !errors.As(err, &pe) || err.Error() != tt.want {
				t.Errorf("%s (step %d): error %v, want %q", tt.name, step, err, tt.want)
			}
			if len(reqs) != tt.reqs {
				t.Errorf("%s (step %d): %d requests before the error, want %d", tt.name, step, len(reqs), tt.reqs)
			}
		}
	}
}

func TestParseMax(t *testing.T) {
	in := []byte(strings.Repeat("PING\r\n", 5))
	var p parser
	reqs, used, err := p.parse(in, 2)
	if err != nil || len(reqs) != 2 || used != 12 {
		t.Fatalf("parse with max 2 = %d requests, %d bytes, %v; want 2, 12, nil", len(reqs), used, err)
	}
}

func TestParseNeed(t *testing.T) {
	// Inside a bulk of known length the parser says how much it needs,
	// so the connection can size its buffer; it consumes the complete
	// arguments before it.
	var p parser
	in := []byte("*2\r\n$3\r\nSET\r\n$10\r\nabc")
	reqs, used, err := p.parse(in, maxBatch)
	if err != nil || len(reqs) != 0 {
		t.Fatalf("parse = %q, %v", reqs, err)
	}
	if used != len("*2\r\n$3\r\nSET\r\n") {
		t.Fatalf("used %d bytes, want the header and the first argument", used)
	}
	if want := len("$10\r\n") + 10 + 2; p.need != want {
		t.Fatalf("need = %d, want %d", p.need, want)
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"-1", -1, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775808", -1 << 63, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1x", 0, false},
		{"12345678901234567890", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseInt([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestGrowShrink(t *testing.T) {
	buf := make([]byte, readSize, readSize)
	// Full: doubles.
	if got := grow(buf, 0); cap(got) != 2*readSize || len(got) != readSize {
		t.Fatalf("grow full = len %d cap %d", len(got), cap(got))
	}
	// Full, and the argument needs a little more: exactly that.
	if got := grow(buf, readSize+10); cap(got) != readSize+10 {
		t.Fatalf("grow to need = cap %d, want %d", cap(got), readSize+10)
	}
	// Room left: unchanged, whatever the need (data has not arrived yet).
	if got := grow(buf[:10], 1<<29); cap(got) != readSize {
		t.Fatalf("grow with room = cap %d, want unchanged", cap(got))
	}
	big := make([]byte, 10, 1<<20)
	if got := shrink(big); cap(got) != readSize || string(got) != string(big) {
		t.Fatalf("shrink = cap %d", cap(got))
	}
	if got := shrink(big[:1<<19]); cap(got) != 1<<20 {
		t.Fatalf("shrink with much data left = cap %d, want unchanged", cap(got))
	}
}
