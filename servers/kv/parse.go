package main

import (
	"bytes"
	"fmt"
	"math"
)

// Bounds on a request. The first three are Redis's defaults
// (proto-max-bulk-len, the multibulk count cap, PROTO_INLINE_MAX_SIZE), so
// any client that works with Redis works here; the last caps the memory a
// single array request can hold while it is being read.
const (
	maxBulkLen    = 512 << 20 // bytes in one argument
	maxArrayLen   = 1 << 20   // arguments in one array request
	maxLineLen    = 64 << 10  // bytes in an inline request or a header line
	maxRequestLen = 1 << 30   // bytes of all arguments of one request
)

// protocolError is malformed client input. The connection that sent it is
// answered "-ERR Protocol error: ..." and closed, because after a framing
// error there is no telling where the next request starts.
type protocolError string

func (e protocolError) Error() string { return "Protocol error: " + string(e) }

// parser turns a client's byte stream into requests, each a non-empty list
// of arguments. It accepts RESP arrays of bulk strings (what client
// libraries send) and inline lines (what people type into nc or telnet,
// and what redis-benchmark's PING_INLINE sends).
//
// The parser keeps a partly read array request between calls: complete
// arguments are consumed as they arrive, so a large request is scanned
// once, not once per read.
type parser struct {
	args []string // the array request being read
	left int      // its arguments still to come; 0 between requests
	size int      // bytes of its arguments so far, for maxRequestLen

	// need is set by parse when it stopped inside an argument whose
	// length it knows: the unconsumed input must hold need bytes before
	// that argument is complete. 0 means "unknown, any more bytes".
	need int

	// scan is how many bytes at the start of the unconsumed input are
	// known to hold no LF, set when parse stopped inside a line. The next
	// call searches on from there, so a line that trickles in is not
	// rescanned from its start on every read.
	scan int
}

// parse consumes up to max complete requests from buf and returns them
// with the number of bytes it used. Input that ends inside a request is
// not an error: the caller reads more and calls again with the unused
// bytes first. An error means the stream is malformed; the requests
// returned with it came before the fault and should still be executed.
func (p *parser) parse(buf []byte, max int) (reqs [][]string, used int, err error) {
	p.need = 0
	from := p.scan
	p.scan = 0
	for len(reqs) < max && used < len(buf) {
		rest := buf[used:]
		if used > 0 {
			from = 0
		}
		from = min(from, len(rest))
		var n int
		if p.left == 0 {
			var req []string
			if rest[0] == '*' {
				n, err = p.header(rest, from)
			} else {
				req, n, err = parseInline(rest, from)
			}
			if req != nil {
				reqs = append(reqs, req)
			}
		} else {
			n, err = p.element(rest, from)
			if n > 0 && p.left == 0 {
				reqs = append(reqs, p.args)
				p.args, p.size = nil, 0
			}
		}
		if err != nil {
			return reqs, used, err
		}
		if n == 0 {
			if p.need == 0 {
				p.scan = len(rest) // stopped inside a line
			}
			return reqs, used, nil
		}
		used += n
	}
	return reqs, used, nil
}

// header reads "*<count>\r\n", the start of an array request.
func (p *parser) header(b []byte, from int) (int, error) {
	line, n, err := crlfLine(b, from, "too big mbulk count string")
	if n == 0 || err != nil {
		return 0, err
	}
	count, ok := parseInt(line[1:])
	if !ok || count > maxArrayLen {
		return 0, protocolError("invalid multibulk length")
	}
	if count > 0 {
		p.left = int(count)
		// Trust the count only so far: a peer that announces a million
		// arguments and sends none should cost nothing.
		p.args = make([]string, 0, min(count, 1024))
	}
	// *0 and *-1 are empty requests, skipped without a reply, as Redis does.
	return n, nil
}

// element reads one "$<len>\r\n<bytes>\r\n" argument, or nothing if it
// has not fully arrived.
func (p *parser) element(b []byte, from int) (int, error) {
	if b[0] != '$' {
		return 0, protocolError(fmt.Sprintf("expected '$', got %q", b[0]))
	}
	line, n, err := crlfLine(b, from, "too big bulk count string")
	if n == 0 || err != nil {
		return 0, err
	}
	size, ok := parseInt(line[1:])
	if !ok || size < 0 || size > maxBulkLen {
		return 0, protocolError("invalid bulk length")
	}
	if int64(p.size)+size > maxRequestLen {
		return 0, protocolError("request too large")
	}
	end := n + int(size)
	if len(b) < end+2 {
		p.need = end + 2
		return 0, nil
	}
	if b[end] != '\r' || b[end+1] != '\n' {
		return 0, protocolError("bulk string not terminated by CRLF")
	}
	p.args = append(p.args, string(b[n:end]))
	p.size += int(size)
	p.left--
	return end + 2, nil
}

// crlfLine returns the CRLF-terminated line at the start of b without its
// terminator, and the bytes it spans; n == 0 if the line is not complete.
// b[:from] is known to hold no LF.
func crlfLine(b []byte, from int, tooBig string) (line []byte, n int, err error) {
	i := indexLF(b, from)
	if i < 0 {
		if len(b) >= maxLineLen {
			return nil, 0, protocolError(tooBig)
		}
		return nil, 0, nil
	}
	if i == 0 || b[i-1] != '\r' {
		return nil, 0, protocolError("expected CRLF")
	}
	return b[:i-1], i + 1, nil
}

// parseInline reads one inline request: a line ending in LF (CRLF also
// works, CR being white space), split into arguments. An empty line is
// consumed and yields no request.
func parseInline(b []byte, from int) ([]string, int, error) {
	i := indexLF(b, from)
	if i < 0 {
		if len(b) >= maxLineLen {
			return nil, 0, protocolError("too big inline request")
		}
		return nil, 0, nil
	}
	args, err := splitArgs(b[:i])
	if err != nil {
		return nil, 0, err
	}
	return args, i + 1, nil
}

// indexLF finds the first LF in b within maxLineLen, searching from
// from; -1 if there is none.
func indexLF(b []byte, from int) int {
	end := min(len(b), maxLineLen)
	if from >= end {
		return -1
	}
	i := bytes.IndexByte(b[from:end], '\n')
	if i < 0 {
		return -1
	}
	return from + i
}

// parseInt parses a decimal integer the way Redis does: an optional '-'
// and digits, nothing else (no '+', no spaces), within int64.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	// 19 digits always fit in a uint64, so the loop cannot overflow.
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true
	}
	if n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}
