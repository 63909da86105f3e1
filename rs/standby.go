package rs

import (
	"fmt"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Standby replicas (MINIX's clone): a service with a standby has a second
// process of its binary exec'd and started up to the point where sef
// waits for init. When the service's instance dies, the standby gets the
// restart init with the fd store at once, so recovery costs an init, not
// an exec and a runtime start-up; a new standby is then started in the
// background. A standby has no state and answers no pings (its sef is not
// in its receive loop yet); if it dies, another replaces it after
// standbyRespawn.

// standbyRespawn is the pause before replacing a standby that died on its
// own, so a binary that cannot even start does not spin.
const standbyRespawn = time.Second

// ensureStandby starts a standby if the service wants one and has none.
// Only a running service gets one, so a standby never races a start.
func (s *Server) ensureStandby(svc *service) {
	if !svc.wantStandby || svc.standby != nil || svc.update != nil || s.shutdown != nil ||
		svc.state() != control.StateRunning {
		return
	}
	s.disarm(svc, tStandby)
	svc.standby = s.spawnInstance(svc, roleStandby, svc.spec)
}

func (s *Server) respawnStandbyLater(svc *service) {
	if svc.wantStandby {
		s.arm(svc, tStandby, standbyRespawn)
	}
	s.replyClone(svc)
}

// dropStandby ends the standby, if any; it has no state to lose.
func (s *Server) dropStandby(svc *service) {
	s.disarm(svc, tStandby)
	if sb := svc.standby; sb != nil {
		svc.standby = nil
		sb.role = roleRetired
		s.dropInstance(sb)
		s.log.Info("standby dropped", "label", svc.spec.Label, "pid", sb.pid())
	}
	s.replyClone(svc)
}

// promoteStandby makes the standby the service's instance with a restart
// init. It reports false when there is no standby ready to take over.
func (s *Server) promoteStandby(svc *service) bool {
	if !standbyReady(svc) {
		return false
	}
	sb := svc.standby
	svc.standby = nil
	sb.role = rolePrimary
	svc.primary = sb
	s.giveInit(sb, initRestart, nil, nil)
	s.log.Info("standby takes over", "label", svc.spec.Label, "pid", sb.pid())
	s.emit(control.Event{Label: svc.spec.Label, Event: EventStandbyTakeover, Pid: sb.pid()})
	return true
}

// standbyReady: the service has a standby that can take over now.
func standbyReady(svc *service) bool {
	sb := svc.standby
	return sb != nil && (sb.phase == phaseSpawned || sb.phase == phaseHello) && sb.reason == ""
}

// restartsAtOnce: a crash of svc's primary after ran of running would be
// reincarnated at once, whatever its exit status (restart = "always").
func (s *Server) restartsAtOnce(svc *service, ran time.Duration) bool {
	if svc.update != nil || s.shutdown != nil || svc.stopWant || svc.restartWant || svc.spec.Restart != RestartAlways {
		return false
	}
	history := append([]time.Time(nil), svc.history...) // restartVerdict reuses it
	fails, _, failed := restartVerdict(svc.spec, svc.fails, history, ran, s.clock.Now())
	return !failed && backoffDelay(svc.spec, fails) == 0
}

// clone and unclone handle `service clone` / `unclone`. A clone's reply
// waits until the standby's process runs, to name its pid.
func (s *Server) clone(label string, want bool, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	if err := noStandby(svc.spec.Type); want && err != nil {
		fail(r, control.Errorf(control.CodeRefused, "%s: %v", label, err))
		return
	}
	svc.wantStandby = want
	if !want {
		s.dropStandby(svc)
		answer(r, control.Reply{Message: label + ": no standby"})
		return
	}
	s.ensureStandby(svc)
	if svc.standby == nil {
		answer(r, control.Reply{Message: fmt.Sprintf("%s: standby wanted; it starts once %s is running", label, label)})
		return
	}
	svc.cloneWaiters = append(svc.cloneWaiters, r)
	s.replyClone(svc)
}

// replyClone answers `service clone` once the standby runs, or is gone.
func (s *Server) replyClone(svc *service) {
	if len(svc.cloneWaiters) == 0 {
		return
	}
	label := svc.spec.Label
	var r control.Reply
	switch sb := svc.standby; {
	case sb != nil && sb.phase == phaseSpawning:
		return // not yet
	case sb != nil:
		r = control.Reply{Message: fmt.Sprintf("%s: standby pid %d", label, sb.pid())}
	case svc.wantStandby:
		r = control.Reply{Message: fmt.Sprintf("%s: standby wanted; it could not start (%s), trying again in %v", label, svc.lastStandbyErr, standbyRespawn)}
	default:
		r = control.Reply{Message: label + ": no standby"}
	}
	for _, w := range svc.cloneWaiters {
		answer(w, r)
	}
	svc.cloneWaiters = nil
}

// takeOverEarly: the channel of a running primary closed and /proc shows
// its process exiting. The kernel closes a dying process's files just
// before it reports the death, but rs's reaction to the report (reap,
// exit event) costs about a quarter of a millisecond; so when a standby
// is ready and the crash would be restarted at once, the standby takes
// over now. Only under restart = "always": the exit status is not known
// yet. The exit, when reaped, fills in last_exit. It reports whether it
// took over.
func (s *Server) takeOverEarly(inst *instance, exiting bool) bool {
	svc := inst.svc
	ran := s.clock.Now().Sub(inst.runningSince)
	if !exiting || svc.primary != inst || inst.phase != phaseRunning || !standbyReady(svc) || !s.restartsAtOnce(svc, ran) {
		return false // the usual path decides once the process is reaped
	}
	inst.role = roleRetired
	s.pingLeave(inst)
	svc.primary = nil
	svc.rtt = 0
	svc.lastExit = "exiting (its exit status follows)"
	s.crashed(svc, ran)
	return true
}
