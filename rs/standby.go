package rs

import (
	"fmt"
	"time"

	"github.com/reincarnation/rs/msg"
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
		svc.state != control.StateRunning {
		return
	}
	stopTimer(&svc.standbyTimer)
	s.nextID++
	inst, err := spawnInstance(s, svc, svc.spec, s.nextID)
	if err != nil {
		s.log.Error("standby: start failed", "label", svc.spec.Label, "err", err)
		s.respawnStandbyLater(svc)
		return
	}
	inst.standby = true
	svc.standby = inst
	s.log.Info("standby spawned", "label", svc.spec.Label, "pid", inst.proc.Pid())
}

func (s *Server) respawnStandbyLater(svc *service) {
	stopTimer(&svc.standbyTimer)
	svc.standbyTimer = s.clock.AfterFunc(standbyRespawn, func() {
		s.post(evFunc(func() {
			svc.standbyTimer = nil
			s.ensureStandby(svc)
		}))
	})
}

// dropStandby ends the standby, if any; it has no state to lose.
func (s *Server) dropStandby(svc *service) {
	stopTimer(&svc.standbyTimer)
	if sb := svc.standby; sb != nil {
		svc.standby = nil
		sb.stopping = true
		sb.proc.Kill()
		s.log.Info("standby dropped", "label", svc.spec.Label, "pid", sb.proc.Pid())
	}
}

// promoteStandby makes the standby the service's instance with a restart
// init. It reports false when there is no standby to promote.
func (s *Server) promoteStandby(svc *service) bool {
	sb := svc.standby
	if sb == nil || sb.exited || sb.fault != "" {
		return false
	}
	svc.standby = nil
	sb.standby = false
	if err := sb.sendInit(msg.InitRestart, nil, nil); err != nil {
		sb.stopping = true
		sb.proc.Kill()
		return false
	}
	svc.inst = sb
	svc.state = control.StateStarting
	s.log.Info("standby takes over", "label", svc.spec.Label, "pid", sb.proc.Pid())
	return true
}

// standbyExited: a standby died (or was dropped).
func (s *Server) standbyExited(svc *service, inst *instance, reason string) {
	svc.standby = nil
	if inst.stopping {
		return
	}
	s.log.Warn("standby exited", "label", svc.spec.Label, "pid", inst.proc.Pid(), "reason", reason)
	if svc.wantStandby {
		s.respawnStandbyLater(svc)
	}
}

// clone and unclone handle `service clone` / `unclone`.
func (s *Server) clone(label string, want bool) (string, error) {
	svc, ok := s.services[label]
	if !ok {
		return "", fmt.Errorf("%w %q", control.ErrUnknown, label)
	}
	svc.wantStandby = want
	if !want {
		s.dropStandby(svc)
		return label + ": no standby", nil
	}
	s.ensureStandby(svc)
	if svc.standby == nil {
		return fmt.Sprintf("%s: standby wanted; it starts once %s is running", label, label), nil
	}
	return fmt.Sprintf("%s: standby pid %d", label, svc.standby.proc.Pid()), nil
}

// takeOverEarly: the channel of a running instance closed and its process
// is exiting. The kernel closes a dying process's files just before it
// reports the death, but rs's reaction to the report (reap, exit event)
// costs about a quarter of a millisecond; so when a standby is ready and
// the crash would be restarted at once, the standby takes over now. Only
// under restart = "always": the exit status is not known yet. The exit,
// when reaped, fills in last_exit. It reports whether it took over.
func (s *Server) takeOverEarly(inst *instance) bool {
	svc := inst.svc
	sb := svc.standby
	if svc.inst != inst || !inst.running || inst.stopping || inst.fault != "" ||
		svc.state != control.StateRunning || svc.update != nil || s.shutdown != nil ||
		svc.spec.Restart != RestartAlways || len(svc.onStopped) > 0 ||
		sb == nil || sb.exited || sb.fault != "" {
		return false
	}
	ran := s.clock.Now().Sub(inst.runningSince)
	if fails, failed := s.restartVerdict(svc, ran); failed || backoffDelay(svc.spec, fails) != 0 {
		return false // not restarted at once: the usual path decides at the exit
	}
	if !inst.proc.Exiting() {
		return false // alive with its channel closed: faulty, after eofGrace
	}
	inst.replaced = true
	s.pingLeave(inst)
	svc.inst = nil
	svc.rtt = 0
	svc.lastExit = "exiting (its exit status follows)"
	s.crashed(svc, ran)
	return true
}
