package rs

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/logs"
)

// service is one row of the table, living across instances. Its state is
// not stored: state derives it from its instances and the policy's
// memory below.
type service struct {
	spec    Spec
	primary *instance // the service's instance, if any
	standby *instance // a warm standby, exec'd and waiting for its init
	update  *update   // a live update in progress

	// The policy's memory.
	failed   bool // too many restarts, or its first start failed
	waiting  bool // to start as soon as its dependencies run
	ranOnce  bool // an instance has run: the next init is a restart
	stopWant bool // rs wants it down (down, shutdown): stop once no dependent runs
	// restartWant: a restart waits for the primary to end.
	restartWant bool
	fails       int // consecutive failures, for backoff
	history     []time.Time
	wantStandby bool // config standby = true, or `service clone`

	restarts       int
	lastExit       string
	lastStandbyErr string // why the last standby ended
	rtt            time.Duration
	// recovering: reincarnated, not yet ready; the log writer yields to
	// it (logs.Writer.Yield) until then.
	recovering bool
	fdstore    map[string]*os.File
	// logFiles are every instance's stdout and stderr (package logs
	// owns them): the same pipes across restarts and updates.
	logFiles  logs.Files
	instances int          // its instances in s.live, spawning to gone
	closing   atomic.Int64 // its fds being closed off the loop (closeHeld)

	// The notify protocol's: the primary's STATUS=, and the datagrams
	// ignored (not its own, malformed), counted by the drivers' readers.
	statusText     string
	notifyRejected atomic.Int64

	// Who waits for what.
	upWaiters      []chan<- control.Reply // replied when an instance runs or fails to start
	downWaiters    []chan<- control.Reply // replied when it and downAlso are down
	downAlso       []*service             // its dependents that `down` stops with it
	downMsg        string
	restartWaiters []chan<- control.Reply // become upWaiters once the restart starts
	cloneWaiters   []chan<- control.Reply // replied when the standby is spawned (or not)

	t timers // tBackoff, tStandby, tRetry

	// paused: its held listeners that turn clients away while it is
	// failed or down (listeners.go); none otherwise.
	paused []*pausedListener
	// listeners: the sockets of its `listen` (launch.go), made at its
	// first spawn and held until it is down or they change.
	listeners []heldListener

	hooks hookState // on_failure, on_exit (hooks.go)
}

func (svc *service) timerSlots() *timers { return &svc.t }

// state is what `service status` shows, derived.
func (svc *service) state() string {
	if svc.update != nil {
		return control.StateUpdating
	}
	if p := svc.primary; p != nil {
		switch p.phase {
		case phaseRunning:
			if p.selfStop {
				return control.StateStopping // STOPPING=1
			}
			return control.StateRunning
		case phaseStopping:
			return control.StateStopping
		}
		return control.StateStarting
	}
	switch {
	case svc.failed:
		return control.StateFailed
	case armed(svc, tBackoff):
		return control.StateBackoff
	case svc.waiting:
		return control.StateStarting
	}
	return control.StateDown
}

func (s *Server) add(spec Spec) *service {
	svc := &service{spec: spec.withDefaults(), fdstore: map[string]*os.File{}, wantStandby: spec.Standby}
	s.services[spec.Label] = svc
	s.order = append(s.order, spec.Label)
	return svc
}

// setLog asks the log writer for the files of svc's output as its spec
// says (pipes made now, no I/O: it never blocks the loop). A service
// gets them at its first spawn and keeps them while it has instances or
// may get one by itself (backoff, a restart); releaseLog gives them back.
func (s *Server) setLog(svc *service) {
	if s.logs == nil {
		return
	}
	f, err := s.logs.Add(svc.spec.Label, svc.spec.logConfig())
	if err != nil {
		s.log.Error("service output goes to /dev/null", "label", svc.spec.Label, "err", err)
	}
	svc.logFiles = f
}

// releaseLog gives back svc's pipes and closes its file (what the pipes
// hold is written first) once it has no instance, not even one still
// spawning or stopping, no hook of it runs (hooks.go), and it stays down
// or failed: a service that is down holds no fds. Its next spawn gets new pipes.
func (s *Server) releaseLog(svc *service) {
	if s.logs == nil || svc.logFiles.Stdout == nil || svc.instances > 0 || svc.hooks.running != nil {
		return
	}
	if st := svc.state(); st != control.StateDown && st != control.StateFailed {
		return
	}
	s.logs.Remove(svc.spec.Label)
	svc.logFiles = logs.Files{}
}

func (s *Server) addConfigured(specs []Spec) {
	for _, spec := range specs {
		if _, ok := s.services[spec.Label]; ok {
			s.log.Error("duplicate service ignored", "label", spec.Label)
			continue
		}
		s.add(spec).waiting = true // pid 0 until its turn and its dependencies come
	}
	s.startWaiting()
}

// maxStarting bounds how many services start at once: a thousand Go
// binaries exec'd together would starve each other past their init
// deadlines.
var maxStarting = 4 * runtime.NumCPU()

// startWaiting starts every waiting service whose dependencies all run, a
// few at a time.
func (s *Server) startWaiting() {
	if s.shutdown != nil {
		return
	}
	starting := 0
	for _, svc := range s.services {
		if p := svc.primary; p != nil && p.phase < phaseRunning {
			starting++
		}
	}
	for _, label := range s.order {
		if starting >= maxStarting {
			return
		}
		svc := s.services[label]
		if !svc.waiting {
			continue
		}
		if dep := s.missingDep(svc); dep != "" {
			svc.lastExit = "waiting for " + dep
			continue
		}
		svc.waiting = false
		svc.lastExit = ""
		s.spawnPrimary(svc)
		starting++
	}
}

// missingDep names the first dependency of svc that is not running.
func (s *Server) missingDep(svc *service) string {
	for _, d := range svc.spec.Depends {
		if dep, ok := s.services[d]; !ok || dep.state() != control.StateRunning {
			return d
		}
	}
	return ""
}

// spawnPrimary starts the service's instance: its warm standby, if it
// has one and this is a restart, else a new process.
func (s *Server) spawnPrimary(svc *service) {
	kind := initFresh
	if svc.ranOnce {
		kind = initRestart
	}
	s.resumeListeners(svc) // before any instance gets the fd store
	if kind == initRestart && s.promoteStandby(svc) {
		return
	}
	inst := s.spawnInstance(svc, rolePrimary, svc.spec)
	inst.init = kind
	svc.primary = inst
}

// startFailed: the primary never reached running (or could not be
// started). A service that never ran is `failed` at once: retrying a
// binary that cannot start hides the error. Otherwise it is a crash.
func (s *Server) startFailed(svc *service) {
	s.replyUp(svc, control.Failure(fmt.Errorf("%w: %s: %s", control.ErrFailed, svc.spec.Label, svc.lastExit)))
	if !svc.ranOnce {
		s.markFailed(svc)
		return
	}
	s.crashed(svc, 0)
}

// replyUp answers everyone waiting for the service to come up.
func (s *Server) replyUp(svc *service, r control.Reply) {
	for _, w := range svc.upWaiters {
		answer(w, r)
	}
	svc.upWaiters = nil
}

// crashed decides what comes after a primary that ended on its own (ran
// for ran): a restart now, a restart later, or `failed`.
func (s *Server) crashed(svc *service, ran time.Duration) {
	label := svc.spec.Label
	now := s.clock.Now()
	fails, history, failed := restartVerdict(svc.spec, svc.fails, svc.history, ran, now)
	svc.fails, svc.history = fails, history
	if failed {
		s.log.Error("failed: too many restarts", "label", label,
			"restarts", len(svc.history), "window", svc.spec.RestartWindow, "last_exit", svc.lastExit)
		s.markFailed(svc)
		return
	}
	delay := backoffDelay(svc.spec, fails)
	if delay == 0 {
		s.reincarnate(svc)
		return
	}
	s.log.Info("backoff", "label", label, "delay", delay)
	s.arm(svc, tBackoff, delay)
	s.emit(control.Event{Label: label, Event: EventBackoff, Reason: svc.lastExit, Detail: delay.String()})
}

// markFailed puts the service in `failed`: its held listeners refuse
// clients instead of keeping them waiting, and with failed_retry it is
// tried again later.
func (s *Server) markFailed(svc *service) {
	svc.failed = true
	s.pauseListeners(svc)
	s.emit(control.Event{Label: svc.spec.Label, Event: EventFailed, Reason: svc.lastExit})
	if !svc.hooks.inExit {
		s.hook(svc, hookFailure) // else primaryGone runs it after on_exit
	}
	if d := svc.spec.FailedRetry; d > 0 {
		s.arm(svc, tRetry, d)
		s.log.Info("failed: trying again later", "label", svc.spec.Label, "failed_retry", d)
	}
}

// retryFailed: failed_retry passed. One more try, at once; the history
// stays, so a try that crash-loops fails it again at its first crash
// while the restart window still holds the last loop.
func (s *Server) retryFailed(svc *service) {
	if !svc.failed || svc.primary != nil || svc.stopWant || s.shutdown != nil {
		return // restarted, brought up or taken down meanwhile
	}
	svc.failed = false
	s.log.Info("trying a failed service again", "label", svc.spec.Label, "after", svc.spec.FailedRetry)
	s.reincarnate(svc)
}

func (s *Server) reincarnate(svc *service) {
	svc.restarts++
	if s.logs != nil && !svc.recovering {
		// Services that flood wait on their full pipes while it starts.
		svc.recovering = true
		s.logs.Yield(svc.spec.Label, recoveryYield)
	}
	s.spawnPrimary(svc) // first: a standby's init goes out before the log line
	s.log.Info("reincarnating", "label", svc.spec.Label, "reason", svc.lastExit, "restarts", svc.restarts)
	s.emit(control.Event{Label: svc.spec.Label, Event: EventReincarnating, Reason: svc.lastExit})
}

func (s *Server) serviceTimer(svc *service, k timerKind) {
	switch k {
	case tBackoff:
		s.reincarnate(svc)
	case tStandby:
		s.ensureStandby(svc)
	case tRetry:
		s.retryFailed(svc)
	}
}

func (s *Server) dropFDStore(svc *service) {
	store := slices.Collect(maps.Values(svc.fdstore))
	refuseListening(store...)
	for _, l := range svc.listeners {
		refuseListening(l.f)
	}
	s.closeListeners(svc)
	s.releaseListeners(svc)
	s.closeHeld(svc, store...)
	clear(svc.fdstore)
}

// recoveryYield bounds how long the output of services that flood waits
// while another service is reincarnated (logs.Writer.Yield).
const recoveryYield = 200 * time.Millisecond

// recovered ends the log writer's yield to svc's start.
func (s *Server) recovered(svc *service) {
	if svc.recovering {
		svc.recovering = false
		s.logs.Recovered(svc.spec.Label)
	}
}
