package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"syscall"
)

// ConnAdder is the part of *sef.StateWriter that AppendState needs.
type ConnAdder interface {
	AddConn(name string, c syscall.Conn) error
}

// connPrefix starts the names of the handed-over sockets.
const connPrefix = "handoff."

// AppendState appends the parked connections to b, in a section Decode
// reads back, and hands a copy of each socket to w. Call it from
// LUStateSave, once Ready.
func (g *Group) AppendState(b []byte, w ConnAdder) ([]byte, error) {
	g.mu.Lock()
	r := g.round
	if r == nil || !g.readyLocked() {
		g.mu.Unlock()
		return b, errors.New("handoff: state save before everything parked")
	}
	type entry struct {
		c *Conn
		p parked
	}
	conns := make([]entry, 0, len(r.parked))
	for c, p := range r.parked {
		conns = append(conns, entry{c, p})
	}
	g.mu.Unlock()
	// A stable order makes the state reproducible, for tests and dumps.
	sort.Slice(conns, func(i, j int) bool {
		return conns[i].c.RemoteAddr().String() < conns[j].c.RemoteAddr().String()
	})
	b = binary.AppendUvarint(b, uint64(len(conns)))
	for i, e := range conns {
		sc, ok := e.c.Conn.(syscall.Conn)
		if !ok {
			return b, fmt.Errorf("handoff: connection %d: a %T has no socket to hand over", i, e.c.Conn)
		}
		name := fmt.Sprintf("%s%d", connPrefix, i)
		if err := w.AddConn(name, sc); err != nil {
			return b, fmt.Errorf("handoff: %w", err)
		}
		// The reader's own unread bytes come after the ones it was
		// handed and has not read yet.
		unread := append(append([]byte(nil), e.c.unread...), e.p.unread...)
		b = appendBytes(b, []byte(name))
		b = appendBytes(b, unread)
		b = appendBytes(b, e.p.state)
	}
	return b, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// Restored is a connection the old instance handed over.
type Restored struct {
	Conn   net.Conn
	Unread []byte // read by the old instance, not yet used
	State  []byte // what its goroutine parked with
}

// ErrShortState: the section is cut short or malformed.
var ErrShortState = errors.New("handoff: state cut short")

// Decode reads a section AppendState wrote at the start of raw, makes
// connections of the fds it names (taking them out of fds and closing
// them: net.FileConn makes its own), and returns them with the rest of
// raw. On error it closes every connection it made. Unread and State
// share raw's bytes.
func Decode(raw []byte, fds map[string]*os.File) (conns []Restored, rest []byte, err error) {
	defer func() {
		if err != nil {
			for _, rc := range conns {
				rc.Conn.Close()
			}
			conns = nil
		}
	}()
	n, k := binary.Uvarint(raw)
	if k <= 0 || n > uint64(len(raw)) {
		return nil, raw, ErrShortState
	}
	raw = raw[k:]
	for i := uint64(0); i < n; i++ {
		var name, unread, state []byte
		if name, raw, err = takeBytes(raw); err != nil {
			return conns, raw, err
		}
		if unread, raw, err = takeBytes(raw); err != nil {
			return conns, raw, err
		}
		if state, raw, err = takeBytes(raw); err != nil {
			return conns, raw, err
		}
		f, ok := fds[string(name)]
		if !ok {
			return conns, raw, fmt.Errorf("handoff: state names connection %q, but no such fd came", name)
		}
		delete(fds, string(name))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return conns, raw, fmt.Errorf("handoff: connection %q: %w", name, err)
		}
		conns = append(conns, Restored{Conn: c, Unread: unread, State: state})
	}
	return conns, raw, nil
}

func takeBytes(b []byte) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, b, ErrShortState
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}
