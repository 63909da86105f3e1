package sef

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reincarnation/rs/internal/sefdebug"
	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/sef/internal/hook"
)

// InitType says why this instance was started.
type InitType int

const (
	InitFresh      InitType = InitType(msg.InitFresh)
	InitRestart    InitType = InitType(msg.InitRestart)
	InitLiveUpdate InitType = InitType(msg.InitLiveUpdate)
)

func (t InitType) String() string { return msg.InitType(t).String() }

// Init is what the init callback learns about this start.
type Init struct {
	Type     InitType
	Label    string
	Restarts int
	// FDs is the fd store as this service filled it with StoreFD, and
	// the config's `listen` sockets, by name. The files are the callee's
	// (sef keeps copies of its own for Listen). The sockets Listen
	// manages are not here. Empty on a first start.
	FDs map[string]*os.File
	// State is the old instance's saved state and handed-over fds; set
	// only for InitLiveUpdate. sef closes the state memfd once init returns.
	State *StateReader
}

// Callbacks are the service's answers to system events. A nil field means
// the default in the package doc.
type Callbacks struct {
	// InitFresh runs on a first start. Default: nothing, success.
	InitFresh func(s *Service, in Init) error
	// InitRestart runs when rs reincarnates the service. Default: InitFresh.
	InitRestart func(s *Service, in Init) error
	// InitLiveUpdate runs in the new version during a live update.
	// Default: InitFresh, then LUStateRestore.
	InitLiveUpdate func(s *Service, in Init) error
	// LUStateRestore reads the old version's state (in.State) in the new
	// one, when InitLiveUpdate is not set. Default: nothing.
	LUStateRestore func(s *Service, in Init) error
	// Ping decides whether to answer a ping. Default: answer. Returning an
	// error leaves the ping unanswered, so rs will reincarnate the service.
	Ping func(s *Service) error
	// Signal handles SIGTERM, SIGINT and SIGHUP, and rs's stop message,
	// which arrives as SIGTERM. Default: SIGTERM and SIGINT stop the
	// service (Receive returns ErrStopped), others are ignored. A
	// callback that stops calls s.Stop; the stop's cause is still the
	// signal's (or rs's).
	Signal func(s *Service, sig os.Signal)

	// Live update (see the package doc for the sequence).
	//
	// LUStateIsValid says whether the service supports preparing for a
	// state. Default: the standard states 1 to 3.
	LUStateIsValid func(s *Service, state int) bool
	// LUStateChanged is told when the update state changes (0: none).
	LUStateChanged func(s *Service, old, state int)
	// LUPrepare is asked on the main loop whether the state is reached:
	// when preparing starts, before each Receive returns work or waits,
	// and at once after each call of s.Reached. Default: always
	// (work-free holds at the top of the receive loop, where it is asked).
	LUPrepare func(s *Service, state int) bool
	// LUStateDump is called when preparing starts, for debugging.
	LUStateDump func(s *Service, state int)
	// LUReadyPre may veto the update just before the state is saved: a
	// non-nil error refuses it and the service carries on.
	LUReadyPre func(s *Service, result error) error
	// LUStateSave writes the state for the new version. Default: nothing.
	// After a pre-copy base (w.Delta()) it writes only what changed since.
	LUStateSave func(s *Service, w *StateWriter) error

	// Pre-copy, for a state too large to save in the pause (see the
	// package doc). A service sets both or neither.
	//
	// LUBaseStart begins a base snapshot in the old instance, on the
	// main loop, when preparing starts and rs opened a base stream. From
	// then on the service records what changes (for LUStateSave's
	// delta); sef calls the returned step between work items until it is
	// done, and only then LUStateChanged(0, state). An update that ends
	// meanwhile calls LUStateChanged(state, 0) as ever: drop the snapshot
	// and the record of changes there. An error refuses the update.
	LUBaseStart func(s *Service, state int) (BaseStep, error)
	// LUBaseLoad reads the base in the new instance, in a goroutine of
	// its own while Startup waits for its init (nothing else of the
	// service runs then). It must read r to its io.EOF; its error fails
	// the init. The init then finds the delta in Init.State (Delta set).
	LUBaseLoad func(s *Service, r io.Reader) error
}

// Option configures Startup.
type Option func(*options)

type options struct {
	log  *slog.Logger
	conn *msg.Conn
}

// WithLogger makes sef log through l (with the label added) instead of
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

func init() {
	hook.WithChannel = func(c *msg.Conn) any { return Option(func(o *options) { o.conn = c }) }
	sefdebug.Garbage = func(v any) error { return v.(*Service).debugGarbage() }
	sefdebug.CloseChannel = func(v any) error { return v.(*Service).debugCloseChannel() }
}

// workQueue is how much posted work may wait for the main loop before
// Post blocks.
const workQueue = 1024

// Service is this process's side of the rs channel. Receive belongs to the
// main loop; Post, Reached, Listen, StoreFD and Stop may be called from
// any goroutine.
type Service struct {
	cb     Callbacks
	conn   *msg.Conn // nil when standalone
	label  string
	log    *slog.Logger
	work   chan any
	events chan event
	poke   chan struct{} // Reached: ask LUPrepare again
	closed bool          // main loop only: we closed the channel on purpose
	lu     *luState      // main loop only: a live update being prepared

	holdState // a group update's new instance, held until lu-commit (hold.go)

	done     chan struct{} // closed once the service stops
	stopOnce sync.Once
	stopErr  *StopError                // set before done is closed
	sigCause atomic.Pointer[StopError] // the cause while a Signal callback runs

	storeMu sync.Mutex
	stored  map[string]struct{} // the names of the fd store in rs
	// listeners are the names of the config's `listen` sockets
	// (LISTEN_FDNAMES): rs hands them with the fd store, but they are not
	// in it and do not count toward its cap.
	listeners map[string]struct{}
	// kept are sef's own copies of the fd store's and the listeners'
	// sockets, for Listen; they live as long as the process.
	kept map[string]*os.File
}

type event struct {
	m     msg.Message
	files []*os.File
	err   error     // the channel failed
	sig   os.Signal // a signal arrived
}

// Startup runs the init handshake with rs and calls the init callback.
// ctx bounds the wait for rs's init (a standby waits there until rs
// needs it). With no channel in the environment the service runs
// standalone: the fresh init callback runs, there are no pings and no
// updates, and SIGTERM or SIGINT stop it.
func Startup(ctx context.Context, cb Callbacks, opts ...Option) (*Service, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	s := &Service{
		cb:     cb,
		log:    o.log,
		work:   make(chan any, workQueue),
		events: make(chan event, 16),
		poke:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		stored: map[string]struct{}{},
		kept:   map[string]*os.File{},
	}
	s.startHold(false)
	if names := os.Getenv("LISTEN_FDNAMES"); names != "" {
		s.listeners = map[string]struct{}{}
		for _, n := range strings.Split(names, ":") {
			s.listeners[n] = struct{}{}
		}
	}
	conn := o.conn
	if conn == nil {
		var err error
		if conn, err = channelFromEnv(); err != nil {
			return nil, err
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go s.forwardSignals(sigs)
	if conn == nil {
		if err := s.callInit(Init{Type: InitFresh}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInit, err)
		}
		return s, nil
	}
	s.conn = conn
	// Hello tells rs that exec and runtime start-up are done; a live
	// update waits for it before it asks the old instance to prepare.
	preCopy := cb.LUBaseStart != nil && cb.LUBaseLoad != nil
	if err := conn.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion, PreCopy: preCopy}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	in, pre, err := s.receiveInit(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var initErr error
	if pre != nil {
		// After the init's result, whatever it was: the preload has ended
		// by then (waited for below).
		defer pre.restoreGC()
		if in.Type == InitLiveUpdate {
			// The base was loading while the old instance served; what
			// is left of it is short: the old one wrote it all before it
			// went quiescent. rs's init deadline bounds this wait.
			initErr = pre.wait(ctx.Done())
			if initErr == nil {
				in.State.Delta = pre.loaded
			} else {
				// No init runs: what it would have taken is closed here.
				for _, f := range in.State.FDs {
					f.Close()
				}
				for _, f := range in.FDs {
					f.Close()
				}
			}
		} else {
			pre.wait(closedChan)
		}
	}
	if initErr == nil {
		initErr = s.callInit(in)
	}
	if in.State != nil {
		in.State.mem.Close()
	}
	res := &msg.Message{Kind: msg.KindInitResult, Hold: s.held()}
	if initErr != nil {
		res.Err = initErr.Error()
	} else if in.Type == InitLiveUpdate {
		res.NotTaken = s.notTaken(in)
	}
	if err := conn.Send(res); err != nil {
		return nil, fmt.Errorf("send init result: %w", err)
	}
	if initErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrInit, initErr)
	}
	go s.readChannel()
	return s, nil
}

// channelFromEnv takes the channel rs gave this process, if any.
func channelFromEnv() (*msg.Conn, error) {
	conn, err := msg.FromEnv()
	if errors.Is(err, msg.ErrBadEnv) {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return conn, err
}

// receiveInit waits for the init. Before it, a live update's new
// instance may get lu-base, the pre-copy base stream: its load starts
// at once (pre) and goes on while the old instance serves.
func (s *Service) receiveInit(ctx context.Context) (in Init, pre *preload, err error) {
	in, pre, err = s.awaitInit(ctx)
	if err != nil && pre != nil {
		pre.wait(closedChan)
		pre.restoreGC()
		pre = nil
	}
	return in, pre, err
}

func (s *Service) awaitInit(ctx context.Context) (Init, *preload, error) {
	// Load the local time zone now, not at the first log line after init:
	// a standby that takes over would read /etc/localtime on its way.
	time.Now().Zone()
	// A standby waits here, exec'd and ready, until rs needs it. rs bounds
	// every init it starts, and if rs dies the channel closes and Recv
	// returns; ctx ends the wait too.
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Unix(1, 0)) })
	var pre *preload
	var m msg.Message
	var files []*os.File
	var err error
	for {
		m, files, err = s.conn.Recv()
		if err != nil || m.Kind != msg.KindLUBase {
			break
		}
		if pre != nil || s.cb.LUBaseLoad == nil {
			msg.CloseFiles(files)
			stop()
			return Init{}, pre, fmt.Errorf("%w: unexpected lu-base", ErrProtocol)
		}
		if pre, err = s.startPreload(files[0]); err != nil {
			stop()
			return Init{}, nil, err
		}
	}
	if !stop() && ctx.Err() != nil {
		msg.CloseFiles(files)
		return Init{}, pre, fmt.Errorf("receive init: %w", ctx.Err())
	}
	if err != nil {
		return Init{}, pre, fmt.Errorf("receive init: %w", err)
	}
	in, err := s.initFrom(m, files)
	return in, pre, err
}

func (s *Service) initFrom(m msg.Message, files []*os.File) (Init, error) {
	if m.Kind != msg.KindInit {
		msg.CloseFiles(files)
		return Init{}, fmt.Errorf("%w: first message is %s, want init", ErrProtocol, m.Kind)
	}
	if m.Version != msg.ProtocolVersion {
		msg.CloseFiles(files)
		err := fmt.Errorf("%w: protocol version %d, this sef speaks %d", ErrProtocol, m.Version, msg.ProtocolVersion)
		s.conn.Send(&msg.Message{Kind: msg.KindInitResult, Err: err.Error()})
		return Init{}, err
	}
	s.startHold(m.Hold)
	s.label = m.Label
	if m.Label != "" {
		s.log = s.log.With("label", m.Label)
	}
	in := Init{Type: InitType(m.InitType), Label: m.Label, Restarts: int(m.Restarts)}
	if len(files) > 0 {
		in.FDs = make(map[string]*os.File, len(files))
		for i, f := range files {
			in.FDs[m.Names[i]] = f
		}
	}
	if err := splitHandover(&in); err != nil {
		for _, f := range in.FDs {
			f.Close()
		}
		err = fmt.Errorf("%w: %w", ErrProtocol, err)
		s.conn.Send(&msg.Message{Kind: msg.KindInitResult, Err: err.Error()})
		return Init{}, err
	}
	if err := s.keep(&in); err != nil {
		s.conn.Send(&msg.Message{Kind: msg.KindInitResult, Err: err.Error()})
		return Init{}, err
	}
	return in, nil
}

// keep takes sef's own copy of every socket of the fd store and the
// listeners, for Listen: the ones Listen manages leave in.FDs, the
// others are duplicated for the callee.
func (s *Service) keep(in *Init) error {
	for name, f := range in.FDs {
		if _, ok := s.listeners[name]; !ok {
			s.stored[name] = struct{}{} // the fd store, as rs holds it
		}
		s.kept[name] = f
		if strings.HasPrefix(name, listenPrefix) {
			delete(in.FDs, name)
			continue
		}
		d, err := dupFile(f)
		if err != nil {
			for n, g := range in.FDs {
				if g != f {
					g.Close()
				}
				delete(in.FDs, n)
			}
			return fmt.Errorf("fd store %q: %w", name, err)
		}
		in.FDs[name] = d
	}
	return nil
}

func (s *Service) callInit(in Init) error {
	fn := s.cb.InitFresh
	switch in.Type {
	case InitRestart:
		if s.cb.InitRestart != nil {
			fn = s.cb.InitRestart
		}
	case InitLiveUpdate:
		if s.cb.InitLiveUpdate != nil {
			fn = s.cb.InitLiveUpdate
			break
		}
		fresh, restore := s.cb.InitFresh, s.cb.LUStateRestore
		fn = func(s *Service, in Init) error {
			if fresh != nil {
				if err := fresh(s, in); err != nil {
					return err
				}
			}
			if restore != nil {
				return restore(s, in)
			}
			return nil
		}
	}
	if fn == nil {
		return nil
	}
	return fn(s, in)
}

// notTaken says what a live update's init did not take, for rs to roll
// the update back rather than lose it: the old instance's state (bytes
// or fds) when no restore callback ran, the fd store when no init
// callback ran at all (the sockets Listen manages do not count: Listen
// takes them after Startup). Handed-over fds nobody took are closed, so
// that the connections they are do not hang open in a process that never
// reads them.
func (s *Service) notTaken(in Init) []string {
	var left []string
	restored := s.cb.InitLiveUpdate != nil || s.cb.LUStateRestore != nil
	if st := in.State; st != nil && !restored && (st.Size > 0 || len(st.FDs) > 0) {
		left = append(left, msg.NotTakenState)
		for _, f := range st.FDs {
			f.Close()
		}
	}
	if len(in.FDs) > 0 && !restored && s.cb.InitFresh == nil {
		left = append(left, msg.NotTakenFDs)
	}
	return left
}

// readChannel turns packets from rs into events for the main loop. It
// ends when the channel fails or closes, after reporting that.
func (s *Service) readChannel() {
	for {
		m, files, err := s.conn.Recv()
		if err == nil && s.onCommit(m, files) {
			continue
		}
		s.events <- event{m: m, files: files, err: err}
		if err != nil {
			return
		}
	}
}

func (s *Service) forwardSignals(sigs <-chan os.Signal) {
	for sig := range sigs {
		s.events <- event{sig: sig}
	}
}

// Post hands a work item to the main loop; Receive returns it. It blocks
// while the queue is full, until ctx ends (ctx.Err()) or the service
// stops (a *StopError: errors.Is(err, ErrStopped)).
func (s *Service) Post(ctx context.Context, work any) error {
	select {
	case <-s.done:
		return s.stopErr
	default:
	}
	select {
	case s.work <- work:
		return nil
	case <-s.done:
		return s.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Receive is the service's one receive point: it returns the next posted
// work item and handles system events (pings, stop, signals, a live
// update's steps) in between. Call it only from the main loop; a main
// loop that stops calling it stops answering pings. After a stop it
// returns a *StopError (errors.Is(err, ErrStopped)); when ctx ends,
// ctx.Err().
func (s *Service) Receive(ctx context.Context) (any, error) {
	for {
		select {
		case <-s.done:
			return nil, s.stopErr
		default:
		}
		if s.held() {
			// Held until the group's commit: events only, no work.
			select {
			case ev := <-s.events:
				s.handle(ev)
			case <-s.done:
			case <-s.committed:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		if s.lu != nil && !s.lu.ready && s.luTry() {
			// A pre-copy step may run again at once: take what is
			// there, without waiting, and come back for the next step.
			select {
			case ev := <-s.events:
				s.handle(ev)
			case <-s.poke:
			case <-ctx.Done():
				return nil, ctx.Err()
			case w := <-s.work:
				return w, nil
			default:
			}
			continue
		}
		if s.lu != nil && s.lu.ready {
			// Quiescent: the state has been handed over. Only rs's
			// verdict (stop on commit, lu-cancel on rollback) and signals
			// are handled; work waits.
			select {
			case ev := <-s.events:
				s.handle(ev)
			case <-s.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-s.done:
		case <-s.poke: // Reached: back to the top, where LUPrepare is asked
		case <-ctx.Done():
			return nil, ctx.Err()
		case w := <-s.work:
			return w, nil
		}
	}
}

// Reached tells sef that the live-update state being prepared may have
// been reached: the main loop asks LUPrepare again at once, instead of
// at its next wake-up (with pings off, that could be never). Call it
// from any goroutine whenever something LUPrepare checks changes
// outside the main loop (a connection goroutine parked, say). Outside
// an update it does nothing.
func (s *Service) Reached() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Stop makes Receive and Post return ErrStopped (cause CauseStop, or the
// signal's when called from the Signal callback). Safe from any
// goroutine.
func (s *Service) Stop() {
	if e := s.sigCause.Load(); e != nil {
		s.stop(e)
		return
	}
	s.stop(&StopError{Cause: CauseStop})
}

// Done is closed once the service stops; Err says why then.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err is nil while the service runs, then the *StopError that says why
// it stopped.
func (s *Service) Err() error {
	select {
	case <-s.done:
		return s.stopErr
	default:
		return nil
	}
}

func (s *Service) stop(e *StopError) {
	s.stopOnce.Do(func() {
		s.stopErr = e
		close(s.done)
	})
}

func (s *Service) handle(ev event) {
	switch {
	case ev.sig != nil:
		s.signal(ev.sig, &StopError{Cause: CauseSignal, Signal: ev.sig})
	case ev.err != nil:
		if s.closed {
			return // fault injection closed it; carry on unsupervised
		}
		// rs is gone or broke the channel: a service never runs
		// unsupervised, so stop.
		s.log.Warn("channel to rs lost; stopping", "err", ev.err)
		s.stop(&StopError{Cause: CauseChannelLost, Err: ev.err})
	default:
		s.handleMessage(ev.m, ev.files)
	}
}

// signal delivers sig to the Signal callback, or does the default; cause
// is what a stop it leads to says.
func (s *Service) signal(sig os.Signal, cause *StopError) {
	if s.cb.Signal != nil {
		s.sigCause.Store(cause)
		defer s.sigCause.Store(nil)
		s.cb.Signal(s, sig)
		return
	}
	if sig == syscall.SIGTERM || sig == syscall.SIGINT {
		s.stop(cause)
	}
}

func (s *Service) handleMessage(m msg.Message, files []*os.File) {
	// rs sends fds only with init, and lu-prepare's base pipe
	defer func() { msg.CloseFiles(files) }()
	switch m.Kind {
	case msg.KindPing:
		if s.cb.Ping != nil {
			if err := s.cb.Ping(s); err != nil {
				s.log.Warn("ping left unanswered", "err", err)
				return
			}
		}
		s.send(&msg.Message{Kind: msg.KindPong, Seq: m.Seq})
	case msg.KindStop:
		s.signal(syscall.SIGTERM, &StopError{Cause: CauseRS})
	case msg.KindLUPrepare:
		var base *os.File
		if len(files) == 1 { // msg checked its name
			base = files[0]
			files = nil
		}
		s.luPrepare(m, base)
	case msg.KindLUCancel:
		s.luEnd("cancelled by rs")
	default:
		s.log.Warn("unexpected message from rs", "kind", m.Kind)
	}
}

func (s *Service) send(m *msg.Message) {
	if s.closed {
		return
	}
	if err := s.conn.Send(m); err != nil {
		s.log.Warn("send to rs failed", "kind", m.Kind, "err", err)
	}
}

// Standalone tells whether the service runs without rs.
func (s *Service) Standalone() bool { return s.conn == nil }

// Label is the service's label in rs ("" when standalone).
func (s *Service) Label() string { return s.label }

// Logger is the logger sef logs through, with the label.
func (s *Service) Logger() *slog.Logger { return s.log }

func (s *Service) debugGarbage() error {
	if s.conn == nil {
		return nil
	}
	return s.conn.SendRaw([]byte{0xc1, 0xff, 0x00}, nil, false)
}

func (s *Service) debugCloseChannel() error {
	if s.conn == nil {
		return nil
	}
	s.closed = true
	return s.conn.Close()
}
