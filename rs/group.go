package rs

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// A group update (`service update a b c`) is MINIX 3's multi-component
// update: one update struct per member, as for a service alone, that
// commit together or roll back together.
//
//	spawn every new instance          (each waits in hello)
//	prepare member 0, then 1, ...     (dependents first; each its own maxtime;
//	                                   a ready member stays quiescent, its
//	                                   state held, while the next prepares)
//	init every new instance           (dependencies first, each with its state)
//	every init succeeded: commit all  (dependencies first)
//	any step of any member fails:     every member rolls back, dependencies
//	                                  resumed first; the reply names the member
//
// The flags apply to every member: --binary is the new binary of each
// (several instances of one program), --state and --maxtime hold for each
// member's own prepare, --discard-state for each init. Only sef services
// can join: the other types are replaced, not updated, and a replacement
// cannot wait for the others' verdict.
type group struct {
	members    []*update // in prepare order: dependents first
	labels     []string  // as the command gave them
	asked      int       // members asked to prepare so far
	begin      time.Time
	reply      chan<- control.Reply
	committing bool // the commit runs: commit ends each member for good
	done       bool // committed or rolled back
}

// startGroup handles `service update` of several labels: every member is
// checked before anything starts.
func (s *Server) startGroup(ev evRequest) {
	req := ev.req
	labels := append([]string{req.Label}, req.Group...)
	var (
		svcs  = map[string]*service{}
		specs = map[string]Spec{}
		state int
		max   time.Duration
	)
	for _, l := range labels {
		if _, dup := svcs[l]; dup {
			fail(ev.reply, control.Errorf(control.CodeInvalid, "update %s: %s named twice", strings.Join(labels, " "), l))
			return
		}
		svc, spec, st, mt, err := s.updateArgs(l, req)
		if err == nil && s.removing[svc] != nil {
			err = fmt.Errorf("%s is being removed: %w", l, control.ErrBusy)
		}
		if err == nil && spec.Type != TypeSef {
			err = control.Errorf(control.CodeRefused,
				"%s is type %s, which has no live update (it is replaced, not updated): it cannot join a group update; update it alone", l, spec.Type)
		}
		if err != nil {
			fail(ev.reply, fmt.Errorf("update %s: %w (nothing changed)", strings.Join(labels, " "), err))
			return
		}
		svcs[l], specs[l], state, max = svc, spec, st, mt
	}
	order := groupOrder(labels, func(l string) []string {
		if svc := s.services[l]; svc != nil {
			return svc.spec.Depends
		}
		return nil
	})
	g := &group{labels: labels, begin: time.Now(), reply: ev.reply}
	for _, l := range order {
		u := newUpdate(svcs[l], specs[l], state, max, req.DiscardState, nil, ev.prog)
		u.grp = g
		g.members = append(g.members, u)
	}
	s.log.Info("group update", "label", strings.Join(labels, ","), "prepare_order", strings.Join(order, ","))
	progress(ev.prog, fmt.Sprintf("group update of %s: prepare order %s (dependents first); commits only if every member's new instance succeeds",
		strings.Join(labels, " "), strings.Join(order, " ")))
	for _, u := range g.members {
		s.launchUpdate(u)
	}
}

// groupOrder orders a group's labels for the prepare: a member before
// every member it depends on, directly or through services outside the
// group (depends gives a label's dependencies); otherwise as given. A
// cycle (Validate keeps them out of the table) keeps the given order.
func groupOrder(labels []string, depends func(string) []string) []string {
	reach := map[string]map[string]bool{} // what each member depends on, transitively
	for _, l := range labels {
		seen := map[string]bool{}
		stack := slices.Clone(depends(l))
		for len(stack) > 0 {
			d := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[d] {
				continue
			}
			seen[d] = true
			stack = append(stack, depends(d)...)
		}
		reach[l] = seen
	}
	left := slices.Clone(labels)
	var order []string
	for len(left) > 0 {
		pick := 0 // a cycle: the first one left
		for i, l := range left {
			needed := false
			for _, m := range left {
				if m != l && reach[m][l] {
					needed = true
					break
				}
			}
			if !needed {
				pick = i
				break
			}
		}
		order = append(order, left[pick])
		left = slices.Delete(left, pick, pick+1)
	}
	return order
}

// progress sends a progress line to a request's client, never waiting.
func progress(prog chan<- string, p string) {
	select {
	case prog <- p:
	default:
	}
}

// groupHello: a member's new instance waits for its state. The first
// prepare starts once every member's new instance has come that far, so
// no old instance is quiescent while a new binary still starts.
func (s *Server) groupHello(u *update) {
	g := u.grp
	s.disarm(u, tUpdate) // the others' steps bound the wait from here
	if g.done || g.asked > 0 {
		return
	}
	for _, m := range g.members {
		if m.new.phase != phaseHello {
			return
		}
	}
	s.groupNext(g)
}

// groupReady: a member's old instance is quiescent and handed over its
// state; it is held until every member is ready.
func (s *Server) groupReady(u *update, names []string, files []*os.File) {
	u.readyAt = time.Now()
	s.disarm(u, tUpdate)
	u.heldNames, u.heldFiles = names, files
	u.progress(fmt.Sprintf("ready: old instance quiescent after %v, its state and %d fds held until every member is ready",
		time.Since(u.begin).Round(time.Microsecond), len(files)-1))
	s.groupNext(u.grp)
}

// groupNext asks the next member to prepare or, once every one is ready,
// gives each new instance its init, dependencies first.
func (s *Server) groupNext(g *group) {
	if g.asked < len(g.members) {
		u := g.members[g.asked]
		g.asked++
		s.askPrepare(u)
		return
	}
	for _, u := range slices.Backward(g.members) {
		if g.done { // an init that could not be sent rolled the group back
			return
		}
		lu := make([]string, len(u.heldNames))
		for i, n := range u.heldNames {
			lu[i] = "lu:" + n
		}
		files := u.heldFiles
		u.heldNames, u.heldFiles = nil, nil
		u.progress(fmt.Sprintf("handing over state and %d fds to pid %d", len(files)-1, u.new.pid()))
		s.giveInit(u.new, initUpdate, lu, files)
		s.closeHeld(u.svc, files...)
	}
}

// groupInited: a member's new instance's init succeeded. It waits,
// initing, for the others' (their init deadlines bound the wait); the
// last one commits the group.
func (s *Server) groupInited(u *update) {
	g := u.grp
	u.inited = true
	for _, m := range g.members {
		if !m.inited {
			u.progress(fmt.Sprintf("new instance pid %d ready; waiting for the other members", u.new.pid()))
			return
		}
	}
	u.progress(fmt.Sprintf("new instance pid %d ready; every member is", u.new.pid()))
	g.committing, g.done = true, true
	var lines []string
	for _, m := range slices.Backward(g.members) {
		lines = append(lines, fmt.Sprintf("%s pid %d -> %d", m.svc.spec.Label, m.old.pid(), m.new.pid()))
		s.commit(m)
	}
	took := time.Since(g.begin).Round(time.Microsecond)
	s.log.Info("group update committed", "label", strings.Join(g.labels, ","), "took", took)
	answer(g.reply, control.Reply{Message: fmt.Sprintf("%s updated as one in %v: %s",
		strings.Join(g.labels, " "), took, strings.Join(lines, ", "))})
}

// groupRollback: member failed (why); every member rolls back, the old
// instances resumed dependencies first.
func (s *Server) groupRollback(g *group, failed *update, why string) {
	if g.done {
		return
	}
	g.done = true
	who := failed.svc.spec.Label
	for _, m := range slices.Backward(g.members) {
		if m == failed {
			s.undo(m, why)
			continue
		}
		s.undo(m, fmt.Sprintf("group update: %s failed: %s", who, why))
	}
	s.log.Warn("group update rolled back", "label", strings.Join(g.labels, ","), "failed", who, "reason", why)
	answer(g.reply, control.Failure(fmt.Errorf("update %s rolled back: %s: %s; every member's old instance serves on",
		strings.Join(g.labels, " "), who, why)))
}
