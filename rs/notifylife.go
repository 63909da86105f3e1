package rs

import (
	"fmt"
	"time"
)

// What the lifecycle makes of a notify instance's datagrams (the driver,
// notifydriver.go, turns them into signals).

// onNotify: one datagram of a notify instance, or its reader's start.
func (s *Server) onNotify(ev evNotify) {
	inst := ev.drv.inst
	drop := ev.files
	if ev.mainFD != nil {
		drop = append(drop[:len(drop):len(drop)], ev.mainFD)
	}
	if inst.phase == phaseGone {
		s.closeHeld(inst.svc, drop...)
		return
	}
	if err := overBudget(inst.svc, len(ev.files)); err != nil {
		s.closeHeld(inst.svc, abortive(drop)...)
		s.fault(inst, "faulty", fmt.Errorf("FDSTORE=1: %w", err))
		return
	}
	for _, sig := range ev.drv.handle(ev) {
		s.onSignal(inst, sig)
	}
}

// onNotifySignal: the signals only the notify protocol has.
func (s *Server) onNotifySignal(inst *instance, sig signal) {
	svc := inst.svc
	switch sig.kind {
	case sigStatus:
		switch u := svc.update; {
		case inst.role == rolePrimary:
			svc.statusText = sig.text
		case u != nil && u.new == inst:
			u.statusText = sig.text // shown once it replaces the old one
		}
	case sigErrno:
		inst.errno = sig.n
	case sigReloading:
		inst.reloading = sig.n == 1
		s.log.Info("reloading", "label", inst.label(), "pid", inst.pid(), "reloading", inst.reloading)
	case sigStopping:
		if inst.selfStop {
			return
		}
		// It stops by itself (STOPPING=1): no more pings; it is to be
		// gone within its stop grace, and its exit is judged by the
		// restart policy as any other.
		inst.selfStop = true
		s.pingLeave(inst)
		inst.stopBy = s.clock.Now().Add(inst.spec.StopGrace)
		s.arm(inst, tStopBy, inst.spec.StopGrace)
		s.log.Info("stopping by itself (STOPPING=1)", "label", inst.label(), "pid", inst.pid())
	case sigExtend:
		now := s.clock.Now()
		switch {
		case inst.phase == phaseIniting:
			by := later(inst.initBy, now.Add(sig.d))
			s.arm(inst, tInit, by.Sub(now))
		case inst.selfStop:
			by := later(inst.stopBy, now.Add(sig.d))
			s.arm(inst, tStopBy, by.Sub(now))
		}
	case sigRemoveFD:
		if f, ok := svc.fdstore[sig.text]; ok && inst.role != roleIncoming {
			delete(svc.fdstore, sig.text)
			s.closeHeld(svc, f)
			s.log.Debug("fd removed from the store", "label", inst.label(), "name", sig.text)
		}
	case sigMainPID:
		s.mainPID(inst, sig)
	default:
		s.closeHeld(svc, sig.files...)
		s.unknownEvents.Add(1)
		s.log.Error("signal of an unknown kind: a bug in rs", "kind", sig.kind)
	}
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// mainPID: MAINPID=, checked by the reader (in the service's tree, its
// pidfd open). rs's own child needs no watching: its reaping ends the
// instance. Another process cannot be waited for (it is not rs's child)
// but its pidfd can be polled: when it exits, so has the service
// (onMainExited); its exit status is not rs's to see.
func (s *Server) mainPID(inst *instance, sig signal) {
	d, ok := inst.drv.(*notifyDriver)
	if !ok {
		s.closeHeld(inst.svc, sig.files...)
		return
	}
	if sig.err != nil {
		s.closeHeld(inst.svc, sig.files...)
		s.log.Warn("MAINPID refused", "label", inst.label(), "pid", inst.pid(), "err", sig.err)
		return
	}
	if sig.n == inst.pid() || len(sig.files) == 0 {
		s.closeHeld(inst.svc, sig.files...)
		d.dropMain()
		return
	}
	d.watchMain(s, sig.n, sig.files[0])
	s.log.Info("main pid", "label", inst.label(), "pid", inst.pid(), "main_pid", sig.n)
}

// onMainExited: a notify instance's MAINPID= exited: the service has
// died; the rest of its tree goes with it.
func (s *Server) onMainExited(ev evMainExited) {
	inst := ev.drv.inst
	if inst.phase == phaseGone || ev.drv.mainPid.Load() != int64(ev.pid) {
		return
	}
	if inst.phase == phaseStopping {
		inst.proc.Kill() // the stop it was asked for is done
		return
	}
	s.fault(inst, "terminated", fmt.Errorf("main pid %d exited (not rs's child: its exit status is unknown)", ev.pid))
}
