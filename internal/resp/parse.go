package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Bounds on what ParseValue accepts. They match Redis's own defaults for
// bulk and array length, so any reply a real server sends fits.
const (
	MaxBulkLen  = 512 << 20 // bytes in one bulk string
	MaxArrayLen = 1 << 20   // elements in one array
	MaxLineLen  = 64 << 10  // bytes in a header, simple string or error line
	MaxDepth    = 32        // nesting of arrays
)

// ErrProtocol is wrapped by every error about malformed or out-of-bounds
// input.
var ErrProtocol = errors.New("resp: protocol error")

// ParseValue reads exactly one RESP2 value from r. io.EOF is returned
// unwrapped only when r ends cleanly before the value starts; a value cut
// short gives io.ErrUnexpectedEOF.
func ParseValue(r *bufio.Reader) (Value, error) {
	return parseValue(r, 0)
}

func parseValue(r *bufio.Reader, depth int) (Value, error) {
	line, err := readLine(r)
	if err != nil {
		if depth > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Value{}, err
	}
	if len(line) == 0 {
		return Value{}, fmt.Errorf("%w: empty line", ErrProtocol)
	}
	kind, rest := Kind(line[0]), line[1:]
	switch kind {
	case KindSimple:
		return Simple(string(rest)), nil
	case KindError:
		return Error(string(rest)), nil
	case KindInt:
		n, err := parseInt(rest)
		if err != nil {
			return Value{}, err
		}
		return Int(n), nil
	case KindBulk:
		n, err := parseLen(rest, MaxBulkLen)
		if err != nil {
			return Value{}, err
		}
		if n < 0 {
			return NullBulk(), nil
		}
		return readBulk(r, n)
	case KindArray:
		n, err := parseLen(rest, MaxArrayLen)
		if err != nil {
			return Value{}, err
		}
		if n < 0 {
			return Value{Kind: KindArray, Null: true}, nil
		}
		if depth >= MaxDepth {
			return Value{}, fmt.Errorf("%w: arrays nested deeper than %d", ErrProtocol, MaxDepth)
		}
		return readArray(r, n, depth)
	}
	return Value{}, fmt.Errorf("%w: unknown type byte %q", ErrProtocol, line[0])
}

func readBulk(r *bufio.Reader, n int) (Value, error) {
	// n is bounded by MaxBulkLen, so this allocation is too.
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Value{}, unexpected(err)
	}
	if buf[n] != '\r' || buf[n+1] != '\n' {
		return Value{}, fmt.Errorf("%w: bulk string not terminated by CRLF", ErrProtocol)
	}
	return Bulk(string(buf[:n])), nil
}

func readArray(r *bufio.Reader, n, depth int) (Value, error) {
	if n == 0 {
		return Array(), nil
	}
	// Grow as elements arrive rather than trusting the header: a peer that
	// announces a million elements and sends none costs nothing.
	elems := make([]Value, 0, min(n, 1024))
	for range n {
		e, err := parseValue(r, depth+1)
		if err != nil {
			return Value{}, unexpected(err)
		}
		elems = append(elems, e)
	}
	return Array(elems...), nil
}

// readLine returns one CRLF-terminated line without its terminator. The
// line may be longer than r's buffer, up to MaxLineLen.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Copy out of r's buffer before reading on, which overwrites it.
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull && len(long) <= MaxLineLen {
			line, err = r.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if len(line) > MaxLineLen+2 {
		return nil, fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, MaxLineLen)
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not terminated by CRLF", ErrProtocol)
	}
	return line[:len(line)-2], nil
}

// parseInt parses a RESP integer: an optional '-' and decimal digits,
// nothing else (strconv alone would also take a '+').
func parseInt(b []byte) (int64, error) {
	if len(b) == 0 || b[0] == '+' {
		return 0, fmt.Errorf("%w: invalid integer %q", ErrProtocol, b)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: invalid integer %q", ErrProtocol, b)
	}
	return n, nil
}

// parseLen parses a bulk or array length: -1 for null, else 0..max.
func parseLen(b []byte, max int) (int, error) {
	n, err := parseInt(b)
	if err != nil {
		return 0, err
	}
	if n < -1 || n > int64(max) {
		return 0, fmt.Errorf("%w: length %d out of range", ErrProtocol, n)
	}
	return int(n), nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
