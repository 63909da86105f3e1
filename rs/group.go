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
// commit together or roll back together. The members are cut into levels
// (groupLevels): a level holds the members no member left after it
// depends on, so dependents come first and members with no dependency
// between them go together.
//
//	spawn every new instance          (each waits in hello)
//	prepare level 0, then 1, ...      (every member of a level at once, each
//	                                   within its own maxtime; a ready member
//	                                   stays quiescent, its state held, while
//	                                   the next levels prepare)
//	init the last level, then ...     (dependencies first: a level's new
//	                                   instances get their init, with their
//	                                   state, once the level after it inited)
//	                                  (each init asks its instance to hold:
//	                                   it answers nothing until released)
//	every init succeeded: commit all  (dependencies first), each new
//	                                  instance released (lu-commit)
//	any step of any member fails:     every member rolls back, dependencies
//	                                  resumed first, the held new instances
//	                                  killed; the reply names the member
//
// The flags apply to every member: --binary is the new binary of each
// (several instances of one program), --state and --maxtime hold for each
// member's own prepare, --discard-state for each init. Only sef services
// can join: the other types are replaced, not updated, and a replacement
// cannot wait for the others' verdict.
//
// A new instance holds from its init to the commit, as MINIX's do: its
// init carries hold, and sef then accepts no connection, reads none
// handed over to it and delivers no work until lu-commit (pings are
// answered). One whose init succeeded while another member's is under
// way has so answered nothing a rollback would lose: the old instance
// kept its own copies of the listeners and connections, and what
// clients sent meanwhile waits in the kernel for whichever instance
// wins. A member whose init-result does not confirm the hold rolls the
// group back at once; a sef that predates hold cannot decode such an
// init and fails it, which rolls the group back too, before anything is
// lost. The hold is bounded by the other members' steps (each has its
// deadline); if rs dies meanwhile the held instance loses its channel
// and stops.
type group struct {
	members    []*update   // in prepare order: dependents first
	levels     [][]*update // members cut into levels, in prepare order
	labels     []string    // as the command gave them
	asked      bool        // the first level was asked to prepare
	prep       int         // the level preparing (len(levels): all ready)
	init       int         // the level initing
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
		svcs    = map[string]*service{}
		specs   = map[string]Spec{}
		state   int
		maxTime time.Duration
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
			if !strings.HasSuffix(err.Error(), "(nothing changed)") {
				err = fmt.Errorf("%w (nothing changed)", err)
			}
			fail(ev.reply, fmt.Errorf("update %s: %w", strings.Join(labels, " "), err))
			return
		}
		svcs[l], specs[l], state, maxTime = svc, spec, st, mt
	}
	levels := groupLevels(labels, func(l string) []string {
		if svc := s.services[l]; svc != nil {
			return svc.spec.Depends
		}
		return nil
	})
	g := &group{labels: labels, begin: time.Now(), reply: ev.reply}
	var order []string
	for _, level := range levels {
		var us []*update
		for _, l := range level {
			u := newUpdate(svcs[l], specs[l], state, maxTime, req.DiscardState, nil, ev.prog)
			u.grp = g
			us = append(us, u)
		}
		g.members = append(g.members, us...)
		g.levels = append(g.levels, us)
		order = append(order, strings.Join(level, " "))
	}
	s.log.Info("group update", "label", strings.Join(labels, ","), "prepare_order", strings.Join(order, ";"))
	progress(ev.prog, fmt.Sprintf("group update of %s: prepare [%s] (dependents first); commits only if every member's new instance succeeds",
		strings.Join(labels, " "), strings.Join(order, "] then [")))
	for _, u := range g.members {
		s.launchUpdate(u)
	}
}

// groupLevels cuts a group's labels into levels for the prepare: each
// level holds the labels that no label of a later level depends on,
// directly or through services outside the group (depends gives a
// label's dependencies), in the order given. A cycle (Validate keeps
// them out of the table) gives its labels a level each, in the order
// given.
func groupLevels(labels []string, depends func(string) []string) [][]string {
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
	var levels [][]string
	for len(left) > 0 {
		var level, rest []string
		for _, l := range left {
			needed := false
			for _, m := range left {
				if m != l && reach[m][l] {
					needed = true
					break
				}
			}
			if needed {
				rest = append(rest, l)
			} else {
				level = append(level, l)
			}
		}
		if len(level) == 0 { // a cycle
			level, rest = left[:1], left[1:]
		}
		levels = append(levels, level)
		left = rest
	}
	return levels
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
	if g.done || g.asked {
		return
	}
	for _, m := range g.members {
		if m.new.phase != phaseHello {
			return
		}
	}
	g.asked = true
	s.prepareLevel(g)
}

// prepareLevel asks every member of level g.prep to prepare.
func (s *Server) prepareLevel(g *group) {
	for _, u := range g.levels[g.prep] {
		if g.done { // a prepare that could not be sent rolled the group back
			return
		}
		s.askPrepare(u)
	}
}

// groupReady: a member's old instance is quiescent and handed over its
// state; it is held until every member is ready.
func (s *Server) groupReady(u *update, names []string, files []*os.File) {
	g := u.grp
	u.readyAt = time.Now()
	s.disarm(u, tUpdate)
	u.heldNames, u.heldFiles = names, files
	u.progress(fmt.Sprintf("ready: old instance quiescent after %v, its state and %d fds held until every member is ready",
		time.Since(u.begin).Round(time.Microsecond), len(files)-1))
	for _, m := range g.levels[g.prep] {
		if m.readyAt.IsZero() {
			return
		}
	}
	g.prep++
	if g.prep < len(g.levels) {
		s.prepareLevel(g)
		return
	}
	g.init = len(g.levels) - 1
	s.initLevel(g)
}

// initLevel gives every new instance of level g.init its init, with the
// state its old one handed over.
func (s *Server) initLevel(g *group) {
	for _, u := range g.levels[g.init] {
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
		if h, ok := u.new.drv.(holder); ok {
			h.holdNext() // it serves only at the commit
		}
		s.giveInit(u.new, initUpdate, lu, files)
		s.closeHeld(u.svc, files...)
	}
}

// groupInited: a member's new instance's init succeeded. It waits,
// initing, for the others' (their init deadlines bound the wait): once
// its level has inited, the level before it is inited; after the first
// level, the group commits.
func (s *Server) groupInited(u *update) {
	g := u.grp
	u.inited = true
	for _, m := range g.levels[g.init] {
		if !m.inited {
			u.progress(fmt.Sprintf("new instance pid %d ready; waiting for the other members", u.new.pid()))
			return
		}
	}
	if g.init > 0 {
		u.progress(fmt.Sprintf("new instance pid %d ready; waiting for the other members", u.new.pid()))
		g.init--
		s.initLevel(g)
		return
	}
	u.progress(fmt.Sprintf("new instance pid %d ready; every member is", u.new.pid()))
	g.committing, g.done = true, true
	var lines []string
	for _, m := range slices.Backward(g.members) {
		lines = append(lines, fmt.Sprintf("%s pid %d -> %d", m.svc.spec.Label, m.old.pid(), m.new.pid()))
		s.commit(m)
		s.release(m)
	}
	took := time.Since(g.begin).Round(time.Microsecond)
	s.log.Info("group update committed", "label", strings.Join(g.labels, ","), "took", took)
	answer(g.reply, control.Reply{Message: fmt.Sprintf("%s updated as one in %v: %s",
		strings.Join(g.labels, " "), took, strings.Join(lines, ", "))})
}

// release ends the hold of a committed member's new instance, now its
// service's primary: it serves from here. A send that fails is the
// primary's fault, as any.
func (s *Server) release(u *update) {
	h, ok := u.new.drv.(holder)
	if !ok || u.new.phase >= phaseStopping {
		return
	}
	if err := h.release(); err != nil {
		s.sendFailed(u.new, err)
		return
	}
	u.progress(fmt.Sprintf("pid %d released: it serves", u.new.pid()))
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
