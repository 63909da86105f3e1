package rs

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"syscall"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// Options configure a Server. Zero fields mean defaults.
type Options struct {
	Logger *slog.Logger
	Clock  Clock
	// Env is the environment every service starts with (default: rs's).
	Env []string
}

// Server is rs: the service table and the loop that owns it. Everything
// that changes the table (a child exited, a packet arrived, a timer fired,
// a command came in) is an event on one channel, handled by Run's loop.
type Server struct {
	log    *slog.Logger
	clock  Clock
	env    []string
	events chan any
	done   chan struct{} // closed when Run returns: senders give up

	started time.Time

	// Owned by the loop.
	services   map[string]*service
	order      []string // labels in the order they were added
	nextID     uint64
	shutdown   *shutdownState
	pingGroups map[time.Duration]*pingGroup
	mux        *msg.Mux // reads every instance's channel, from Run on
	muxErr     error    // why there is no mux: every spawn fails with it
}

// service is one row of the table, living across instances.
type service struct {
	spec     Spec
	state    string
	inst     *instance // the current instance, if any
	restarts int
	lastExit string
	rtt      time.Duration
	started  bool // an instance has reached running once (else: fresh init)
	fails    int  // consecutive failures, for backoff
	history  []time.Time
	backoff  Timer
	waitDeps bool // start as soon as its dependencies run
	fdstore  map[string]*os.File
	update   *update // a live update in progress

	standby      *instance              // a warm standby, exec'd and waiting for init
	wantStandby  bool                   // config standby = true, or `service clone`
	standbyTimer Timer                  // respawn of a standby that died
	upWaiters    []chan<- control.Reply // replied when an instance runs or fails to start
	onStopped    []func()               // run when the current instance has exited
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
		events:     make(chan any, 256),
		done:       make(chan struct{}),
		services:   make(map[string]*service),
		started:    time.Now(),
		pingGroups: map[time.Duration]*pingGroup{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.mux, s.muxErr = msg.NewMux()
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.env == nil {
		s.env = os.Environ()
	}
	return s
}

// post hands an event to the loop; after Run returned it is dropped.
func (s *Server) post(ev any) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

// Events of the loop.
type (
	evRequest struct {
		req   control.Request
		reply chan<- control.Reply // final reply; progress goes to progress
		prog  chan<- string
	}
	evMessages []evMessage // one pass of the Mux
	evMessage  struct {
		inst  *instance
		m     msg.Message
		files []*os.File
		err   error
		at    time.Time // when it was read
	}
	evExit struct {
		inst *instance
		exit proc.Exit
	}
	evTimer struct {
		inst *instance // nil for service timers
		svc  *service
		kind timerKind
		seq  uint64
	}
	evStart struct{ specs []Spec }
	// evFunc runs inside the loop; tests use it to look at the table.
	evFunc func()
	evStop struct{ reply chan<- control.Reply }
)

type timerKind int

const (
	// An instance's timers, one slot each in instance.timers.
	timerPingDeadline timerKind = iota
	timerInit
	timerEOF
	instanceTimers
	// A service's timer.
	timerBackoff = instanceTimers
)

// Start adds the configured services and starts them in dependency order.
// It returns at once; the services start as the loop runs.
func (s *Server) Start(specs []Spec) { s.post(evStart{specs}) }

// Shutdown stops every service (dependents first) and makes Run return.
// It waits until that is done.
func (s *Server) Shutdown() {
	reply := make(chan control.Reply, 1)
	s.post(evStop{reply})
	select {
	case <-reply:
	case <-s.done:
	}
}

// Do runs one control request; progress lines go to prog (may be nil).
func (s *Server) Do(req control.Request, prog chan<- string) control.Reply {
	reply := make(chan control.Reply, 1)
	s.post(evRequest{req: req, reply: reply, prog: prog})
	select {
	case r := <-reply:
		return r
	case <-s.done:
		return control.Reply{Err: control.ErrShutdown.Error(), Done: true}
	}
}

// Done is closed when Run has returned.
func (s *Server) Done() <-chan struct{} { return s.done }

// Run is the loop that owns the table. It returns after a shutdown, when
// every service has stopped.
func (s *Server) Run() {
	defer close(s.done)
	if s.mux != nil {
		go s.mux.Run(s.deliver)
		defer s.mux.Close()
	}
	for ev := range s.events {
		switch ev := ev.(type) {
		case evStart:
			s.addConfigured(ev.specs)
		case evRequest:
			s.request(ev)
		case evMessages:
			for _, m := range ev {
				s.message(m)
			}
		case evExit:
			s.exited(ev.inst, ev.exit)
		case evTimer:
			s.timer(ev)
		case evStop:
			s.beginShutdown(ev.reply)
		case evUpdateTimer:
			s.updateTimer(ev)
		case evFunc:
			ev()
		case evPingTick:
			s.pingTick(ev)
		}
		if s.shutdown != nil && s.shutdownStep() {
			for _, r := range s.shutdown.replies {
				r <- control.Reply{Done: true, Message: "rs stopped"}
			}
			return
		}
	}
}

func (s *Server) addConfigured(specs []Spec) {
	for _, spec := range specs {
		if _, ok := s.services[spec.Label]; ok {
			s.log.Error("duplicate service ignored", "label", spec.Label)
			continue
		}
		svc := s.add(spec)
		svc.waitDeps = true
		svc.state = control.StateStarting // pid 0 until its turn and its dependencies come
	}
	s.startWaiting()
}

func (s *Server) add(spec Spec) *service {
	svc := &service{spec: spec.withDefaults(), state: control.StateDown, fdstore: map[string]*os.File{}, wantStandby: spec.Standby}
	s.services[spec.Label] = svc
	s.order = append(s.order, spec.Label)
	return svc
}

// maxStarting bounds how many configured services start at once at boot:
// a thousand Go binaries exec'd together would starve each other past
// their init deadlines.
var maxStarting = 4 * runtime.NumCPU()

// startWaiting starts every service waiting for its dependencies whose
// dependencies all run, a few at a time.
func (s *Server) startWaiting() {
	if s.shutdown != nil {
		return
	}
	starting := 0
	for _, svc := range s.services {
		if svc.inst != nil && !svc.inst.running {
			starting++
		}
	}
	for _, label := range s.order {
		if starting >= maxStarting {
			return
		}
		svc := s.services[label]
		if !svc.waitDeps {
			continue
		}
		if dep := s.missingDep(svc); dep != "" {
			svc.lastExit = "waiting for " + dep
			continue
		}
		svc.waitDeps = false
		svc.lastExit = ""
		s.spawn(svc)
		starting++
	}
}

// missingDep names the first dependency of svc that is not running.
func (s *Server) missingDep(svc *service) string {
	for _, d := range svc.spec.Depends {
		if dep, ok := s.services[d]; !ok || dep.state != control.StateRunning {
			return d
		}
	}
	return ""
}

// spawn starts a new instance of svc. A failure to even start the binary
// counts as a failed start.
func (s *Server) spawn(svc *service) {
	typ := msg.InitFresh
	if svc.started {
		typ = msg.InitRestart
	}
	if typ == msg.InitRestart && s.promoteStandby(svc) {
		return
	}
	s.nextID++
	inst, err := startInstance(s, svc, s.nextID, typ)
	if err != nil {
		s.log.Error("start failed", "label", svc.spec.Label, "err", err)
		svc.lastExit = "start: " + err.Error()
		s.startFailed(svc)
		return
	}
	svc.inst = inst
	svc.state = control.StateStarting
	s.log.Info("spawned", "label", svc.spec.Label, "pid", inst.proc.Pid(), "init", typ)
}

// startFailed handles an instance that never reached running (or could
// not be started). A service that never ran is `failed` at once: retrying
// a binary that cannot start hides the error. Otherwise it is a crash.
func (s *Server) startFailed(svc *service) {
	s.replyUp(svc, control.Reply{Err: fmt.Sprintf("%s: %s", svc.spec.Label, svc.lastExit)})
	if !svc.started {
		svc.state = control.StateFailed
		return
	}
	s.crashed(svc, 0)
}

// replyUp answers everyone waiting for the service to come up.
func (s *Server) replyUp(svc *service, r control.Reply) {
	r.Done = true
	for _, w := range svc.upWaiters {
		w <- r
	}
	svc.upWaiters = nil
}

// crashed decides what comes after an instance that ended on its own
// (ran for `ran`): a restart now, a restart later, or `failed`.
func (s *Server) crashed(svc *service, ran time.Duration) {
	label := svc.spec.Label
	now := s.clock.Now()
	fails, failed := s.restartVerdict(svc, ran)
	svc.fails = fails
	if failed {
		svc.state = control.StateFailed
		s.log.Error("failed: too many restarts", "label", label,
			"restarts", len(svc.history), "window", svc.spec.RestartWindow, "last_exit", svc.lastExit)
		return
	}
	svc.history = append(svc.history, now)
	delay := backoffDelay(svc.spec, fails)
	if delay == 0 {
		s.reincarnate(svc)
		return
	}
	svc.state = control.StateBackoff
	s.log.Info("backoff", "label", label, "delay", delay)
	svc.backoff = s.clock.AfterFunc(delay, func() {
		s.post(evTimer{svc: svc, kind: timerBackoff})
	})
}

// restartVerdict says what a crash after ran of running does to svc: the
// count of consecutive failures it makes, and whether the rate limit
// fails the service. It drops restarts older than the window from the
// history and changes nothing else.
func (s *Server) restartVerdict(svc *service, ran time.Duration) (fails int, failed bool) {
	fails = svc.fails
	if ran >= svc.spec.BackoffReset {
		fails = 0
	}
	fails++
	cut := s.clock.Now().Add(-svc.spec.RestartWindow)
	kept := svc.history[:0]
	for _, t := range svc.history {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	svc.history = kept
	return fails, svc.spec.MaxRestarts >= 0 && len(svc.history) >= svc.spec.MaxRestarts
}

// backoffDelay: the first restart is immediate, then base doubling to cap.
func backoffDelay(spec Spec, fails int) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := spec.BackoffBase
	for i := 2; i < fails && d < spec.BackoffCap; i++ {
		d *= 2
	}
	return min(d, spec.BackoffCap)
}

func (s *Server) reincarnate(svc *service) {
	svc.restarts++
	s.spawn(svc) // first: a standby's init goes out before the log line
	s.log.Info("reincarnating", "label", svc.spec.Label, "reason", svc.lastExit, "restarts", svc.restarts)
}

// exited handles the end of an instance's process.
func (s *Server) exited(inst *instance, exit proc.Exit) {
	svc := inst.svc
	inst.close()
	reason := inst.fault
	if reason == "" {
		reason = exitReason(svc.spec, exit)
	}
	if u := svc.update; u != nil && u.new == inst {
		s.rollback(u, "new instance "+reason)
		return
	}
	if inst == svc.standby || inst.standby {
		if svc.standby == inst {
			s.standbyExited(svc, inst, reason)
		}
		return
	}
	if inst.replaced {
		// Its standby took over when its channel closed (takeOverEarly);
		// the exit only says why it died.
		svc.lastExit = reason
		s.log.Warn("exited", "label", svc.spec.Label, "pid", inst.proc.Pid(), "reason", reason, "cpu", exit.CPU, "replaced", true)
		return
	}
	if svc.inst != inst {
		return // an old instance (replaced already) has been reaped
	}
	if u := svc.update; u != nil {
		// The old instance died mid-update: the update is void, and the
		// death is handled as any crash.
		s.rollback(u, "old instance "+reason)
	}
	svc.inst = nil
	svc.rtt = 0
	label := svc.spec.Label
	if cont := svc.onStopped; len(cont) > 0 || inst.stopping {
		// A stop we asked for (down, restart, shutdown) ended.
		svc.onStopped = nil
		if svc.state == control.StateStopping {
			svc.state = control.StateDown
		}
		s.log.Info("stopped", "label", label, "exit", exit.String())
		for _, f := range cont {
			f()
		}
		return
	}
	svc.lastExit = reason
	s.log.Warn("exited", "label", label, "pid", inst.proc.Pid(), "reason", reason, "cpu", exit.CPU)
	if !inst.running {
		s.startFailed(svc)
		s.startWaiting() // its start slot is free
		return
	}
	switch {
	case svc.spec.Restart == RestartNever,
		svc.spec.Restart == RestartOnFailure && inst.fault == "" && exit.Success():
		svc.state = control.StateDown
		return
	case s.shutdown != nil:
		svc.state = control.StateDown
		return
	}
	s.crashed(svc, s.clock.Now().Sub(inst.runningSince))
}

// exitReason says why a process ended on its own, naming a resource
// limit it ran into where the exit shows it.
func exitReason(spec Spec, exit proc.Exit) string {
	if spec.CPUTime > 0 && (exit.Signal == syscall.SIGKILL || exit.Signal == syscall.SIGXCPU) &&
		// rusage samples CPU time differently from the limit's own
		// accounting, and under load it can read well short of it.
		exit.CPU >= spec.CPUTime.Truncate(time.Second)/2 {
		return fmt.Sprintf("cpu-limit: %s after %v of CPU (cpu_time %v)", exit, exit.CPU.Round(10*time.Millisecond), spec.CPUTime)
	}
	reason := "terminated: " + exit.String()
	if spec.Memory > 0 && !exit.Success() {
		// The kernel does not say that an allocation failed; name the
		// limit that was in force so the operator can judge.
		reason += fmt.Sprintf(" (memory limit %d MiB in force)", spec.Memory>>20)
	}
	return reason
}

// stop asks the current instance of svc to stop gracefully and runs then
// once it has exited (at once if there is no instance).
func (s *Server) stop(svc *service, then func()) {
	stopTimer(&svc.backoff)
	svc.waitDeps = false
	if svc.inst == nil {
		if svc.state != control.StateFailed || s.shutdown != nil {
			svc.state = control.StateDown
		}
		if then != nil {
			then()
		}
		return
	}
	if then != nil {
		svc.onStopped = append(svc.onStopped, then)
	}
	svc.state = control.StateStopping
	if !svc.inst.stopping {
		s.log.Info("stopping", "label", svc.spec.Label, "pid", svc.inst.proc.Pid())
		svc.inst.stop()
	}
}

func (s *Server) dropFDStore(svc *service) {
	for name, f := range svc.fdstore {
		f.Close()
		delete(svc.fdstore, name)
	}
}

// beginShutdown stops everything, dependents before their dependencies.
func (s *Server) beginShutdown(reply chan<- control.Reply) {
	if s.shutdown == nil {
		s.log.Info("shutting down")
		s.shutdown = &shutdownState{}
		for _, svc := range s.services {
			if svc.update != nil {
				s.rollback(svc.update, "rs is shutting down")
			}
			s.dropStandby(svc)
			stopTimer(&svc.backoff)
			svc.waitDeps = false
			if svc.inst == nil && (svc.state == control.StateStarting || svc.state == control.StateBackoff) {
				svc.state = control.StateDown
			}
			s.replyUp(svc, control.Reply{Err: control.ErrShutdown.Error()})
		}
	}
	if reply != nil {
		s.shutdown.replies = append(s.shutdown.replies, reply)
	}
}

// shutdownStep stops every service none of whose dependents still runs;
// it reports whether everything has stopped.
func (s *Server) shutdownStep() bool {
	alive := 0
	for _, label := range s.order {
		svc := s.services[label]
		if svc.standby != nil {
			alive++ // dropped, its exit not seen yet
		}
		if svc.inst == nil {
			continue
		}
		alive++
		if svc.inst.stopping || s.hasLiveDependents(label) {
			continue
		}
		s.stop(svc, nil)
	}
	if alive > 0 {
		return false
	}
	for _, svc := range s.services {
		s.dropFDStore(svc)
	}
	return true
}

func (s *Server) hasLiveDependents(label string) bool {
	for _, other := range s.services {
		if other.inst == nil {
			continue
		}
		for _, d := range other.spec.Depends {
			if d == label {
				return true
			}
		}
	}
	return false
}

func (s *Server) timer(ev evTimer) {
	if ev.inst == nil {
		if ev.kind == timerBackoff && ev.svc.state == control.StateBackoff && ev.svc.backoff != nil {
			ev.svc.backoff = nil
			s.reincarnate(ev.svc)
		}
		return
	}
	inst := ev.inst
	if !inst.current() {
		return // stale: that instance is gone
	}
	switch ev.kind {
	case timerPingDeadline:
		if inst.pingSeq == ev.seq && inst.pingOut {
			inst.faulty("no-heartbeat", fmt.Errorf("ping %d unanswered after %v", ev.seq, inst.svc.spec.PingTimeout))
		}
	case timerInit:
		if !inst.running {
			inst.faulty("init-timeout", fmt.Errorf("no init result within %v", inst.svc.spec.InitTimeout))
		}
	case timerEOF:
		inst.faulty("faulty: closed its channel", nil)
	}
}

// reader returns the Mux that reads every channel.
func (s *Server) reader() (*msg.Mux, error) {
	if s.mux == nil {
		return nil, s.muxErr
	}
	return s.mux, nil
}

// deliver posts one pass of the Mux to the loop. A channel's last event
// closes its instance's readDone once posted, so that the exit, which
// waits for it, comes after every packet.
func (s *Server) deliver(batch []msg.Delivery) {
	evs := make(evMessages, len(batch))
	for i, d := range batch {
		evs[i] = evMessage{inst: d.Key.(*instance), m: d.Msg, files: d.Files, err: d.Err, at: d.At}
	}
	s.post(evs)
	for _, ev := range evs {
		if ev.err != nil {
			close(ev.inst.readDone)
		}
	}
}

// message handles one packet (or channel failure) from an instance.
func (s *Server) message(ev evMessage) {
	inst := ev.inst
	if !inst.current() {
		msg.CloseFiles(ev.files)
		return
	}
	if ev.err != nil {
		inst.channelFailed(ev.err)
		return
	}
	inst.handle(ev.m, ev.files, ev.at)
}

// statusOf builds the status row of one service.
func (s *Server) statusOf(svc *service) control.Status {
	st := control.Status{
		Label:     svc.spec.Label,
		State:     svc.state,
		Restarts:  svc.restarts,
		Binary:    svc.spec.Binary,
		Args:      svc.spec.Args,
		LastExit:  svc.lastExit,
		PingRTTUs: svc.rtt.Microseconds(),
		Standby:   svc.wantStandby,
		PeriodMs:  svc.spec.Period.Milliseconds(),
		Depends:   svc.spec.Depends,
	}
	if st.Args == nil {
		st.Args = []string{}
	}
	if st.Depends == nil {
		st.Depends = []string{}
	}
	if svc.standby != nil {
		st.StandbyPid = svc.standby.proc.Pid()
	}
	if svc.inst != nil {
		st.Pid = svc.inst.proc.Pid()
		if svc.inst.running {
			st.UptimeS = s.clock.Now().Sub(svc.inst.runningSince).Seconds()
		}
	}
	return st
}

func (s *Server) statuses(label string) ([]control.Status, error) {
	if label != "" {
		svc, ok := s.services[label]
		if !ok {
			return nil, fmt.Errorf("%w %q", control.ErrUnknown, label)
		}
		return []control.Status{s.statusOf(svc)}, nil
	}
	labels := append([]string(nil), s.order...)
	sort.Strings(labels)
	out := make([]control.Status, 0, len(labels))
	for _, l := range labels {
		out = append(out, s.statusOf(s.services[l]))
	}
	return out, nil
}
