package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/reincarnation/rs/sef/handoff"
)

// Live update: kv hands its map AND its open client connections to the
// new version, through sef/handoff. While rs has asked it to prepare,
// every connection goroutine stops at its safe point (before it reads
// the next requests) and parks with what it holds: the bytes read but
// not yet parsed, and the parser's half-read request. The acceptor parks
// the same way, leaving new connections in the listen backlog. Once all
// of them are parked, and no DEBUG SLEEP is pending, nothing is in
// flight: the state is reached, and the state save writes the map and
// each parked connection (a copy of its socket goes along as an fd). If
// rs cancels, everyone resumes where it stopped; if it commits, this
// process exits and the new one serves the same sockets, starting with
// the bytes this one had read.

// luFault makes a kv built with -ldflags "-X main.luFault=..." fail its
// live-update init on purpose, for rollback tests: exit, hang, restore;
// base fails the pre-copy base's load.
var luFault = ""

// preCopy "off" (-ldflags "-X main.preCopy=off") builds a kv without the
// pre-copy callbacks, as one built before them, for tests.
var preCopy = "on"

// stateMagic starts kv's state; a new version that cannot read it refuses
// the update and the old one carries on.
const stateMagic = "kv-state-3\n"

// handoffReady is the prepare callback: everything parked, no sleep
// pending (its reply is still to be written).
func (srv *server) handoffReady() bool {
	return len(srv.sleeping) == 0 && srv.group.Ready()
}

// fileAdder is the part of *sef.StateWriter that saveState needs.
type fileAdder interface {
	io.Writer
	handoff.ConnAdder
}

// saveState writes the map and every parked connection. The state is
// built in memory with appends and written in large pieces: this runs
// while clients wait.
func (srv *server) saveState(w fileAdder) error {
	if !srv.group.Ready() {
		return errors.New("state save before every connection parked")
	}
	if d, ok := w.(interface{ Delta() bool }); ok && d.Delta() {
		// A pre-copy base went before: only what changed since.
		if err := srv.saveDelta(w); err != nil {
			return err
		}
	} else if err := srv.saveMap(w); err != nil {
		return err
	}
	var e stateEncoder
	var err error
	e.b, err = srv.group.AppendState(e.b, w)
	if err != nil {
		return err
	}
	return e.flush(w)
}

// saveMap writes the whole map.
func (srv *server) saveMap(w io.Writer) error {
	// Each shard is encoded on its own, on every CPU at once.
	shards := srv.eng.data.shards
	parts := make([][]byte, len(shards))
	parallel(len(shards), func(i int) {
		se := stateEncoder{b: make([]byte, 0, 32*len(shards[i])+16)}
		se.uint(uint64(len(shards[i])))
		for k, v := range shards[i] {
			se.str(k)
			se.str(v)
		}
		parts[i] = se.b
	})
	var e stateEncoder
	e.str(stateMagic)
	e.uint(uint64(len(parts)))
	for _, p := range parts {
		e.uint(uint64(len(p)))
	}
	if err := e.flush(w); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// parkState is what a connection goroutine parks with: its parser's
// half-read request.
func parkState(p *parser) []byte {
	var e stateEncoder
	e.uint(uint64(p.left))
	e.uint(uint64(p.size))
	e.uint(uint64(len(p.args)))
	for _, a := range p.args {
		e.str(a)
	}
	return e.b
}

// restoredConn is a connection the old version handed over.
type restoredConn struct {
	c   net.Conn
	buf []byte
	p   parser
}

// loadState reads what saveState wrote. It takes ownership of fds; on
// error every connection it made is closed again.
func loadState(r io.Reader, fds map[string]*os.File) (data *store, conns []restoredConn, err error) {
	return loadStateOnto(r, fds, nil)
}

// loadStateOnto is loadState when a pre-copy base (base, nil if none)
// was loaded before: a delta applies onto it.
func loadStateOnto(r io.Reader, fds map[string]*os.File, base *store) (data *store, conns []restoredConn, err error) {
	raw, err := readState(r)
	if err != nil {
		for _, f := range fds {
			f.Close()
		}
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	return parseState(raw, fds, base)
}

// readState gets the state's bytes: mapped when the reader can (sef's
// StateReader), else read.
func readState(r io.Reader) ([]byte, error) {
	if m, ok := r.(interface{ Bytes() ([]byte, error) }); ok {
		return m.Bytes()
	}
	return io.ReadAll(r)
}

// parseState decodes the state. raw is never written again, so the
// strings share its bytes. It takes ownership of fds; on error every
// connection it made is closed again.
func parseState(raw []byte, fds map[string]*os.File, base *store) (data *store, conns []restoredConn, err error) {
	defer func() {
		for _, f := range fds {
			f.Close()
		}
		if err != nil {
			for _, rc := range conns {
				rc.c.Close()
			}
			conns = nil
		}
	}()
	// The collector would run several times while a large map is built
	// from nothing; clients are waiting, so it waits instead.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	// One string for the whole state: every key and value is a slice of
	// it, so a hundred thousand keys cost one allocation, not 200k. raw
	// is never written again, so the string can share its bytes.
	d := stateDecoder{s: unsafe.String(unsafe.SliceData(raw), len(raw))}
	switch magic := d.str(); {
	case d.err == nil && magic == deltaMagic:
		data, err = applyDelta(&d, base)
	case d.err == nil && magic != stateMagic:
		return nil, nil, fmt.Errorf("state format %q, this kv reads %q", magic, stateMagic)
	default:
		data, err = parseMap(&d)
	}
	if err != nil {
		return nil, nil, err
	}
	restored, _, err := handoff.Decode(raw[d.off:], fds)
	if err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	for _, r := range restored {
		rc := restoredConn{c: r.Conn, buf: r.Unread}
		pd := stateDecoder{s: unsafe.String(unsafe.SliceData(r.State), len(r.State))}
		rc.p.left = pd.count()
		rc.p.size = pd.count()
		args := pd.count()
		for j := 0; j < args && pd.err == nil; j++ {
			rc.p.args = append(rc.p.args, pd.str())
		}
		conns = append(conns, rc)
		if pd.err != nil {
			return nil, conns, fmt.Errorf("state: connection: %w", pd.err)
		}
	}
	return data, conns, nil
}

// parseMap reads the whole map of a state.
func parseMap(d *stateDecoder) (*store, error) {
	lengths := make([]int, d.count())
	for i := range lengths {
		lengths[i] = d.count()
	}
	sections := make([]string, len(lengths))
	for i, n := range lengths {
		sections[i] = d.take(n)
	}
	if d.err != nil {
		return nil, fmt.Errorf("state: %w", d.err)
	}
	return loadShards(sections)
}

// loadShards builds the store from the shard sections: on every CPU at
// once when the old version sharded as this one does, else rehashed.
func loadShards(sections []string) (*store, error) {
	st := newStore()
	errs := make([]error, len(sections))
	decode := func(i int, put func(k, v string)) {
		d := stateDecoder{s: sections[i]}
		n := d.count()
		for j := 0; j < n && d.err == nil; j++ {
			k := d.str()
			put(k, d.str())
		}
		errs[i] = d.err
	}
	if len(sections) == storeShards {
		parallel(len(sections), func(i int) {
			m := make(map[string]string, len(sections[i])/16)
			decode(i, func(k, v string) { m[k] = v })
			st.shards[i] = m
		})
	} else {
		for i := range sections {
			decode(i, st.set)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return st, nil
}

// parallel runs f(0..n-1) on as many goroutines as there are CPUs and
// returns when all are done.
func parallel(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(n, runtime.GOMAXPROCS(0)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// The state format: length-prefixed strings and uvarints, nothing else.
type stateEncoder struct {
	b []byte
}

func (e *stateEncoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }

func (e *stateEncoder) str(s string) {
	e.uint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *stateEncoder) flush(w io.Writer) error {
	_, err := w.Write(e.b)
	e.b = e.b[:0]
	return err
}

type stateDecoder struct {
	s   string
	off int
	err error
}

var errShortState = errors.New("state cut short")

func (d *stateDecoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := uvarint(d.s[d.off:])
	if n <= 0 {
		d.err = errShortState
		return 0
	}
	d.off += n
	return v
}

// uvarint is binary.Uvarint for a string, without a copy.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		b := s[i]
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, -1
			}
			return x | uint64(b)<<shift, i + 1
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	return 0, 0
}

func (d *stateDecoder) count() int {
	v := d.uint()
	if v > uint64(len(d.s)) { // every counted item takes at least a byte
		d.err = fmt.Errorf("count %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *stateDecoder) str() string {
	n := d.uint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)-d.off) {
		d.err = errShortState
		return ""
	}
	return d.take(int(n))
}

// take returns the next n bytes.
func (d *stateDecoder) take(n int) string {
	if d.err != nil || n > len(d.s)-d.off {
		if d.err == nil {
			d.err = errShortState
		}
		return ""
	}
	v := d.s[d.off : d.off+n]
	d.off += n
	return v
}
