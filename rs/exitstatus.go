package rs

import (
	"fmt"
	"syscall"
)

// How the shutdown went, for rs's exit status (cmd/rs): a service stopped
// cleanly when its instance ended at rs's stop with exit 0 or by its own
// stop_signal (the signal rs sent; a program without a handler dies of
// it, as systemd counts SIGTERM a clean end). Not clean: one that needed
// SIGKILL, one that exited non-zero or by another signal while stopping,
// and one that was failed when the shutdown began.

// noteShutdownStop records, on the loop, how a primary that rs stopped
// at the shutdown ended.
func (s *Server) noteShutdownStop(inst *instance) {
	if s.shutdown == nil {
		return
	}
	e := inst.exit
	if e.Success() || e.Signal != 0 && e.Signal == inst.spec.StopSignal && !e.Core {
		return
	}
	why := "stopped by " + e.String()
	if e.Signal == syscall.SIGKILL {
		why = fmt.Sprintf("did not stop within its stop_grace (%v a step): %s", inst.spec.StopGrace, e)
	}
	s.unclean = append(s.unclean, inst.label()+": "+why)
}

// noteShutdownFailed records, on the loop, the services that were
// failed when the shutdown began.
func (s *Server) noteShutdownFailed(svc *service) {
	if svc.failed {
		s.unclean = append(s.unclean, svc.spec.Label+": failed: "+svc.lastExit)
	}
}

// Unclean lists the services that did not stop cleanly at the shutdown,
// one "label: why" each; empty when every one did. Valid once Done is
// closed.
func (s *Server) Unclean() []string {
	<-s.done
	return s.unclean
}
