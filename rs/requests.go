package rs

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/reincarnation/rs/rs/control"
)

// Handle answers one control request (a control.Handler). It runs on the
// connection's goroutine: what may block (a look at a new binary, rs's
// own /proc figures for status) happens here; the request goes to the
// loop, whose progress lines it relays until the loop's reply.
func (s *Server) Handle(req control.Request, peer control.Peer, progress func(string)) control.Reply {
	if err := precheck(req); err != nil {
		return control.Failure(err)
	}
	if req.Op == control.OpReload {
		return s.handleReload(peer) // reads the file here, off the loop
	}
	if req.Op == control.OpUpdateSelf || req.Op == control.OpUpdateSelfResult {
		return s.handleUpdateSelf(req, peer, progress)
	}
	prog := make(chan string, 16)
	reply := make(chan control.Reply, 1)
	s.post(evRequest{req: req, peer: peer, reply: reply, prog: prog})
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

// precheck looks at a binary a request names before the loop sees the
// request: a stat can block (a hung network or FUSE mount), the loop must
// not. The process's own start checks again.
func precheck(req control.Request) error {
	switch {
	case req.Op == control.OpUp && req.Spec != nil && req.Spec.Binary != nil && filepath.IsAbs(*req.Spec.Binary):
		if err := checkBinary(*req.Spec.Binary); err != nil {
			return control.Errorf(control.CodeInvalid, "%w", err)
		}
	case req.Op == control.OpUpdate && req.Binary != "" && filepath.IsAbs(req.Binary):
		if err := checkBinary(req.Binary); err != nil {
			return control.Errorf(control.CodeInvalid, "update %s: %w (nothing changed)", req.Label, err)
		}
	}
	if req.Op == control.OpUp && req.Spec != nil && own.root {
		// The user database, looked up here rather than on the loop; the
		// start looks again.
		if u := req.Spec.User; u != nil {
			if _, err := lookupUser(*u); err != nil {
				return control.Errorf(control.CodeInvalid, "%w", err)
			}
		}
		if g := req.Spec.Group; g != nil {
			if _, err := lookupGroup(*g); err != nil {
				return control.Errorf(control.CodeInvalid, "%w", err)
			}
		}
	}
	return nil
}

// instanceOf returns the live instance whose processes peer is one of,
// or nil: the peer is not in any service's tree.
func (s *Server) instanceOf(peer control.Peer) *instance {
	for inst := range s.live {
		if inInstance(peer, inst.pid(), inst.cgroup) {
			return inst
		}
	}
	return nil
}

// inInstance tells whether peer is one of an instance's processes: in
// the process group the instance leads (pgid, its pid; 0 while it
// spawns), or, where the instance has a cgroup of its own (cgroup, as
// /proc/<pid>/cgroup spells it), in that cgroup or one below it. A peer
// without a pid is rs's own caller, not a process.
func inInstance(peer control.Peer, pgid int, cgroup string) bool {
	if peer.Pid <= 0 {
		return false
	}
	if pgid > 0 && peer.Pgid == pgid {
		return true
	}
	return cgroup != "" && inCgroup(peer.Cgroup, cgroup)
}

// inCgroup: cgroup path cg is leaf or below it.
func inCgroup(cg, leaf string) bool { return cg == leaf || strings.HasPrefix(cg, leaf+"/") }

func fail(r chan<- control.Reply, err error) { answer(r, control.Failure(err)) }

// answer sends the loop's reply to a request. Every request gets one,
// into a channel with room for it; a second would be a bug, and is
// dropped rather than left to block the loop.
func answer(r chan<- control.Reply, rep control.Reply) {
	rep.Done = true
	select {
	case r <- rep:
	default:
		slog.Error("a second reply to one request dropped: a bug in rs", "reply", rep.Message+rep.Err)
	}
}

// request runs one control command inside the loop. Commands that finish
// later (up, down, restart, update, clone, shutdown) keep ev.reply and
// answer then.
func (s *Server) request(ev evRequest) {
	req := ev.req
	if err := s.refused(req.Op, ev.peer); err != nil {
		fail(ev.reply, err)
		return
	}
	if s.shutdown != nil && req.Op != control.OpStatus {
		if req.Op == control.OpShutdown {
			s.shutdown.replies = append(s.shutdown.replies, ev.reply)
			return
		}
		fail(ev.reply, control.ErrShutdown)
		return
	}
	if s.self != nil && req.Op != control.OpStatus {
		fail(ev.reply, control.Errorf(control.CodeBusy, "rs is updating itself; try again"))
		return
	}
	if err := s.busyRemoving(req); err != nil {
		fail(ev.reply, err)
		return
	}
	switch req.Op {
	case control.OpStatus:
		st, err := s.statuses(req.Label)
		if err != nil {
			fail(ev.reply, err)
			return
		}
		answer(ev.reply, control.Reply{Services: st})
	case control.OpShutdown:
		s.beginShutdown(ev.reply)
	case control.OpReopenLogs:
		s.ReopenLogs()
		answer(ev.reply, control.Reply{Message: "log files reopened"})
	case control.OpUp:
		s.up(req, ev.reply)
	case control.OpDown:
		s.down(req.Label, ev.reply)
	case control.OpRestart:
		s.restart(req.Label, ev.reply)
	case control.OpUpdate:
		s.startUpdate(ev)
	case control.OpClone, control.OpUnclone:
		s.clone(req.Label, req.Op == control.OpClone, ev.reply)
	case control.OpSignal:
		s.signalService(req, ev.reply)
	case control.OpRemove:
		s.remove(req.Label, ev.reply)
	default:
		fail(ev.reply, fmt.Errorf("%w: %q", control.ErrInvalid, req.Op))
	}
}

// refused says why peer may not ask for op: it is a process of a service
// whose config does not let it control rs.
func (s *Server) refused(op string, peer control.Peer) error {
	if inst := s.instanceOf(peer); inst != nil && !inst.spec.Control {
		return control.Errorf(control.CodePermission,
			"%s refused: pid %d is a process of service %s, which may not control rs (its config has no control = true)",
			op, peer.Pid, inst.label())
	}
	return nil
}

// up starts a service, adding it to the table if it is new. The reply
// comes when its init has succeeded or failed.
func (s *Server) up(req control.Request, r chan<- control.Reply) {
	label := req.Label
	svc, known := s.services[label]
	if known {
		if st := svc.state(); st != control.StateDown && st != control.StateFailed {
			fail(r, control.Errorf(control.CodeRefused, "%s is already up (%s)", label, st))
			return
		}
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
		case dep.state() != control.StateRunning:
			fail(r, control.Errorf(control.CodeRefused, "dependency %s is not running (%s)", d, dep.state()))
			return
		}
	}
	if err := Validate(s.tableWith(spec)); err != nil {
		fail(r, control.Errorf(control.CodeInvalid, "%w", err))
		return
	}
	if !known {
		svc = s.add(spec)
	} else {
		s.dropStandby(svc) // it runs the old spec
		if listenersChanged(svc.spec, spec) {
			s.closeListeners(svc) // the next spawn makes the new ones
		}
		svc.spec = spec.withDefaults()
		if svc.logFiles.Stdout != nil {
			s.setLog(svc) // new log settings for the pipes it still holds
		}
		if len(svc.downWaiters) > 0 {
			s.answerDown(svc) // it is down; what it stopped with it may still be stopping
		}
	}
	if req.Spec != nil && req.Spec.Has("standby") {
		svc.wantStandby = spec.Standby
	}
	svc.ranOnce = false // a first start: fresh init, and a failure fails it
	s.cleanSlate(svc)
	svc.upWaiters = append(svc.upWaiters, r)
	s.spawnPrimary(svc)
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

// down stops a service gracefully, and first every running service that
// depends on it (as systemd does): a dependent cannot work without it.
// They all stay down until `up`. The reply comes once the service is down.
func (s *Server) down(label string, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	deps := s.dependentsOf(label)
	for _, d := range append([]*service{svc}, deps...) {
		if d.update != nil {
			fail(r, fmt.Errorf("%s is being updated: %w; try again when the update is done", d.spec.Label, control.ErrBusy))
			return
		}
	}
	var also []string
	for _, d := range append(deps, svc) {
		if d != svc && d.primary != nil {
			also = append(also, d.spec.Label)
			svc.downAlso = append(svc.downAlso, d)
		}
		stoppedByDown := fmt.Errorf("%w: %s: stopped by down", control.ErrFailed, d.spec.Label)
		s.replyUp(d, control.Failure(stoppedByDown))
		s.dropStandby(d)
		s.takeDown(d, stoppedByDown)
	}
	if len(svc.downWaiters) == 0 {
		s.downsPending++
		svc.downMsg = label + " down"
		if len(also) > 0 {
			svc.downMsg += " (and what depends on it: " + strings.Join(also, ", ") + ")"
		}
	}
	svc.downWaiters = append(svc.downWaiters, r)
	s.stopStep()
	s.checkDowns()
}

// restart stops a running service gracefully and starts it again; for a
// failed, backing-off or down service it is a start with cleared backoff.
func (s *Server) restart(label string, r chan<- control.Reply) {
	svc, ok := s.services[label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, label))
		return
	}
	if st := svc.state(); st == control.StateStopping || svc.update != nil || svc.restartWant {
		fail(r, fmt.Errorf("%s is %s: %w", label, st, control.ErrBusy))
		return
	}
	if dep := s.missingDep(svc); dep != "" {
		fail(r, control.Errorf(control.CodeRefused, "dependency %s is not running", dep))
		return
	}
	s.replyUp(svc, control.Failure(fmt.Errorf("%w: %s: restarted", control.ErrFailed, label)))
	s.dropStandby(svc)
	svc.restartWaiters = append(svc.restartWaiters, r)
	if p := svc.primary; p != nil {
		svc.restartWant = true
		s.stopInstance(p)
		return
	}
	s.restartNow(svc)
}

// cleanSlate forgets what the policy remembers of a service's past
// (failures, backoff, a wish to have it down), for `up` and `restart`.
func (s *Server) cleanSlate(svc *service) {
	s.disarm(svc, tBackoff)
	svc.fails = 0
	svc.history = nil
	svc.lastExit = ""
	svc.failed = false
	svc.waiting = false
	svc.stopWant = false
}

// restartNow starts the service again with a clean slate.
func (s *Server) restartNow(svc *service) {
	s.cleanSlate(svc)
	svc.upWaiters = append(svc.upWaiters, svc.restartWaiters...)
	svc.restartWaiters = nil
	if svc.ranOnce {
		svc.restarts++
	}
	s.spawnPrimary(svc)
}
