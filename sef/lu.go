package sef

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// Live update states, as MINIX numbers them. States from StateCustom up
// mean what the service's own callbacks say.
const (
	StateWorkFree     = 1 // at the top of the receive loop
	StateRequestFree  = 2 // no request accepted and not yet answered
	StateProtocolFree = 3 // no multi-message exchange open
	StateCustom       = 4
)

// handoverPrefix marks, in the init message of a live update, the fds the
// old instance handed over (as opposed to the fd store's).
const (
	handoverPrefix = "lu:"
	stateName      = "state"
)

// StateWriter is where LUStateSave writes the service's state: bytes into
// a memfd, plus named fds (open connections, say) that go along with it.
type StateWriter struct {
	*bufio.Writer
	names []string
	files []*os.File
	max   int  // fds it may carry: the new instance's init holds them, the state and the fd store
	delta bool // a pre-copy base went before: write only what changed since it began
}

// Delta tells whether a pre-copy base was streamed to the new instance
// before this save: the save then writes only what changed since the
// base began (LUBaseStart), and the new instance's Init.State.Delta is
// set. False: write the whole state, as without pre-copy.
func (w *StateWriter) Delta() bool { return w.delta }

// AddFD hands a copy of f to the new instance under name: sef
// duplicates f, and the caller keeps f (and closes it when it likes).
// If the update is rolled back, f is still the caller's to go on using.
func (w *StateWriter) AddFD(name string, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("hand over fd %q: %w", name, err)
	}
	return w.add(name, rc, f.Name())
}

// AddConn hands a copy of a connection's socket (a *net.TCPConn or
// *net.UnixConn, say) to the new instance under name; the caller keeps c.
func (w *StateWriter) AddConn(name string, c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("hand over fd %q: %w", name, err)
	}
	return w.add(name, rc, name)
}

func (w *StateWriter) add(name string, rc syscall.RawConn, fname string) error {
	if name == "" || name == stateName || len(name) > 200 {
		return fmt.Errorf("hand over fd: bad name %q", name)
	}
	if len(w.files) >= w.max {
		// rs would take the service for faulty: one init carries the
		// state, these and the fd store, at most msg.MaxFDs.
		return fmt.Errorf("hand over fd %q: more than %d fds (an init carries %d, with the state and the fd store)", name, w.max, msg.MaxFDs)
	}
	f, err := dupRaw(rc, fname)
	if err != nil {
		return fmt.Errorf("hand over fd %q: %w", name, err)
	}
	w.names = append(w.names, name)
	w.files = append(w.files, f)
	return nil
}

// StateReader is the old instance's state, given to the new one's init.
type StateReader struct {
	io.Reader
	Size int64
	// Delta: a pre-copy base came first (LUBaseLoad loaded it) and this
	// is what changed since, not the whole state.
	Delta bool
	mem   *os.File
	// FDs are the fds the old instance handed over, by name; they are
	// the callee's to close.
	FDs map[string]*os.File
}

// Bytes maps the whole state into memory, read-only, and returns it: no
// copy, and the pages the old instance wrote are shared, not faulted in
// one by one. The mapping lives as long as the process, so strings that
// point into it (with unsafe.String) stay valid; the bytes must not be
// written. For a state too large to keep mapped, read Reader instead.
func (r *StateReader) Bytes() ([]byte, error) {
	if r.Size == 0 {
		return nil, nil
	}
	rc, err := r.mem.SyscallConn()
	if err != nil {
		return nil, err
	}
	var b []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		b, merr = unix.Mmap(int(fd), 0, int(r.Size), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	}); err != nil {
		return nil, err
	}
	if merr != nil {
		return nil, fmt.Errorf("map state: %w", merr)
	}
	return b, nil
}

// luState is a live update in progress (main loop only).
type luState struct {
	state int
	ready bool      // lu-ready sent: quiescent until commit (stop) or cancel
	base  *baseSend // the pre-copy base being streamed, nil once done or without one
	delta bool      // the base was streamed: the save writes the delta
}

// luPrepare starts preparing for state, or refuses it at once. base is
// the pre-copy pipe's write end if rs sent one (ours to close).
func (s *Service) luPrepare(m msg.Message, base *os.File) {
	st := int(m.State)
	if s.lu != nil {
		if base != nil {
			base.Close()
		}
		s.send(&msg.Message{Kind: msg.KindLUReady, Err: "an update is already being prepared"})
		return
	}
	valid := st >= StateWorkFree && st <= StateProtocolFree
	if s.cb.LUStateIsValid != nil {
		valid = s.cb.LUStateIsValid(s, st)
	}
	if !valid {
		if base != nil {
			base.Close()
		}
		s.send(&msg.Message{Kind: msg.KindLUReady, Err: fmt.Sprintf("state %d not supported", st)})
		return
	}
	if base != nil && s.cb.LUBaseStart == nil {
		// The new instance sees no base and takes a whole state; maxtime
		// starts now.
		base.Close()
		base = nil
		s.send(&msg.Message{Kind: msg.KindLUBaseDone})
	}
	if base != nil {
		s.luPrepareBase(st, base)
		return
	}
	s.log.Info("preparing for live update", "state", st)
	s.lu = &luState{state: st}
	if s.cb.LUStateChanged != nil {
		s.cb.LUStateChanged(s, 0, st)
	}
	if s.cb.LUStateDump != nil {
		s.cb.LUStateDump(s, st)
	}
}

// luPrepareBase starts preparing with a pre-copy: the base streams
// first, while the service serves; LUStateChanged(0, state) comes once
// it is in the pipe (baseTry).
func (s *Service) luPrepareBase(st int, base *os.File) {
	f, err := nonblocking(base)
	var step BaseStep
	if err == nil {
		step, err = s.cb.LUBaseStart(s, st)
		if err == nil && step == nil {
			err = errors.New("LUBaseStart returned no step")
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		s.send(&msg.Message{Kind: msg.KindLUReady, Err: "pre-copy base: " + err.Error()})
		return
	}
	s.log.Info("preparing for live update; streaming the pre-copy base", "state", st)
	s.lu = &luState{state: st, base: newBaseSend(s, f, step)}
	if s.cb.LUStateDump != nil {
		s.cb.LUStateDump(s, st)
	}
}

// luEnd leaves the update state: cancelled by rs, or failed here.
func (s *Service) luEnd(why string) {
	if s.lu == nil {
		return
	}
	old := s.lu.state
	if s.lu.base != nil {
		s.lu.base.abort()
	}
	s.lu = nil
	s.log.Info("live update ended; resuming", "why", why)
	if s.cb.LUStateChanged != nil {
		s.cb.LUStateChanged(s, old, 0)
	}
}

// luTry runs at the top of the receive loop while preparing: it drives
// the pre-copy base if there is one (more: a step may run again at
// once), then, once the state is reached, it saves the state and
// reports ready to rs.
func (s *Service) luTry() (more bool) {
	if s.lu.base != nil {
		if more = s.baseTry(); more || s.lu == nil || s.lu.base != nil {
			return more
		}
	}
	s.luTryState()
	return false
}

func (s *Service) luTryState() {
	st := s.lu.state
	if s.cb.LUPrepare != nil && !s.cb.LUPrepare(s, st) {
		return
	}
	var result error
	if s.cb.LUReadyPre != nil {
		result = s.cb.LUReadyPre(s, nil)
	}
	if result == nil {
		result = s.luSave()
	}
	if result != nil {
		s.send(&msg.Message{Kind: msg.KindLUReady, Err: result.Error()})
		s.luEnd(result.Error())
	}
}

// luSave writes the state into a memfd and sends it, with the handed-over
// fds, in lu-ready.
func (s *Service) luSave() error {
	fd, err := unix.MemfdCreate("sef-state", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("state save: memfd: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "sef-state")
	defer mem.Close() // rs and the new instance hold their own references
	w := &StateWriter{Writer: bufio.NewWriterSize(mem, 1<<20), max: msg.MaxFDs - 1 - s.handedFDs(), delta: s.lu.delta}
	defer func() { msg.CloseFiles(w.files) }()
	if s.cb.LUStateSave != nil {
		if err := s.cb.LUStateSave(s, w); err != nil {
			return fmt.Errorf("state save: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("state save: %w", err)
	}
	names := append([]string{stateName}, w.names...)
	files := append([]*os.File{mem}, w.files...)
	if err := s.conn.Send(&msg.Message{Kind: msg.KindLUReady, State: uint32(s.lu.state), Names: names}, files...); err != nil {
		return fmt.Errorf("send lu-ready: %w", err)
	}
	s.lu.ready = true
	s.log.Info("ready for live update; state handed over", "state", s.lu.state, "fds", len(w.files))
	return nil
}

// splitHandover separates the init's fds: the fd store's go to in.FDs,
// the handed-over ones (and the state memfd) to in.State.
func splitHandover(in *Init) error {
	var state *StateReader
	for name, f := range in.FDs {
		rest, ok := strings.CutPrefix(name, handoverPrefix)
		if !ok {
			continue
		}
		delete(in.FDs, name)
		if state == nil {
			state = &StateReader{FDs: map[string]*os.File{}}
		}
		if rest == stateName {
			fi, err := f.Stat()
			if err != nil {
				return fmt.Errorf("state: %w", err)
			}
			// The memfd's offset is shared with the old instance: read
			// from 0 without moving it.
			state.Reader = io.NewSectionReader(f, 0, fi.Size())
			state.mem = f
			state.Size = fi.Size()
			continue
		}
		state.FDs[rest] = f
	}
	if in.Type == InitLiveUpdate {
		if state == nil || state.Reader == nil {
			if state != nil {
				for _, f := range state.FDs {
					f.Close()
				}
			}
			return errors.New("live update init without a state")
		}
		in.State = state
	}
	return nil
}
