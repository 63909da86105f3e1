package rs

import (
	"slices"

	"github.com/reincarnation/rs/rs/control"
)

// Stopping in dependency order. `down` and shutdown both mark services as
// wanted down (takeDown); stopStep stops each of them once no service
// that depends on it still has an instance, so dependents stop first, and
// if they wait for each other in a circle (a cycle, which Validate keeps
// out of the table) the rest stop in table order, so that a shutdown
// always finishes. A `down` is answered once its service and the
// dependents it took along have no instance left (checkDowns).

// beginShutdown stops everything, dependents before their dependencies.
func (s *Server) beginShutdown(reply chan<- control.Reply) {
	if s.shutdown == nil {
		s.log.Info("shutting down")
		s.shutdown = &shutdownState{}
		for _, label := range s.order {
			svc := s.services[label]
			s.noteShutdownFailed(svc)
			if svc.update != nil {
				s.rollback(svc.update, "rs is shutting down")
			}
			s.dropStandby(svc)
			s.takeDown(svc, control.ErrShutdown)
			s.replyUp(svc, control.Failure(control.ErrShutdown))
			s.replyClone(svc)
		}
		s.stopStep()
	}
	if reply != nil {
		s.shutdown.replies = append(s.shutdown.replies, reply)
	}
}

// stopped: a stop rs asked for has ended; a restart waiting for it goes
// on (a down is answered by checkDowns).
func (s *Server) stopped(svc *service) {
	if svc.restartWant {
		svc.restartWant = false
		s.restartNow(svc)
	}
}

// takeDown makes svc stay down: no backoff, no wait for dependencies, and
// its instance stopped once none of its dependents runs (stopStep).
func (s *Server) takeDown(svc *service, why error) {
	s.disarm(svc, tBackoff)
	s.disarm(svc, tRetry)
	svc.waiting = false
	svc.restartWant = false
	for _, w := range svc.restartWaiters {
		answer(w, control.Failure(why))
	}
	svc.restartWaiters = nil
	svc.failed = svc.failed && s.shutdown != nil
	svc.stopWant = true
	s.stopsPending = true
}

// stopStep stops every service rs wants down none of whose dependents
// still has an instance: dependents first. If nothing can go first (a
// cycle, which Validate keeps out of the table, but shutdown must finish
// whatever the table holds), the rest stop in table order.
func (s *Server) stopStep() {
	if !s.stopsPending {
		return
	}
	pending, stopping := false, false
	var blocked []*service
	// How many services with an instance depend on each label: counted
	// once per step, not once per service (a shutdown of thousands of
	// services calls stopStep at each instance's end).
	live := map[string]int{}
	for _, other := range s.services {
		if other.primary != nil {
			for _, d := range other.spec.Depends {
				live[d]++
			}
		}
	}
	for _, label := range s.order {
		svc := s.services[label]
		p := svc.primary
		if !svc.stopWant || p == nil {
			continue
		}
		pending = true
		if p.phase == phaseStopping {
			stopping = true
			continue
		}
		if live[label] > 0 {
			blocked = append(blocked, svc)
			continue
		}
		s.stopInstance(p)
		stopping = true
	}
	if !stopping && len(blocked) > 0 {
		s.log.Warn("dependents wait for each other; stopping them in table order", "services", len(blocked))
		for _, svc := range blocked {
			s.stopInstance(svc.primary)
		}
	}
	s.stopsPending = pending
}

// dependentsOf lists, dependents first, every service that depends on
// label directly or through others.
func (s *Server) dependentsOf(label string) []*service {
	var out []*service
	seen := map[string]bool{label: true}
	var visit func(l string)
	visit = func(l string) {
		for _, name := range s.order {
			other := s.services[name]
			if seen[name] || !slices.Contains(other.spec.Depends, l) {
				continue
			}
			seen[name] = true
			visit(name)
			out = append(out, other)
		}
	}
	visit(label)
	return out
}

// checkDowns answers every `down` whose service, and the dependents it
// stopped with it, have no instance left: not the primary, nor a standby
// or an instance it replaced still on its way out, which may hold the
// service's listeners (a client could still connect). The fd store goes
// with a service that is down.
func (s *Server) checkDowns() {
	if s.downsPending == 0 {
		return
	}
	over := func(svc *service) bool { return svc.primary == nil && svc.instances == 0 }
	for _, label := range s.order {
		svc := s.services[label]
		if len(svc.downWaiters) == 0 || !over(svc) {
			continue
		}
		done := true
		for _, d := range svc.downAlso {
			done = done && over(d)
		}
		if done {
			s.answerDown(svc)
		}
	}
}

func (s *Server) answerDown(svc *service) {
	for _, d := range append(svc.downAlso, svc) {
		if d.stopWant && d.primary == nil {
			s.dropFDStore(d)
		}
	}
	for _, w := range svc.downWaiters {
		answer(w, control.Reply{Message: svc.downMsg})
	}
	svc.downWaiters, svc.downAlso = nil, nil
	s.downsPending--
}
