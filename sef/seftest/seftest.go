// Package seftest is a fake rs for unit tests of a service's callbacks:
// it starts a *sef.Service in the test's own process, on a socketpair
// instead of rs's channel, and drives it as rs would (init fresh,
// restart or live update with a state, held until a commit or not;
// pings; a live update prepared to a state and then cancelled or
// committed; stop), with no processes.
//
// The service's main loop is the test's to run, as in main:
//
//	s, rs, err := seftest.Start(ctx, seftest.Init{}, callbacks)
//	go func() {
//		for {
//			w, err := s.Receive(ctx)
//			if err != nil {
//				return
//			}
//			serve(w)
//		}
//	}()
//	err = rs.Ping(ctx)                                   // answered by the loop
//	saved, err := rs.Prepare(ctx, sef.StateRequestFree) // LUStateSave's output (PrepareBase: with a pre-copy base)
//	rs.Stop(ctx)                                         // a commit stops the old one
//	s2, rs2, err := seftest.Start(ctx, seftest.Init{Type: sef.InitLiveUpdate, State: saved}, callbacks)
//
// Files: what the fake hands in (Init.FDs, Saved.FDs) is sent as copies,
// the caller keeps its own; what it returns (Saved.FDs, Stored) is the
// caller's to close (RS.Close closes what it still holds).
package seftest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/internal/hook"
)

// Init is the init the fake rs sends.
type Init struct {
	Type     sef.InitType // zero: sef.InitFresh
	Label    string       // zero: "test"
	Restarts int
	// FDs is the fd store to hand back (RS.Stored of an earlier instance,
	// for a restart or an update).
	FDs map[string]*os.File
	// State is the old instance's saved state, for sef.InitLiveUpdate
	// (RS.Prepare's result); nil hands an empty state.
	State *Saved
	// Hold asks a live update's new instance (Type sef.InitLiveUpdate
	// only) to hold until Commit, as rs does a group update's members:
	// Receive delivers no work, Listen's listeners accept nothing,
	// Committed stays open.
	Hold bool
}

// Saved is what a prepared instance handed over in its lu-ready.
type Saved struct {
	State []byte
	FDs   map[string]*os.File
	// Base is the pre-copy base stream as the old instance wrote it
	// (RS.PrepareBase), nil without one; Init.State with a Base hands it
	// to the new instance before its init, as rs does.
	Base []byte
}

// Close closes the handed-over fds.
func (sv *Saved) Close() {
	for _, f := range sv.FDs {
		f.Close()
	}
}

// RS is the fake rs's end of one instance's channel.
type RS struct {
	c        *msg.Conn
	svc      *msg.Conn // the service's end, closed with ours
	in       Init
	notTaken []string
	held     bool

	recvMu sync.Mutex // one reader of c at a time
	seq    uint64

	mu     sync.Mutex
	stored map[string]*os.File
}

// ErrRefused: the service refused to prepare (its lu-ready carried an
// error).
var ErrRefused = errors.New("live update refused")

// Start runs sef.Startup with cb and opts against a fake rs that sends
// in, and returns the service once its init has succeeded. If init
// fails, the error wraps sef.ErrInit (and the RS is still returned).
func Start(ctx context.Context, in Init, cb sef.Callbacks, opts ...sef.Option) (*sef.Service, *RS, error) {
	r, opt, err := Fake(in)
	if err != nil {
		return nil, nil, err
	}
	type result struct {
		s   *sef.Service
		err error
	}
	started := make(chan result, 1)
	go func() {
		s, err := sef.Startup(ctx, cb, append([]sef.Option{opt}, opts...)...)
		started <- result{s, err}
	}()
	herr := r.Started(ctx)
	res := <-started
	if res.err != nil {
		return nil, r, res.err
	}
	if herr != nil {
		return nil, r, herr
	}
	return res.s, r, nil
}

// Fake is Start for code that calls sef.Startup itself (a framework's
// Run, say): pass the Option to that Startup, then call Started, which
// plays rs's side of the init.
func Fake(in Init) (*RS, sef.Option, error) {
	ours, theirs, err := msg.Pair()
	if err != nil {
		return nil, nil, err
	}
	rc, err := msg.NewConn(ours)
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, nil, err
	}
	sc, err := msg.NewConn(theirs)
	if err != nil {
		rc.Close()
		theirs.Close()
		return nil, nil, err
	}
	r := &RS{c: rc, svc: sc, in: in, stored: map[string]*os.File{}}
	return r, hook.WithChannel(sc).(sef.Option), nil
}

// Started plays rs's side of the init (hello, init, init-result) and
// returns once the init succeeded; an init that failed is an error.
func (r *RS) Started(ctx context.Context) error {
	if err := r.handshake(ctx, r.in); err != nil {
		r.Close()
		return err
	}
	return nil
}

// handshake plays rs's side of the init: hello, init, init-result.
func (r *RS) handshake(ctx context.Context, in Init) error {
	stop := context.AfterFunc(ctx, func() { r.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	m, files, err := r.c.Recv()
	msg.CloseFiles(files)
	if err != nil {
		return fmt.Errorf("seftest: hello: %w", err)
	}
	if m.Kind != msg.KindHello {
		return fmt.Errorf("seftest: first message %s, want hello", m.Kind)
	}
	if in.Type == sef.InitLiveUpdate && in.State != nil && in.State.Base != nil {
		if err := r.sendBase(in.State.Base); err != nil {
			return err
		}
	}
	init := &msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitType(in.Type), Label: in.Label, Restarts: uint32(in.Restarts), Hold: in.Hold}
	if in.Type == 0 {
		init.InitType = msg.InitFresh
	}
	if in.Label == "" {
		init.Label = "test"
	}
	var send []*os.File
	for name, f := range in.FDs {
		init.Names = append(init.Names, name)
		send = append(send, f)
	}
	if in.Type == sef.InitLiveUpdate {
		st := in.State
		if st == nil {
			st = &Saved{}
		}
		mem, err := memfd(st.State)
		if err != nil {
			return err
		}
		defer mem.Close()
		init.Names = append(init.Names, "lu:state")
		send = append(send, mem)
		for name, f := range st.FDs {
			init.Names = append(init.Names, "lu:"+name)
			send = append(send, f)
		}
	}
	if err := r.c.Send(init, send...); err != nil {
		return fmt.Errorf("seftest: send init: %w", err)
	}
	for {
		m, files, err := r.c.Recv()
		if err != nil {
			return fmt.Errorf("seftest: init result: %w", err)
		}
		switch m.Kind {
		case msg.KindFDStore:
			r.store(m, files)
		case msg.KindInitResult:
			msg.CloseFiles(files)
			r.notTaken = m.NotTaken
			r.held = m.Hold
			if m.Err != "" {
				return fmt.Errorf("seftest: init failed: %s", m.Err)
			}
			return nil
		default:
			msg.CloseFiles(files)
			return fmt.Errorf("seftest: %s during init", m.Kind)
		}
	}
}

func memfd(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("seftest-state", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seftest: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "seftest-state")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("seftest: state: %w", err)
	}
	return f, nil
}

func (r *RS) store(m msg.Message, files []*os.File) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(files) != 1 || len(m.Names) != 1 {
		msg.CloseFiles(files)
		return
	}
	if old := r.stored[m.Names[0]]; old != nil {
		old.Close()
	}
	r.stored[m.Names[0]] = files[0]
}

// next reads the service's next message, bounded by ctx, keeping the
// fd store's messages on the way. Callers hold recvMu.
func (r *RS) next(ctx context.Context) (msg.Message, []*os.File, error) {
	for {
		stop := context.AfterFunc(ctx, func() { r.c.SetReadDeadline(time.Unix(1, 0)) })
		m, files, err := r.c.Recv()
		if !stop() {
			r.c.SetReadDeadline(time.Time{})
			if ctx.Err() != nil {
				msg.CloseFiles(files)
				return msg.Message{}, nil, ctx.Err()
			}
		}
		if err != nil {
			return m, nil, err
		}
		if m.Kind == msg.KindFDStore {
			r.store(m, files)
			continue
		}
		return m, files, nil
	}
}

// drain takes every message already queued, keeping the fd store's.
func (r *RS) drain() {
	for {
		m, files, err := r.c.TryRecv()
		if err != nil {
			return
		}
		if m.Kind == msg.KindFDStore {
			r.store(m, files)
			continue
		}
		msg.CloseFiles(files) // a pong or lu-ready nobody waits for
	}
}

// NotTaken is what a live update's init-result said the new instance
// did not take (msg.NotTakenState, msg.NotTakenFDs).
func (r *RS) NotTaken() []string { return r.notTaken }

// Held tells whether the init-result said the instance holds until
// Commit (Init.Hold asked it).
func (r *RS) Held() bool { return r.held }

// Commit ends the hold of an instance started with Init.Hold, as rs does
// at a group update's commit: it serves from here.
func (r *RS) Commit() error { return r.c.Send(&msg.Message{Kind: msg.KindLUCommit}) }

// Stored returns copies of the fd store as the service filled it, for
// the next instance's Init.FDs; the caller closes them.
func (r *RS) Stored() (map[string]*os.File, error) {
	r.recvMu.Lock()
	r.drain()
	r.recvMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*os.File, len(r.stored))
	for name, f := range r.stored {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, g := range out {
				g.Close()
			}
			return nil, err
		}
		out[name] = os.NewFile(uintptr(fd), name)
	}
	return out, nil
}

// Ping sends a ping and waits for its pong, which only the service's
// main loop (in Receive) answers.
func (r *RS) Ping(ctx context.Context) error {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	r.seq++
	if err := r.c.Send(&msg.Message{Kind: msg.KindPing, Seq: r.seq}); err != nil {
		return err
	}
	for {
		m, files, err := r.next(ctx)
		if err != nil {
			return fmt.Errorf("seftest: ping: %w", err)
		}
		msg.CloseFiles(files)
		if m.Kind == msg.KindPong && m.Seq == r.seq {
			return nil
		}
	}
}

// Prepare asks the service to prepare for a live update to state and
// waits until it is ready (its state saved) or refuses (ErrRefused). The
// service is then quiescent until Cancel (a rollback) or Stop (a commit).
// If ctx ends first, Prepare cancels the update, as rs does at maxtime.
func (r *RS) Prepare(ctx context.Context, state int) (*Saved, error) {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	return r.prepare(ctx, state, nil)
}

// prepare sends lu-prepare for state (with fds under names) and waits
// for lu-ready; the caller holds recvMu.
func (r *RS) prepare(ctx context.Context, state int, names []string, fds ...*os.File) (*Saved, error) {
	maxTime := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		maxTime = time.Until(dl)
	}
	err := r.c.Send(&msg.Message{Kind: msg.KindLUPrepare, State: uint32(state), MaxTime: int64(maxTime), Names: names}, fds...)
	for _, f := range fds {
		f.Close() // the service has its own copy
	}
	if err != nil {
		return nil, err
	}
	for {
		m, files, err := r.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				r.c.Send(&msg.Message{Kind: msg.KindLUCancel})
			}
			return nil, fmt.Errorf("seftest: prepare: %w", err)
		}
		if m.Kind != msg.KindLUReady {
			msg.CloseFiles(files) // lu-base-done, pongs
			continue
		}
		if m.Err != "" {
			msg.CloseFiles(files)
			return nil, fmt.Errorf("%w: %s", ErrRefused, m.Err)
		}
		return saved(m, files)
	}
}

func saved(m msg.Message, files []*os.File) (*Saved, error) {
	sv := &Saved{FDs: map[string]*os.File{}}
	var mem *os.File
	for i, f := range files {
		if i < len(m.Names) && m.Names[i] == "state" {
			mem = f
			continue
		}
		if i < len(m.Names) {
			sv.FDs[m.Names[i]] = f
		} else {
			f.Close()
		}
	}
	if mem == nil {
		sv.Close()
		return nil, errors.New("seftest: lu-ready without a state")
	}
	defer mem.Close()
	fi, err := mem.Stat()
	if err != nil {
		sv.Close()
		return nil, err
	}
	sv.State = make([]byte, fi.Size())
	if _, err := mem.ReadAt(sv.State, 0); err != nil && fi.Size() > 0 {
		sv.Close()
		return nil, err
	}
	return sv, nil
}

// Cancel rolls a prepared update back: the service resumes.
func (r *RS) Cancel() error { return r.c.Send(&msg.Message{Kind: msg.KindLUCancel}) }

// Stop asks the service to stop, as `service down` and an update's
// commit do: its Receive returns ErrStopped with sef.CauseRS.
func (r *RS) Stop() error { return r.c.Send(&msg.Message{Kind: msg.KindStop}) }

// Close closes the fake's end of the channel (the service sees rs die:
// sef.ErrChannelLost) and the fd store it holds.
func (r *RS) Close() error {
	r.mu.Lock()
	for name, f := range r.stored {
		f.Close()
		delete(r.stored, name)
	}
	r.mu.Unlock()
	r.svc.Close()
	return r.c.Close()
}
