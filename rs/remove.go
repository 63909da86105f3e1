package rs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/reincarnation/rs/rs/control"
)

// Removing a service (`service remove`, and a reload for a configured
// service its file no longer has). It is taken down as `down` takes a
// service down, and it stays in the table, stopping, until none of its
// instances is left (requests for it meanwhile are busy); then it leaves
// the table (status no longer lists it), and what rs held for it (its
// held listeners, its fd store, its log pipes) is let go: the fds are
// closed off the loop (closeHeld), the pipes by the log writer's
// goroutine (once a hook of it that still runs has ended: its output
// reaches the log). A configured service comes back at the next reload.
//
// A service others depend on is not removed: the request is refused,
// naming them. Taking them down with it would leave them in the table
// depending on a label that is not there.

// removal is a service on its way out of the table.
type removal struct {
	waiters []chan<- control.Reply
	msg     string // the reply once it is gone
}

// remove handles `service remove`.
func (s *Server) remove(label string, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	if rm := s.removing[svc]; rm != nil {
		rm.waiters = append(rm.waiters, r) // removed already; answered with the first
		return
	}
	if deps := s.dependentsOf(label); len(deps) > 0 {
		names := make([]string, len(deps))
		for i, d := range deps {
			names[i] = d.spec.Label
		}
		fail(r, control.Errorf(control.CodeRefused, "%s not removed: %s depend on it; remove them first, or take %s out of their depends",
			label, strings.Join(names, ", "), label))
		return
	}
	if svc.update != nil {
		fail(r, fmt.Errorf("%s is being updated: %w; try again when the update is done", label, control.ErrBusy))
		return
	}
	msg := label + " removed"
	if p := svc.primary; p != nil && p.pid() > 0 {
		msg += fmt.Sprintf(" (pid %d stopped)", p.pid())
	} else {
		msg += fmt.Sprintf(" (it was %s)", svc.state())
	}
	if svc.spec.File != "" {
		msg += fmt.Sprintf("; it is in the config file (%s) and comes back at the next reload", svc.spec.File)
	}
	s.beginRemove(svc, r, msg)
}

// beginRemove takes svc down for good; r gets msg once it is gone.
func (s *Server) beginRemove(svc *service, r chan<- control.Reply, msg string) {
	why := fmt.Errorf("%w: %s: removed", control.ErrFailed, svc.spec.Label)
	s.replyUp(svc, control.Failure(why))
	s.dropStandby(svc)
	s.takeDown(svc, why)
	s.removing[svc] = &removal{waiters: []chan<- control.Reply{r}, msg: msg}
	s.log.Info("removing", "label", svc.spec.Label, "state", svc.state())
	s.stopStep()
	s.checkRemovals()
}

// checkRemovals forgets every service being removed that has no
// instance left, and answers who waits for that.
func (s *Server) checkRemovals() {
	for svc, rm := range s.removing {
		if svc.primary != nil || svc.instances > 0 {
			continue
		}
		delete(s.removing, svc)
		s.forget(svc)
		for _, w := range rm.waiters {
			answer(w, control.Reply{Message: rm.msg})
		}
	}
}

// forget takes svc, which has no instance, out of the table and lets go
// of what rs holds for it, off the loop.
func (s *Server) forget(svc *service) {
	label := svc.spec.Label
	if len(svc.downWaiters) > 0 {
		s.answerDown(svc) // a `down` of it is over
	}
	s.replyClone(svc)
	s.disarmAll(svc)
	s.dropFDStore(svc) // held listeners and fd store: closed off the loop
	s.releaseLog(svc)
	if s.logs != nil && svc.hooks.running == nil {
		s.logs.Remove(label) // (no-op once released) the writer's goroutine closes the pipes
	} // else hookDone lets them go once the hook has written its last line
	delete(s.services, label)
	s.order = slices.DeleteFunc(s.order, func(l string) bool { return l == label })
	s.log.Info("removed", "label", label)
	s.emit(control.Event{Label: label, Event: EventRemoved})
}

// busyRemoving: req is about a service being removed; only status and
// another remove are answered for it.
func (s *Server) busyRemoving(req control.Request) error {
	svc, ok := s.services[req.Label]
	if !ok || s.removing[svc] == nil || req.Op == control.OpStatus || req.Op == control.OpRemove {
		return nil
	}
	return fmt.Errorf("%s is being removed: %w", req.Label, control.ErrBusy)
}
