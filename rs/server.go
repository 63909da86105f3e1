package rs

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/logs"
)

// Options configure a Server. Zero fields mean defaults.
type Options struct {
	Logger *slog.Logger
	Clock  Clock
	// Env is the environment every service starts with (default: rs's).
	Env []string
	// LogDir is where services with log = "file" write <label>.log
	// (package logs); "": nowhere, their output goes to rs's own stdout
	// and stderr as with log = "inherit".
	LogDir string
	// LogBusy, if not nil, is called from the log writer's goroutine with
	// true when a service's output floods and false once it is quiet
	// again (logs.New).
	LogBusy func(busy bool)
	// Reopen, if not nil, is called when the operator asks for log files
	// to be reopened (ReopenLogs: SIGUSR1, `service logs --reopen`), for
	// rs's own log file; it must not block.
	Reopen func()
	// ConfigFile is the config file rs was started with, which `service
	// reload` and SIGHUP read again (reload.go); "": none.
	ConfigFile string
	// Args are rs's arguments after argv[0], for the exec of
	// update-self; Carry, fds of rs's own that cross that exec (the
	// control socket, the metrics listener) by name; FlushLog, if set,
	// writes out rs's own log before it.
	Args     []string
	Carry    map[string]int
	FlushLog func()
	// ExecEnv is the environment the exec of update-self gets (default:
	// rs's now): rs's own as it started, with what cmd/rs took out of
	// it for itself (systemd's NOTIFY_SOCKET, say).
	ExecEnv []string
}

// Server is rs: the service table and the loop that owns it. Everything
// that changes the table (a process started or reaped, a packet, a timer,
// a command) is an event on one channel, handled by Run's loop, which
// never blocks: processes start and fds close in goroutines of their own.
type Server struct {
	log    *slog.Logger
	clock  Clock
	env    []string
	logDir string
	reopen func() // Options.Reopen
	config string // Options.ConfigFile
	events chan event
	done   chan struct{} // closed when Run returns: senders give up

	started time.Time
	mux     *msg.Mux // reads every channel, from Run on
	muxErr  error    // why there is no mux: every spawn fails with it
	logs    *logs.Writer
	logsErr error // why there is no log writer

	unknownEvents atomic.Int64 // events the loop had no case for (a bug)
	closing       atomic.Int64 // service fds being closed off the loop
	watching      atomic.Int64 // len(watchers), for status

	// drivers are the goroutines of drivers: the simple driver's
	// (simpledriver.go), the notify driver's socket reader and its
	// MAINPID watcher (notifydriver.go).
	drivers sync.WaitGroup
	// hookWG: the goroutines of hooks (hooks.go); hooksRunning, owned by
	// the loop, those it has not heard the end of.
	hookWG       sync.WaitGroup
	hooksRunning int

	// Owned by the loop.
	services     map[string]*service
	order        []string // labels in the order they were added
	live         map[*instance]struct{}
	timerGen     uint64
	shutdown     *shutdownState
	stopsPending bool // some service is to be stopped once its dependents are
	downsPending int  // services with a `down` to answer
	pingGroups   map[time.Duration]*pingGroup
	removing     map[*service]*removal // services being removed (remove.go)

	notifyDir string // where notify services' sockets are made

	// update-self (selfupdate.go): the binary rs runs (exe, an fd of it
	// for a rollback), what crosses the exec, a freeze under way (the
	// loop's), freezes asked for, and what came of the last one here.
	exe         *os.File
	exePath     string
	args        []string
	execEnv     []string
	carry       map[string]int
	flushLog    func()
	self        *selfState
	selfGen     atomic.Uint64
	selfOutcome *selfOutcome
	reexecing   atomic.Bool // a re-exec after a panic is under way (panic.go)

	watchers map[*Watcher]struct{} // of lifecycle events (observe.go)
	unclean  []string              // services that did not stop cleanly at the shutdown (exitstatus.go)
}

type shutdownState struct {
	replies []chan<- control.Reply
}

// New returns a Server; Run starts it.
func New(opts Options) *Server {
	s := &Server{
		log:        opts.Logger,
		clock:      opts.Clock,
		env:        opts.Env,
		logDir:     opts.LogDir,
		reopen:     opts.Reopen,
		config:     opts.ConfigFile,
		removing:   map[*service]*removal{},
		notifyDir:  control.RuntimeDir(),
		events:     make(chan event, 256),
		done:       make(chan struct{}),
		services:   make(map[string]*service),
		live:       make(map[*instance]struct{}),
		started:    time.Now(),
		pingGroups: map[time.Duration]*pingGroup{},
		watchers:   map[*Watcher]struct{}{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.args, s.carry, s.flushLog, s.execEnv = opts.Args, opts.Carry, opts.FlushLog, opts.ExecEnv
	if p, err := os.Executable(); err == nil {
		s.exePath = p
	}
	// The binary rs runs now, even once a new one is put at its path:
	// what an update-self rolls back to.
	if f, err := os.Open("/proc/self/exe"); err == nil {
		s.exe = f
	}
	s.mux, s.muxErr = msg.NewMux()
	var err error
	if s.logs, err = logs.New(opts.LogDir, s.log, opts.LogBusy); err != nil {
		s.logsErr = err // no /dev/null, epoll or eventfd: every spawn fails with it
		s.log.Error("no log writer: no service can start", "err", err)
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.env == nil {
		s.env = os.Environ()
	}
	return s
}

// post hands an event to the loop; after Run returned it is dropped.
func (s *Server) post(ev event) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

// Start adds the configured services and starts them in dependency order.
// It returns at once; the services start as the loop runs.
func (s *Server) Start(specs []Spec) { s.post(evStart{specs}) }

// Shutdown stops every service (dependents first) and makes Run return.
// It waits until that is done.
func (s *Server) Shutdown() {
	reply := make(chan control.Reply, 1)
	s.post(evShutdown{reply})
	select {
	case <-reply:
	case <-s.done:
	}
}

// Do runs one control request; progress lines go to prog (may be nil).
func (s *Server) Do(req control.Request, prog chan<- string) control.Reply {
	return s.Handle(req, control.Peer{}, func(p string) {
		if prog != nil {
			prog <- p
		}
	})
}

// ReopenLogs closes every service's log file, to be opened again at its
// next line (SIGUSR1, for an external logrotate). It never waits.
func (s *Server) ReopenLogs() {
	if s.reopen != nil {
		s.reopen()
	}
	if s.logs != nil {
		s.logs.Reopen()
	}
}

// Done is closed when Run has returned.
func (s *Server) Done() <-chan struct{} { return s.done }

// Run is the loop that owns the table. It returns after a shutdown, once
// every instance is gone and every hook has ended.
func (s *Server) Run() {
	// Last: every instance is gone, so every driver's goroutine is
	// ending; one blocked posting to the loop ends with done.
	defer s.drivers.Wait()
	defer s.hookWG.Wait() // each posted its end: it is ending
	defer close(s.done)
	defer bgWG.Wait() // the notify sockets are removed
	if s.logs != nil {
		// After the last instance: what the pipes hold is written out.
		defer s.logs.Close(2 * time.Second)
	}
	if s.mux != nil {
		go s.mux.Run(s.deliver)
		defer s.mux.Close()
	}
	defer s.unwatchAll() // after the last event: "rs-stopped" is in every channel
	for ev := range s.events {
		s.handleSafe(ev)
		if s.shutdown != nil && len(s.live) == 0 && s.hooksRunning == 0 {
			for _, svc := range s.services {
				s.dropFDStore(svc)
			}
			for _, r := range s.shutdown.replies {
				answer(r, control.Reply{Message: "rs stopped"})
			}
			s.emit(control.Event{Event: EventRSStopped})
			return
		}
	}
}

// handleSafe is handle with a panic (a bug in rs) caught: the services
// must not die of it (they would, by PDEATHSIG, with rs). It is logged
// with its stack and rs re-execs itself with its table (panic.go).
func (s *Server) handleSafe(ev event) {
	defer func() {
		if r := recover(); r != nil {
			s.panicked(r, ev)
		}
	}()
	s.handle(ev)
}

// handle is the loop's one switch.
func (s *Server) handle(ev event) {
	switch ev := ev.(type) {
	case evStart:
		s.addConfigured(ev.specs)
	case evRequest:
		s.request(ev)
	case evReload:
		s.reload(ev)
	case evLogTargets:
		s.logTargets(ev)
	case evShutdown:
		s.beginShutdown(ev.reply)
	case evSpawned:
		s.onSpawned(ev)
	case evReaped:
		s.onReaped(ev.inst, ev.exit)
	case evSignal:
		s.onDriverSignal(ev)
	case evPackets:
		s.onPackets(ev)
	case evNotify:
		s.onNotify(ev)
	case evMainExited:
		s.onMainExited(ev)
	case evTimer:
		if fired(ev) {
			s.timer(ev)
		}
	case evWatch:
		s.watch(ev)
	case evUnwatch:
		s.unwatch(ev.w)
	case evHookDone:
		s.hookDone(ev.svc)
	case evProbe:
		ev.f()
		close(ev.done)
	case evSelf:
		s.selfEvent(ev)
	case evSelfPaused:
		s.selfPaused(ev)
	case evAdopted:
		s.adopted()
	default:
		s.unknownEvents.Add(1)
		s.log.Error("unknown event: a bug in rs", "type", fmt.Sprintf("%T", ev))
	}
}

// timer dispatches a timer that fired to its owner.
func (s *Server) timer(ev evTimer) {
	switch o := ev.owner.(type) {
	case *instance:
		s.instanceTimer(o, ev.kind)
	case *service:
		s.serviceTimer(o, ev.kind)
	case *update:
		s.updateTimer(o)
	case *pingGroup:
		s.pingTick(o)
	default:
		s.unknownEvents.Add(1)
		s.log.Error("timer of an unknown owner: a bug in rs", "type", fmt.Sprintf("%T", o))
	}
}

// deliver posts one pass of the Mux to the loop. It runs on the Mux's
// goroutine, which is also where the end of a channel is looked up in
// /proc (is the process exiting?), so that the loop does not read it.
func (s *Server) deliver(batch []msg.Delivery) {
	evs := make(evPackets, len(batch))
	for i, d := range batch {
		drv := d.Key.(*sefDriver)
		evs[i] = packet{drv: drv, m: d.Msg, files: d.Files, err: d.Err, at: d.At}
		if d.Err != nil && isEOF(d.Err) {
			evs[i].exiting = drv.proc.Exiting()
		}
	}
	s.post(evs)
}
