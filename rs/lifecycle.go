package rs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// The life of an instance, in one place. An instance has a role, what it
// is to its service, and a phase, how far its process has come; both
// change only here, one function per event:
//
//	event                     function       phase
//	spawn (rs)                spawnInstance  -> spawning
//	process started           onSpawned      spawning -> spawned   (or gone: it could not start)
//	init given (rs)           giveInit       spawned|hello -> initing
//	hello                     onSignal       spawned -> hello      (an instance given its init at once stays initing)
//	init succeeded            onSignal       initing -> running    (incoming: the update commits)
//	stop (rs)                 stopInstance   * -> stopping
//	fault (packet, deadline)  fault          phase kept; reason set, process killed
//	channel ended             onEnded        \  gone once both came, or one came
//	process reaped            onReaped       /  and its grace timer fired
//	gone                      gone           -> gone; the exit's outcome is decided
//
// Roles: a primary is the service's instance; a standby waits, exec'd, to
// take over (standby.go); an incoming instance is an update's new one
// (update.go); a retired one has been replaced (by an update's commit, by
// its standby, or dropped) and only its end remains to be seen.

type role uint8

const (
	rolePrimary role = iota
	roleStandby
	roleIncoming
	roleRetired
)

func (r role) String() string {
	return [...]string{"primary", "standby", "incoming", "retired"}[r]
}

type phase uint8

const (
	phaseSpawning phase = iota // its process is being started, off the loop
	phaseSpawned               // the process runs; it has said nothing yet
	phaseHello                 // it said hello and waits for its init
	phaseIniting               // it was given its init
	phaseRunning               // its init succeeded
	phaseStopping              // rs asked it to stop (or dropped it)
	phaseGone                  // its process is reaped and its channel ended
)

func (p phase) String() string {
	return [...]string{"spawning", "spawned", "hello", "initing", "running", "stopping", "gone"}[p]
}

// eofGrace: a channel that closes is usually a process that died; its
// reaping, which says how it died, follows within microseconds. A process
// still alive this long after closing its channel is faulty.
const eofGrace = 100 * time.Millisecond

// reapGrace bounds how long a reaped instance waits for the end of its
// channel (its last packets) before it is gone: something else may still
// hold the channel's other end.
const reapGrace = time.Second

// instance is one process of a service. Its fields belong to the loop.
type instance struct {
	svc  *service
	spec Spec // what it runs (an incoming instance runs the update's)

	role  role
	phase phase
	init  initKind // the init a primary is to get once spawned

	proc *proc.Process // nil while spawning
	drv  driver        // nil while spawning
	// cgroup is the instance's own cgroup v2 path, as /proc/<pid>/cgroup
	// spells it, where it has one: a control request from a process in
	// it is the service's (inInstance). "" without cgroup containment.
	cgroup string
	// The notify protocol's (notifydriver.go): it said STOPPING=1
	// (selfStop, to be gone by stopBy), RELOADING=1, ERRNO= (its MAINPID=
	// is its driver's); initBy is when its init deadline was first due
	// (EXTEND_TIMEOUT_USEC= only moves it later).
	selfStop, reloading bool
	errno               int
	initBy, stopBy      time.Time
	// reason: why rs ended it (a fault), for last_exit; empty when it
	// ended on its own.
	reason       string
	runningSince time.Time

	ended, reaped bool
	exit          proc.Exit

	// Liveness: the ping it owes an answer to, sent at pingAt by the
	// schedule's clock and at pingSent by the real one.
	pingSeq   uint64
	pingOut   bool
	pingAt    time.Time
	pingSent  time.Time
	pingGroup *pingGroup
	pingSlot  int

	t timers
}

func (inst *instance) timerSlots() *timers { return &inst.t }

func (inst *instance) label() string { return inst.svc.spec.Label }

// pid is the process id, 0 while spawning.
func (inst *instance) pid() int {
	if inst.proc == nil {
		return 0
	}
	return inst.proc.Pid()
}

// spawnInstance starts a process of spec for svc in role, off the loop
// (spawn.go); onSpawned follows.
func (s *Server) spawnInstance(svc *service, r role, spec Spec) *instance {
	inst := &instance{svc: svc, spec: spec, role: r, phase: phaseSpawning}
	s.live[inst] = struct{}{}
	svc.instances++
	s.startProcess(inst)
	return inst
}

// onSpawned: the process runs (or could not be started).
func (s *Server) onSpawned(ev evSpawned) {
	inst := ev.inst
	if len(ev.listeners) > 0 {
		if svc := inst.svc; len(svc.listeners) == 0 {
			svc.listeners = ev.listeners
		} else {
			s.closeListenerFiles(svc, ev.listeners) // made twice: a bug, but no leak
		}
	}
	if ev.err != nil {
		inst.ended, inst.reaped = true, true
		inst.reason = "start: " + ev.err.Error()
		s.log.Error("start failed", "label", inst.label(), "role", inst.role, "err", ev.err)
		s.emit(control.Event{Label: inst.label(), Event: EventStartFailed, Reason: inst.reason, Detail: roleDetail(inst.role)})
		s.gone(inst)
		return
	}
	inst.proc, inst.drv = ev.proc, ev.drv
	inst.cgroup = ev.proc.Cgroup
	if err := ev.drv.attach(s, inst); err != nil {
		inst.ended = true // no channel to wait for
		inst.phase = phaseSpawned
		s.fault(inst, "start", err)
		return
	}
	if inst.phase == phaseStopping {
		// Not wanted any more (dropped, stopped, rolled back) while it
		// started: it has nothing to lose.
		inst.proc.Kill()
		return
	}
	inst.phase = phaseSpawned
	switch inst.role {
	case rolePrimary:
		s.log.Info("spawned", "label", inst.label(), "pid", inst.pid(), "init", inst.init)
		s.emit(control.Event{Label: inst.label(), Event: EventSpawned, Pid: inst.pid()})
		s.giveInit(inst, inst.init, nil, nil)
	case roleStandby:
		s.log.Info("standby spawned", "label", inst.label(), "pid", inst.pid())
		s.emit(control.Event{Label: inst.label(), Event: EventSpawned, Pid: inst.pid(), Detail: roleDetail(inst.role)})
		s.replyClone(inst.svc)
	case roleIncoming:
		s.updateSpawned(inst.svc.update)
	}
}

// giveInit sends init with the fd store and extra (named) fds attached,
// and arms the init deadline.
func (s *Server) giveInit(inst *instance, kind initKind, extraNames []string, extra []*os.File) {
	names, files := storeNames(inst.svc.fdstore)
	for _, l := range inst.svc.listeners { // a sef service finds them by name too
		names, files = append(names, l.name), append(files, l.f)
	}
	names = append(names, extraNames...)
	files = append(files, extra...)
	inst.phase = phaseIniting
	inst.initBy = s.clock.Now().Add(inst.spec.InitTimeout)
	s.arm(inst, tInit, inst.spec.InitTimeout)
	if err := inst.drv.init(kind, inst.label(), inst.svc.restarts, names, files); err != nil {
		s.sendFailed(inst, err)
	}
}

// storeNames lists an fd store's names in order, with their files.
func storeNames(store map[string]*os.File) ([]string, []*os.File) {
	names := make([]string, 0, len(store))
	for name := range store {
		names = append(names, name)
	}
	sort.Strings(names)
	files := make([]*os.File, len(names))
	for i, n := range names {
		files[i] = store[n]
	}
	return names, files
}

// onPackets: one pass of the Mux.
func (s *Server) onPackets(ps evPackets) {
	for _, p := range ps {
		inst := p.drv.inst
		if inst.phase == phaseGone {
			s.closeHeld(inst.svc, p.files...)
			continue
		}
		if p.err != nil {
			s.closeHeld(inst.svc, p.files...)
			s.onEnded(inst, p.err, p.exiting)
			continue
		}
		if err := overBudget(inst.svc, len(p.files)); err != nil {
			s.closeHeld(inst.svc, abortive(p.files)...)
			s.fault(inst, "faulty", fmt.Errorf("%s: %w", p.m.Kind, err))
			continue
		}
		s.onSignal(inst, p.drv.handle(p.m, p.files, p.at))
	}
}

// onSignal: what an instance said, in the lifecycle's words.
func (s *Server) onSignal(inst *instance, sig signal) {
	u := inst.svc.update
	incoming := inst.role == roleIncoming && u != nil && u.new == inst
	if sig.kind == sigFault {
		s.closeHeld(inst.svc, sig.files...)
		if inst.role != roleRetired || inst.phase == phaseStopping {
			s.fault(inst, sig.reason, sig.err) // a stopping one is killed at once
		}
		return
	}
	if sig.kind == sigExtend && inst.phase == phaseStopping && inst.proc != nil && inst.reason == "" {
		// More time for a stop rs asked for: each of its waits lasts at
		// least as long (EXTEND_TIMEOUT_USEC while stopping).
		inst.proc.Extend(sig.d)
		return
	}
	if inst.phase >= phaseStopping || inst.reason != "" || inst.role == roleRetired {
		// On its way out (stopped, killed for a fault, replaced): what it
		// says is moot.
		s.closeHeld(inst.svc, sig.files...)
		return
	}
	switch sig.kind {
	case sigNone:
		s.closeHeld(inst.svc, sig.files...)
	case sigHello:
		if inst.phase == phaseSpawned {
			inst.phase = phaseHello
		}
		if incoming {
			s.updateHello(u)
		}
	case sigStoreFD:
		if incoming {
			s.storePending(u, sig.names[0], sig.files[0])
			return
		}
		s.storeFD(inst, sig.names[0], sig.files[0])
	case sigReady:
		s.disarm(inst, tInit)
		if incoming {
			if u.grp != nil && !sig.held {
				s.rollback(u, "new instance does not hold until the group's commit (its init-result has no hold): it would serve what a rollback loses; update it alone")
				return
			}
			if why := u.notTaken(sig.left); why != "" {
				s.rollback(u, why)
				return
			}
			if len(sig.left) > 0 {
				s.log.Warn("update: the new instance did not take what it was handed; dropped, as asked",
					"label", inst.label(), "not_taken", sig.left)
				u.progress(fmt.Sprintf("discarding what the new instance did not take: %v (--discard-state)", sig.left))
			}
			s.commit(u)
			return
		}
		s.ready(inst)
	case sigInitFailed:
		s.disarm(inst, tInit)
		if incoming {
			s.rollback(u, "new instance init failed: "+sig.err.Error())
			return
		}
		s.fault(inst, "init-failed", sig.err)
	case sigAlive:
		s.alive(inst, sig.at)
	case sigState:
		if u == nil || u.old != inst {
			s.closeHeld(inst.svc, sig.files...)
			s.fault(inst, "faulty", errors.New("unexpected lu-ready"))
			return
		}
		s.stateReady(u, sig.names, sig.files)
	case sigBaseDone:
		if u != nil && u.old == inst && u.base {
			s.baseDone(u, sig.bytes)
		}
	case sigRefused:
		s.closeHeld(inst.svc, sig.files...)
		if u != nil && u.old == inst {
			s.rollback(u, "refused by the old instance: "+sig.err.Error())
		}
	default:
		s.onNotifySignal(inst, sig)
	}
}

// ready: init succeeded; the instance runs and is pinged.
func (s *Server) ready(inst *instance) {
	svc := inst.svc
	inst.phase = phaseRunning
	inst.runningSince = s.clock.Now()
	svc.ranOnce = true
	s.recovered(svc)
	s.log.Info("ready", "label", inst.label(), "pid", inst.pid())
	s.emit(control.Event{Label: inst.label(), Event: EventReady, Pid: inst.pid()})
	s.pingJoin(inst)
	s.replyUp(svc, control.Reply{Message: fmt.Sprintf("%s running, pid %d", inst.label(), inst.pid())})
	s.startWaiting()
	s.ensureStandby(svc)
}

// alive: the answer to the outstanding ping. A measurement, not a
// schedule: the real clock, not the injected one, up to when the service
// sent it (the kernel's stamp), not when rs got to it. A wall clock
// stepped back in between leaves the last figure.
func (s *Server) alive(inst *instance, at time.Time) {
	inst.pingOut = false
	s.disarm(inst, tPing)
	if rtt := at.Sub(inst.pingSent); rtt > 0 {
		inst.svc.rtt = rtt
		s.emit(control.Event{Label: inst.label(), Event: EventPong, Pid: inst.pid(), RTT: rtt})
	}
}

// storeFD keeps f in the fd store under name, replacing (and closing,
// off the loop) what was there.
func (s *Server) storeFD(inst *instance, name string, f *os.File) {
	svc := inst.svc
	store := svc.fdstore
	if svc.isListenName(name) {
		s.closeHeld(svc, f)
		s.log.Warn("fd not stored: the name is one of its listen sockets, which rs keeps", "label", inst.label(), "name", name)
		return
	}
	if old, ok := store[name]; ok {
		s.closeHeld(svc, old)
	} else if len(store) >= maxStoredFDs {
		s.closeHeld(svc, f)
		s.fault(inst, "faulty", errStoreFull)
		return
	}
	store[name] = f
	s.log.Debug("fd stored", "label", inst.label(), "name", name)
}

// storePending keeps an fd an update's new instance stores aside: it
// joins the fd store only if the update commits. The new instance's store
// is the one it was given in its init with what it stores on top, each
// name once; it is bound by the same cap as any other.
func (s *Server) storePending(u *update, name string, f *os.File) {
	svc := u.svc
	if svc.isListenName(name) {
		s.closeHeld(svc, f)
		s.log.Warn("fd not stored: the name is one of its listen sockets, which rs keeps", "label", svc.spec.Label, "name", name)
		return
	}
	if old, ok := u.pending[name]; ok {
		s.closeHeld(svc, old)
	} else if _, ok := svc.fdstore[name]; !ok && storeSize(svc.fdstore, u.pending) >= maxStoredFDs {
		s.closeHeld(svc, f)
		s.fault(u.new, "faulty", errStoreFull)
		return
	}
	u.pending[name] = f
	s.log.Debug("fd stored by the update's new instance", "label", svc.spec.Label, "name", name)
}

// storeSize counts the names of store and pending together, once each.
func storeSize(store, pending map[string]*os.File) int {
	n := len(store)
	for name := range pending {
		if _, ok := store[name]; !ok {
			n++
		}
	}
	return n
}

// maxStoredFDs bounds a service's fd store, on every path: stored by its
// instance, or by an update's new one on top of what it was given.
const maxStoredFDs = msg.MaxStoredFDs

var errStoreFull = fmt.Errorf("fd store full (%d fds, the most rs keeps for a service)", maxStoredFDs)

// fdBudget bounds the fds rs holds for one service at any time: its fd
// store, an update's new entries, what a packet brings (the state and
// fds handed over at lu-ready) and those still being closed (closeHeld).
// It is what one init can carry, so that the store and a hand-over
// always fit the new instance's init. A packet that would take the
// service over it makes its sender faulty: rs's own fd table stays
// bounded whatever a service sends.
const fdBudget = msg.MaxFDs

// abortive makes the sockets among files reset at their close, not
// linger: fds over a service's budget are closed at once, so a faulty
// service cannot fill rs's fd table with closes that wait out a linger
// time while its queued packets drain. (A socket that is not one
// ignores it.) It returns files.
func abortive(files []*os.File) []*os.File {
	for _, f := range files {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			})
		}
	}
	return files
}

// heldFDs is what rs holds for svc now, in its budget.
func (svc *service) heldFDs() int {
	n := len(svc.fdstore) + len(svc.listeners) + int(svc.closing.Load())
	if u := svc.update; u != nil {
		n += len(u.pending) + len(u.heldFiles)
	}
	return n
}

// overBudget: n more fds for svc would take it over its budget.
func overBudget(svc *service, n int) error {
	if n == 0 {
		return nil
	}
	if held := svc.heldFDs(); held+n > fdBudget {
		return fmt.Errorf("%d fds on top of the %d rs holds for %s: over its fd budget of %d", n, held, svc.spec.Label, fdBudget)
	}
	return nil
}

// fault kills the instance's group; its end, when it comes, carries
// reason into last_exit. Only the first reason counts.
func (s *Server) fault(inst *instance, reason string, err error) {
	if inst.phase == phaseGone || inst.reason != "" {
		return
	}
	if err != nil {
		reason = reason + ": " + err.Error()
	}
	if inst.phase == phaseStopping {
		// Whatever it does while stopping, the stop sequence ends it;
		// now is sooner.
		inst.proc.Kill()
		return
	}
	inst.reason = reason
	s.pingLeave(inst)
	s.log.Warn("faulty, killing", "label", inst.label(), "pid", inst.pid(), "role", inst.role, "reason", reason)
	s.emit(control.Event{Label: inst.label(), Event: EventFault, Pid: inst.pid(), Reason: reason, Detail: roleDetail(inst.role)})
	inst.proc.Kill()
}

// sendFailed: what a driver's send failing means for the instance.
func (s *Server) sendFailed(inst *instance, err error) {
	switch {
	case errors.Is(err, errPeerGone):
		// Its end is closed: the end of the channel follows as an event,
		// and is judged there.
	case errors.Is(err, errDeaf):
		s.fault(inst, "faulty", errDeaf)
	default:
		s.fault(inst, "faulty", err)
	}
}

// stopInstance asks the instance to stop gracefully, bounded by its stop
// grace (proc.Stop, in a goroutine that ends with the process).
func (s *Server) stopInstance(inst *instance) {
	if inst.phase >= phaseStopping {
		return
	}
	inst.phase = phaseStopping // its deadlines no longer apply (instanceTimer)
	s.pingLeave(inst)
	if inst.proc == nil {
		return // spawning: onSpawned kills it
	}
	s.log.Info("stopping", "label", inst.label(), "pid", inst.pid(), "role", inst.role)
	s.emit(control.Event{Label: inst.label(), Event: EventStopping, Pid: inst.pid(), Detail: roleDetail(inst.role)})
	_ = inst.drv.stop()
	go inst.proc.Stop(nil, inst.spec.StopSignal, inst.spec.StopGrace)
}

// dropInstance ends an instance rs has no use for (a standby, an update's
// rolled-back one) at once: it has no state to lose.
func (s *Server) dropInstance(inst *instance) {
	if inst.phase >= phaseStopping {
		return
	}
	// Its deadlines no longer apply (instanceTimer); its reap grace, if
	// armed, still ends it.
	inst.phase = phaseStopping
	s.pingLeave(inst)
	if inst.proc != nil {
		inst.proc.Kill()
	}
}

// onEnded: the instance's channel ended (EOF, or a malformed packet).
// exiting tells whether /proc showed its process exiting just then.
func (s *Server) onEnded(inst *instance, err error, exiting bool) {
	inst.ended = true
	if inst.reaped {
		s.gone(inst)
		return
	}
	if !isEOF(err) {
		s.fault(inst, "faulty", err)
		return
	}
	if inst.phase == phaseStopping || inst.reason != "" {
		return // its end is under way
	}
	if s.takeOverEarly(inst, exiting) {
		return
	}
	// Pings cannot be answered now; the closed channel is judged
	// instead, after the grace that lets a dying process's reaping win.
	s.pingLeave(inst)
	s.arm(inst, tEnded, eofGrace)
}

// onReaped: the instance's process is reaped.
func (s *Server) onReaped(inst *instance, exit proc.Exit) {
	inst.reaped, inst.exit = true, exit
	if s.logs != nil && !othersAlive(inst) {
		// What it wrote last is in the pipes; a line it left without its
		// newline is written now (with another instance alive it may be
		// that one's, and waits).
		s.logs.Ended(inst.label())
	}
	if inst.ended {
		s.gone(inst)
		return
	}
	s.pingLeave(inst)
	s.arm(inst, tReaped, reapGrace)
}

// othersAlive tells whether an instance of inst's service other than
// inst is alive (its output shares inst's pipes).
func othersAlive(inst *instance) bool {
	svc := inst.svc
	others := []*instance{svc.primary, svc.standby}
	if u := svc.update; u != nil {
		others = append(others, u.old, u.new)
	}
	for _, o := range others {
		if o != nil && o != inst && !o.reaped && o.phase != phaseGone {
			return true
		}
	}
	return false
}

// instanceTimer: one of an instance's deadlines passed.
func (s *Server) instanceTimer(inst *instance, k timerKind) {
	switch k {
	case tInit:
		if inst.phase == phaseIniting {
			err := fmt.Errorf("no init result within %v", inst.spec.InitTimeout)
			if d, ok := inst.drv.(interface{ notReady() error }); ok && d.notReady() != nil {
				err = d.notReady() // why its driver did not find it ready
			}
			s.fault(inst, "init-timeout", err)
		}
	case tPing:
		if inst.pingOut {
			s.fault(inst, "no-heartbeat", fmt.Errorf("ping %d unanswered after %v", inst.pingSeq, inst.spec.pingDeadline()))
		}
	case tEnded:
		if !inst.reaped && inst.phase < phaseStopping {
			s.fault(inst, "faulty: closed its channel", nil)
		}
	case tReaped:
		s.gone(inst)
	case tStopBy:
		if inst.selfStop && inst.phase == phaseRunning {
			s.fault(inst, "stop-timeout", fmt.Errorf("said STOPPING=1 and did not exit within %v", inst.spec.StopGrace))
		}
	}
}

// gone: the instance is over. What that means for its service depends on
// its role and how far it came (exitOutcome, policy.go).
func (s *Server) gone(inst *instance) {
	if inst.phase == phaseGone {
		return
	}
	was := inst.phase
	inst.phase = phaseGone
	delete(s.live, inst)
	inst.svc.instances--
	s.pingLeave(inst)
	s.disarmAll(inst)
	if inst.drv != nil {
		inst.drv.close()
	}
	svc := inst.svc
	reason := inst.reason
	if reason == "" {
		reason = exitReason(inst.spec, inst.exit)
	}
	if inst.errno != 0 {
		reason += fmt.Sprintf(" (ERRNO=%d: %v)", inst.errno, syscall.Errno(inst.errno))
	}
	out := exitOutcome(inst.role, was, inst.reason != "", inst.exit, svc.spec.Restart, s.shutdown != nil)
	switch out {
	case outRollback:
		s.rollback(svc.update, "new instance "+reason)
	case outStandby:
		svc.standby = nil
		svc.lastStandbyErr = reason
		s.log.Warn("standby exited", "label", svc.spec.Label, "pid", inst.pid(), "reason", reason)
		s.respawnStandbyLater(svc)
	case outReplaced:
		// Its standby took over when its channel closed (takeOverEarly);
		// the exit only says why it died.
		svc.lastExit = reason
		s.log.Warn("exited", "label", svc.spec.Label, "pid", inst.pid(), "reason", reason, "cpu", inst.exit.CPU, "replaced", true)
		s.emit(control.Event{Label: svc.spec.Label, Event: EventExited, Pid: inst.pid(), Reason: reason, Detail: "a standby took over"})
		s.hook(svc, hookExit)
	case outQuiet:
	default:
		s.primaryGone(inst, out, reason)
	}
	s.releaseLog(svc)
	s.startWaiting() // a start slot may be free
	s.stopStep()     // a dependent may be gone
	s.checkDowns()
	s.checkRemovals()
}

// primaryGone: the service's own instance is over.
func (s *Server) primaryGone(inst *instance, out outcome, reason string) {
	svc := inst.svc
	svc.primary = nil
	svc.rtt = 0
	s.recovered(svc)
	svc.statusText = "" // it spoke of an instance that is no more
	if u := svc.update; u != nil && u.old == inst {
		// The old instance died mid-update: the update is void, and the
		// death is handled as any other.
		s.rollback(u, "old instance "+reason)
	}
	label := svc.spec.Label
	if out == outStopped {
		s.log.Info("stopped", "label", label, "exit", inst.exit.String())
		s.noteShutdownStop(inst)
		s.stopped(svc)
		s.emit(control.Event{Label: label, Event: EventStopped, Pid: inst.pid(), Detail: inst.exit.String()})
		return
	}
	svc.lastExit = reason
	s.log.Warn("exited", "label", label, "pid", inst.pid(), "reason", reason, "cpu", inst.exit.CPU)
	s.emit(control.Event{Label: label, Event: EventExited, Pid: inst.pid(), Reason: reason})
	wasFailed := svc.failed
	svc.hooks.inExit = true
	switch out {
	case outStartFailed:
		s.startFailed(svc)
	case outRestart:
		s.crashed(svc, s.clock.Now().Sub(inst.runningSince))
	case outStays:
		s.pauseListeners(svc) // down until `up`: clients are refused meanwhile
	}
	svc.hooks.inExit = false
	// The hooks once the policy decided: RS_STATE is what follows.
	s.hook(svc, hookExit)
	if svc.failed && !wasFailed {
		s.hook(svc, hookFailure)
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
