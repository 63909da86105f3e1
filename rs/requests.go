package rs

import (
	"fmt"

	"github.com/reincarnation/rs/rs/control"
)

// Handle answers one control request (a control.Handler). It runs on the
// connection's goroutine: it posts the request to the loop and relays the
// loop's progress lines until the loop's reply. What rs reports of
// itself with status is read here, off the loop.
func (s *Server) Handle(req control.Request, progress func(string)) control.Reply {
	prog := make(chan string, 16)
	reply := make(chan control.Reply, 1)
	s.post(evRequest{req: req, reply: reply, prog: prog})
	final := func(r control.Reply) control.Reply {
		// Progress sent before the reply is in prog already.
		for {
			select {
			case p := <-prog:
				progress(p)
			default:
				if req.Op == control.OpStatus && r.Err == "" {
					r.Daemon = s.daemon()
				}
				return r
			}
		}
	}
	for {
		select {
		case p := <-prog:
			progress(p)
		case r := <-reply:
			return final(r)
		case <-s.done:
			select {
			case r := <-reply: // the loop answered as it ended (shutdown)
				return final(r)
			default:
				return control.Failure(control.ErrShutdown)
			}
		}
	}
}

// request runs one control command inside the loop. Commands that finish
// later (up, down, restart, shutdown) keep ev.reply and answer then.
func (s *Server) request(ev evRequest) {
	reply := func(r control.Reply, err error) {
		if err != nil {
			r = control.Failure(err)
		}
		r.Done = true
		ev.reply <- r
	}
	req := ev.req
	if s.shutdown != nil && req.Op != control.OpStatus {
		if req.Op == control.OpShutdown {
			s.shutdown.replies = append(s.shutdown.replies, ev.reply)
			return
		}
		reply(control.Reply{}, control.ErrShutdown)
		return
	}
	switch req.Op {
	case control.OpStatus:
		st, err := s.statuses(req.Label)
		reply(control.Reply{Services: st}, err)
	case control.OpShutdown:
		s.beginShutdown(ev.reply)
	case control.OpUp:
		s.up(req, ev.reply)
	case control.OpDown:
		s.down(req.Label, ev.reply)
	case control.OpRestart:
		s.restart(req.Label, ev.reply)
	case control.OpUpdate:
		s.startUpdate(req, ev)
	case control.OpClone, control.OpUnclone:
		m, err := s.clone(req.Label, req.Op == control.OpClone)
		reply(control.Reply{Message: m}, err)
	default:
		reply(control.Reply{}, fmt.Errorf("%w: %q", control.ErrInvalid, req.Op))
	}
}

func fail(r chan<- control.Reply, err error) { r <- control.Failure(err) }

// up starts a service, adding it to the table if it is new. The reply
// comes when its init has succeeded or failed.
func (s *Server) up(req control.Request, r chan<- control.Reply) {
	label := req.Label
	svc, known := s.services[label]
	if known && svc.state != control.StateDown && svc.state != control.StateFailed {
		fail(r, control.Errorf(control.CodeRefused, "%s is already up (%s)", label, svc.state))
		return
	}
	var base Spec
	if known {
		base = svc.spec
	} else {
		if req.Spec == nil || req.Spec.Binary == nil {
			fail(r, fmt.Errorf("%w %q: give --binary to add it", control.ErrUnknown, label))
			return
		}
		if err := CheckLabel(label); err != nil {
			fail(r, control.Errorf(control.CodeInvalid, "%w", err))
			return
		}
		base = Spec{Label: label, Period: DefaultPeriod}
	}
	spec, err := base.Apply(req.Spec)
	if err != nil {
		fail(r, control.Errorf(control.CodeInvalid, "%w", err))
		return
	}
	for _, d := range spec.Depends {
		if d == label {
			continue // a cycle: Validate says so
		}
		dep, ok := s.services[d]
		switch {
		case !ok:
			fail(r, fmt.Errorf("dependency %q: %w", d, control.ErrUnknown))
			return
		case dep.state != control.StateRunning:
			fail(r, control.Errorf(control.CodeRefused, "dependency %s is not running (%s)", d, dep.state))
			return
		}
	}
	if err := Validate(s.tableWith(spec)); err != nil {
		fail(r, control.Errorf(control.CodeInvalid, "%w", err))
		return
	}
	if err := checkBinary(spec.Binary); err != nil {
		fail(r, control.Errorf(control.CodeInvalid, "%w", err))
		return
	}
	if !known {
		svc = s.add(spec)
	} else {
		s.dropStandby(svc) // it runs the old spec
		svc.spec = spec.withDefaults()
	}
	if req.Spec != nil && req.Spec.Has("standby") {
		svc.wantStandby = spec.Standby
	}
	svc.lastExit = ""
	svc.fails = 0
	svc.history = nil
	svc.started = false
	svc.upWaiters = append(svc.upWaiters, r)
	s.spawn(svc)
}

// tableWith returns the specs of the table with spec added or in place
// of its label's.
func (s *Server) tableWith(spec Spec) []Spec {
	table := make([]Spec, 0, len(s.order)+1)
	for _, l := range s.order {
		if l != spec.Label {
			table = append(table, s.services[l].spec)
		}
	}
	return append(table, spec)
}

func (s *Server) down(label string, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	if svc.update != nil {
		fail(r, fmt.Errorf("%s is being updated: %w; try again when the update is done", label, control.ErrBusy))
		return
	}
	s.replyUp(svc, control.Reply{Err: label + ": stopped by down"})
	s.dropStandby(svc)
	s.stop(svc, func() {
		svc.state = control.StateDown
		s.dropFDStore(svc)
		r <- control.Reply{Done: true, Message: label + " down"}
	})
}

// restart stops a running service gracefully and starts it again; for a
// failed, backing-off or down service it is a start with cleared backoff.
func (s *Server) restart(label string, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	if svc.state == control.StateStopping || svc.update != nil {
		fail(r, fmt.Errorf("%s is %s: %w", label, svc.state, control.ErrBusy))
		return
	}
	if dep := s.missingDep(svc); dep != "" {
		fail(r, fmt.Errorf("dependency %s is not running", dep))
		return
	}
	s.replyUp(svc, control.Reply{Err: label + ": restarted"})
	s.dropStandby(svc)
	s.stop(svc, func() {
		svc.fails = 0
		svc.history = nil
		svc.lastExit = ""
		svc.upWaiters = append(svc.upWaiters, r)
		if svc.started {
			svc.restarts++
		}
		s.spawn(svc)
	})
}
