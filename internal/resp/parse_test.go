package resp

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func parse(s string) (Value, error) {
	return ParseValue(bufio.NewReader(strings.NewReader(s)))
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Value
	}{
		{"simple", "+OK\r\n", Simple("OK")},
		{"empty simple", "+\r\n", Simple("")},
		{"error", "-ERR unknown command 'x'\r\n", Error("ERR unknown command 'x'")},
		{"integer", ":42\r\n", Int(42)},
		{"negative integer", ":-7\r\n", Int(-7)},
		{"bulk", "$5\r\nhello\r\n", Bulk("hello")},
		{"bulk with CRLF inside", "$4\r\na\r\nb\r\n", Bulk("a\r\nb")},
		{"empty bulk", "$0\r\n\r\n", Bulk("")},
		{"null bulk", "$-1\r\n", NullBulk()},
		{"empty array", "*0\r\n", Array()},
		{"null array", "*-1\r\n", Value{Kind: KindArray, Null: true}},
		{"array", "*3\r\n:1\r\n$1\r\na\r\n+b\r\n", Array(Int(1), Bulk("a"), Simple("b"))},
		{"nested", "*2\r\n*1\r\n:1\r\n$-1\r\n", Array(Array(Int(1)), NullBulk())},
		{"long simple", "+" + strings.Repeat("x", 10000) + "\r\n", Simple(strings.Repeat("x", 10000))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.in)
			if err != nil {
				t.Fatalf("ParseValue(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseValue(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			// Encoding the value again gives the same bytes back.
			if enc := string(AppendValue(nil, got)); enc != tt.in {
				t.Fatalf("AppendValue = %q, want %q", enc, tt.in)
			}
		})
	}
}

func TestParseValueErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"eof before value", "", io.EOF},
		{"cut line", "+OK", io.ErrUnexpectedEOF},
		{"cut bulk", "$5\r\nhel", io.ErrUnexpectedEOF},
		{"cut array", "*2\r\n:1\r\n", io.ErrUnexpectedEOF},
		{"LF only", "+OK\n", ErrProtocol},
		{"empty line", "\r\n", ErrProtocol},
		{"unknown type", "?x\r\n", ErrProtocol},
		{"bad integer", ":12a\r\n", ErrProtocol},
		{"plus integer", ":+1\r\n", ErrProtocol},
		{"empty integer", ":\r\n", ErrProtocol},
		{"bulk too long", "$536870913\r\n", ErrProtocol},
		{"bulk below -1", "$-2\r\n", ErrProtocol},
		{"bulk no CRLF", "$2\r\nabcd", ErrProtocol},
		{"array too long", "*1048577\r\n", ErrProtocol},
		{"huge length", "*99999999999999999999\r\n", ErrProtocol},
		{"too deep", strings.Repeat("*1\r\n", MaxDepth+1) + ":1\r\n", ErrProtocol},
		{"line too long", "+" + strings.Repeat("x", MaxLineLen+10) + "\r\n", ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseValue(%.40q) = %v, %v; want error %v", tt.in, v, err, tt.want)
			}
		})
	}
}

func TestParseValueSequence(t *testing.T) {
	// Pipelined replies parse one after another from one reader.
	r := bufio.NewReader(strings.NewReader("+OK\r\n$1\r\nv\r\n:3\r\n"))
	want := []Value{Simple("OK"), Bulk("v"), Int(3)}
	for i, w := range want {
		got, err := ParseValue(r)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Fatalf("reply %d = %v, %v; want %v", i, got, err, w)
		}
	}
	if _, err := ParseValue(r); err != io.EOF {
		t.Fatalf("after the last reply: %v, want io.EOF", err)
	}
}

func TestValueString(t *testing.T) {
	tests := []struct {
		v    Value
		want string
	}{
		{Simple("OK"), "OK"},
		{Error("ERR x"), "(error) ERR x"},
		{Int(3), "(integer) 3"},
		{Bulk("a\nb"), `"a\nb"`},
		{NullBulk(), "(nil)"},
		{Array(), "(empty array)"},
		{Array(Bulk("a"), Array(Int(1), Int(2))), "1) \"a\"\n2) 1) (integer) 1\n   2) (integer) 2"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestAppendCommand(t *testing.T) {
	got := string(AppendCommand(nil, "SET", "k", ""))
	want := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
	if got != want {
		t.Fatalf("AppendCommand = %q, want %q", got, want)
	}
}

func FuzzParseValue(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "$3\r\nabc\r\n", "*2\r\n:1\r\n$-1\r\n", "-ERR x\r\n", "*1\r\n*1\r\n*0\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := ParseValue(bufio.NewReader(strings.NewReader(string(in))))
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip.
		again, err := parse(string(AppendValue(nil, v)))
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("round trip of %#v: %#v, %v", v, again, err)
		}
	})
}
