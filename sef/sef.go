package sef

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reincarnation/rs/msg"
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
	// FDs is the fd store as this service filled it before (name → file).
	// The callee owns the files. Empty on a first start.
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
	// which arrives as SIGTERM. Default: SIGTERM and SIGINT call s.Stop,
	// others are ignored.
	Signal func(s *Service, sig os.Signal)

	// Live update (see the package doc for the sequence).
	//
	// LUStateIsValid says whether the service supports preparing for a
	// state. Default: the standard states 1 to 3.
	LUStateIsValid func(s *Service, state int) bool
	// LUStateChanged is told when the update state changes (0: none).
	LUStateChanged func(s *Service, old, state int)
	// LUPrepare is asked before each receive while preparing whether the
	// state is reached. Default: always (work-free holds at the top of the
	// receive loop, where it is asked).
	LUPrepare func(s *Service, state int) bool
	// LUStateDump is called when preparing starts, for debugging.
	LUStateDump func(s *Service, state int)
	// LUReadyPre may veto the update just before the state is saved: a
	// non-nil error refuses it and the service carries on.
	LUReadyPre func(s *Service, result error) error
	// LUStateSave writes the state for the new version. Default: nothing.
	LUStateSave func(s *Service, w *StateWriter) error
}

// Errors of this package.
var (
	// ErrStopped: the service was asked to stop. Receive returns it from
	// then on; the service should clean up and exit 0.
	ErrStopped = errors.New("stopped")
	// ErrProtocol: rs sent something this sef does not understand.
	ErrProtocol = errors.New("protocol error")
	// ErrInit: the init callback failed; rs has been told why.
	ErrInit = errors.New("init failed")
)

// workQueue is how much posted work may wait for the main loop before
// Post blocks.
const workQueue = 1024

// Service is this process's side of the rs channel. Receive belongs to the
// main loop; Post, StoreFD and Stop may be called from any goroutine.
type Service struct {
	cb       Callbacks
	conn     *msg.Conn // nil when standalone
	label    string
	log      *slog.Logger
	work     chan any
	events   chan event
	stopping bool     // main loop only
	closed   bool     // main loop only: we closed the channel on purpose
	lu       *luState // main loop only: a live update being prepared
	stopReq  chan struct{}

	storeMu sync.Mutex
	stored  map[string]struct{} // the names of the fd store in rs
	// listeners are the names of the config's `listen` sockets
	// (LISTEN_FDNAMES): rs hands them with the fd store, but they are not
	// in it and do not count toward its cap.
	listeners map[string]struct{}
}

type event struct {
	m     msg.Message
	files []*os.File
	err   error     // the channel failed
	sig   os.Signal // a signal arrived
}

// Startup runs the init handshake with rs and calls the init callback.
// With no channel in the environment the service runs standalone: the
// fresh init callback runs, there are no pings and no updates, and SIGTERM
// or SIGINT stop it.
func Startup(cb Callbacks) (*Service, error) {
	s := &Service{
		cb:      cb,
		work:    make(chan any, workQueue),
		events:  make(chan event, 16),
		stopReq: make(chan struct{}, 1),
		stored:  map[string]struct{}{},
	}
	if names := os.Getenv("LISTEN_FDNAMES"); names != "" {
		s.listeners = map[string]struct{}{}
		for _, n := range strings.Split(names, ":") {
			s.listeners[n] = struct{}{}
		}
	}
	conn, err := channelFromEnv()
	if err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go s.forwardSignals(sigs)
	if conn == nil {
		s.log = slog.Default()
		if err := s.callInit(Init{Type: InitFresh}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInit, err)
		}
		return s, nil
	}
	s.conn = conn
	// Hello tells rs that exec and runtime start-up are done; a live
	// update waits for it before it asks the old instance to prepare.
	if err := conn.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	in, err := s.receiveInit()
	if err != nil {
		conn.Close()
		return nil, err
	}
	initErr := s.callInit(in)
	if in.State != nil {
		in.State.mem.Close()
	}
	res := &msg.Message{Kind: msg.KindInitResult}
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

func (s *Service) receiveInit() (Init, error) {
	// Load the local time zone now, not at the first log line after init:
	// a standby that takes over would read /etc/localtime on its way.
	time.Now().Zone()
	// No deadline: a standby waits here, exec'd and ready, until rs needs
	// it. rs bounds every init it starts, and if rs dies the channel
	// closes and Recv returns.
	m, files, err := s.conn.Recv()
	if err != nil {
		return Init{}, fmt.Errorf("receive init: %w", err)
	}
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
	s.label = m.Label
	s.log = slog.Default().With("label", m.Label)
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
	for name := range in.FDs { // the fd store, as rs holds it
		if _, ok := s.listeners[name]; !ok {
			s.stored[name] = struct{}{}
		}
	}
	return in, nil
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
// callback ran at all. Handed-over fds nobody took are closed, so that
// the connections they are do not hang open in a process that never
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
// while the queue is full.
func (s *Service) Post(work any) { s.work <- work }

// Receive is the service's one receive point: it returns the next posted
// work item and handles system events (pings, stop, signals) in between.
// Call it only from the main loop; a main loop that stops calling it stops
// answering pings. After a stop it returns ErrStopped.
func (s *Service) Receive() (any, error) {
	for {
		select {
		case <-s.stopReq:
			s.stopping = true
		default:
		}
		if s.stopping {
			return nil, ErrStopped
		}
		if s.lu != nil && !s.lu.ready {
			s.luTry()
		}
		if s.lu != nil && s.lu.ready {
			// Quiescent: the state has been handed over. Only rs's
			// verdict (stop on commit, lu-cancel on rollback) and signals
			// are handled; work waits.
			select {
			case ev := <-s.events:
				s.handle(ev)
			case <-s.stopReq:
				s.stopping = true
			}
			continue
		}
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-s.stopReq:
			s.stopping = true
		case w := <-s.work:
			return w, nil
		}
	}
}

// Stop makes Receive return ErrStopped. Safe from any goroutine.
func (s *Service) Stop() {
	select {
	case s.stopReq <- struct{}{}:
	default:
	}
}

func (s *Service) handle(ev event) {
	switch {
	case ev.sig != nil:
		s.signal(ev.sig)
	case ev.err != nil:
		if s.closed {
			return // fault injection closed it; carry on unsupervised
		}
		// rs is gone or broke the channel: a service never runs
		// unsupervised, so stop.
		s.log.Warn("channel to rs lost; stopping", "err", ev.err)
		s.stopping = true
	default:
		s.handleMessage(ev.m, ev.files)
	}
}

func (s *Service) signal(sig os.Signal) {
	if s.cb.Signal != nil {
		s.cb.Signal(s, sig)
		return
	}
	if sig == syscall.SIGTERM || sig == syscall.SIGINT {
		s.stopping = true
	}
}

func (s *Service) handleMessage(m msg.Message, files []*os.File) {
	msg.CloseFiles(files) // rs sends fds only with init
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
		s.signal(syscall.SIGTERM)
	case msg.KindLUPrepare:
		s.luPrepare(m)
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

// StoreFD hands rs a copy of f to keep in this service's fd store under
// name. rs gives it back in Init.FDs on every restart, so a listening
// socket stays open, with its backlog, while the service is reincarnated.
// The caller keeps f. Standalone, it does nothing.
// rs keeps at most msg.MaxStoredFDs names per service and takes one
// more for a fault; StoreFD refuses it instead.
func (s *Service) StoreFD(name string, f *os.File) error {
	if s.conn == nil {
		return nil
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if _, ok := s.stored[name]; !ok && len(s.stored) >= msg.MaxStoredFDs {
		return fmt.Errorf("store fd %q: the fd store is full (%d fds)", name, msg.MaxStoredFDs)
	}
	if err := s.conn.Send(&msg.Message{Kind: msg.KindFDStore, Names: []string{name}}, f); err != nil {
		return fmt.Errorf("store fd %q: %w", name, err)
	}
	s.stored[name] = struct{}{}
	return nil
}

// handedFDs is how many fds rs hands with an init: the fd store's and
// the listeners.
func (s *Service) handedFDs() int {
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	return len(s.stored) + len(s.listeners)
}

// Standalone tells whether the service runs without rs.
func (s *Service) Standalone() bool { return s.conn == nil }

// Label is the service's label in rs ("" when standalone).
func (s *Service) Label() string { return s.label }

// DebugGarbage sends rs a malformed packet, for fault injection: rs must
// treat the service as faulty and reincarnate it.
func (s *Service) DebugGarbage() error {
	if s.conn == nil {
		return nil
	}
	return s.conn.SendRaw([]byte{0xc1, 0xff, 0x00}, nil, false)
}

// DebugCloseChannel closes the channel to rs, for fault injection. Call it
// from the main loop. The service carries on; rs reincarnates it.
func (s *Service) DebugCloseChannel() error {
	if s.conn == nil {
		return nil
	}
	s.closed = true
	return s.conn.Close()
}
