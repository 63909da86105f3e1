package resp

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the type of a RESP2 value, spelled as its first byte on the wire.
type Kind byte

// The five RESP2 kinds.
const (
	KindSimple Kind = '+' // simple string: +OK
	KindError  Kind = '-' // error: -ERR reason
	KindInt    Kind = ':' // integer: :42
	KindBulk   Kind = '$' // bulk string, possibly null: $3 abc / $-1
	KindArray  Kind = '*' // array, possibly null: *2 ... / *-1
)

// String names the kind for messages.
func (k Kind) String() string {
	switch k {
	case KindSimple:
		return "simple"
	case KindError:
		return "error"
	case KindInt:
		return "integer"
	case KindBulk:
		return "bulk"
	case KindArray:
		return "array"
	}
	return fmt.Sprintf("kind(%q)", byte(k))
}

// Value is one RESP2 value. Only the fields of its Kind are set, so values
// compare with reflect.DeepEqual (the constructors below build them that
// way).
type Value struct {
	Kind  Kind
	Str   string  // KindSimple, KindBulk: the text
	Err   string  // KindError: the text after '-', e.g. "ERR unknown command"
	Int   int64   // KindInt
	Null  bool    // KindBulk, KindArray: $-1 or *-1
	Array []Value // KindArray: the elements (nil when empty or null)
}

// Simple returns a simple string value (+s).
func Simple(s string) Value { return Value{Kind: KindSimple, Str: s} }

// Error returns an error value (-msg).
func Error(msg string) Value { return Value{Kind: KindError, Err: msg} }

// Int returns an integer value (:n).
func Int(n int64) Value { return Value{Kind: KindInt, Int: n} }

// Bulk returns a bulk string value ($len s).
func Bulk(s string) Value { return Value{Kind: KindBulk, Str: s} }

// NullBulk returns the null bulk string ($-1).
func NullBulk() Value { return Value{Kind: KindBulk, Null: true} }

// Array returns an array value of the given elements; no elements gives
// the empty array (*0), not the null one.
func Array(elems ...Value) Value {
	if len(elems) == 0 {
		elems = nil
	}
	return Value{Kind: KindArray, Array: elems}
}

// IsError reports whether v is a RESP error reply.
func (v Value) IsError() bool { return v.Kind == KindError }

// String renders v the way redis-cli does, for test failure messages:
// OK, (error) ERR x, (integer) 3, "text", (nil), (empty array), and
// numbered lines for arrays.
func (v Value) String() string {
	var b strings.Builder
	v.format(&b, "")
	return b.String()
}

func (v Value) format(b *strings.Builder, indent string) {
	switch v.Kind {
	case KindSimple:
		b.WriteString(v.Str)
	case KindError:
		b.WriteString("(error) ")
		b.WriteString(v.Err)
	case KindInt:
		b.WriteString("(integer) ")
		b.WriteString(strconv.FormatInt(v.Int, 10))
	case KindBulk:
		if v.Null {
			b.WriteString("(nil)")
			return
		}
		b.WriteString(strconv.Quote(v.Str))
	case KindArray:
		if v.Null {
			b.WriteString("(nil array)")
			return
		}
		if len(v.Array) == 0 {
			b.WriteString("(empty array)")
			return
		}
		for i, e := range v.Array {
			if i > 0 {
				b.WriteString("\n")
				b.WriteString(indent)
			}
			prefix := strconv.Itoa(i+1) + ") "
			b.WriteString(prefix)
			e.format(b, indent+strings.Repeat(" ", len(prefix)))
		}
	default:
		fmt.Fprintf(b, "(%v)", v.Kind)
	}
}

// AppendCommand appends args to dst encoded as a RESP array of bulk
// strings, the form every Redis server accepts, and returns the result.
func AppendCommand(dst []byte, args ...string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, a...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// AppendValue appends v encoded in RESP2 and returns the result. It is the
// inverse of ParseValue; tests use it to build server replies. Text in
// simple strings and errors must not contain CR or LF.
func AppendValue(dst []byte, v Value) []byte {
	switch v.Kind {
	case KindSimple:
		dst = append(dst, '+')
		dst = append(dst, v.Str...)
	case KindError:
		dst = append(dst, '-')
		dst = append(dst, v.Err...)
	case KindInt:
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, v.Int, 10)
	case KindBulk:
		if v.Null {
			return append(dst, "$-1\r\n"...)
		}
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(v.Str)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, v.Str...)
	case KindArray:
		if v.Null {
			return append(dst, "*-1\r\n"...)
		}
		dst = append(dst, '*')
		dst = strconv.AppendInt(dst, int64(len(v.Array)), 10)
		dst = append(dst, '\r', '\n')
		for _, e := range v.Array {
			dst = AppendValue(dst, e)
		}
		return dst
	}
	return append(dst, '\r', '\n')
}
