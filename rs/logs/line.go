package logs

import (
	"bytes"
	"strings"
	"time"
)

// MaxLine is the longest text of one line in a log file; longer lines
// are cut into pieces of this size, each but the last marked.
const MaxLine = 64 << 10

// TimeFormat is the timestamp at the start of every line.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// LineTime parses the timestamp that begins a line of a log file.
func LineTime(line string) (time.Time, bool) {
	tok, _, _ := strings.Cut(line, " ")
	t, err := time.Parse(time.RFC3339Nano, tok)
	return t, err == nil
}

// splitter turns one stream's bytes into log lines. It holds the last
// line until its newline comes (or flush).
type splitter struct {
	name    string // "out" or "err"
	partial []byte
}

// stamp formats t as a line's timestamp into buf.
func stamp(buf []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(buf[:0], TimeFormat)
}

// appendLine appends one line of the file: ts, the stream (with '+' if
// more of the text follows in the next line), the text.
func appendLine(out, ts []byte, name string, more bool, text []byte) []byte {
	out = append(out, ts...)
	out = append(out, ' ')
	out = append(out, name...)
	if more {
		out = append(out, '+')
	}
	out = append(out, ' ')
	out = append(out, text...)
	return append(out, '\n')
}

// appendPieces appends text as lines of at most MaxLine bytes.
func appendPieces(out, ts []byte, name string, text []byte) []byte {
	for len(text) > MaxLine {
		out = appendLine(out, ts, name, true, text[:MaxLine])
		text = text[MaxLine:]
	}
	return appendLine(out, ts, name, false, text)
}

// feed appends to out the lines data completes, stamped ts, and keeps
// the rest. A held line that grows past MaxLine gives up its full
// pieces at once, so what is held stays under MaxLine.
func (s *splitter) feed(out, ts, data []byte) []byte {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			s.partial = append(s.partial, data...)
			if len(s.partial) > MaxLine {
				n := 0
				for len(s.partial)-n > MaxLine {
					out = appendLine(out, ts, s.name, true, s.partial[n:n+MaxLine])
					n += MaxLine
				}
				s.partial = append(s.partial[:0], s.partial[n:]...)
			}
			return out
		}
		line := data[:i]
		if len(s.partial) > 0 {
			s.partial = append(s.partial, line...)
			line = s.partial
		}
		out = appendPieces(out, ts, s.name, line)
		s.partial = s.partial[:0]
		if cap(s.partial) > 4<<10 {
			s.partial = nil // a long line once: not kept for good
		}
		data = data[i+1:]
	}
	return out
}

// flush appends the held line, if any, as a line of its own.
func (s *splitter) flush(out, ts []byte) []byte {
	if len(s.partial) == 0 {
		return out
	}
	out = appendPieces(out, ts, s.name, s.partial)
	s.partial = s.partial[:0]
	return out
}
