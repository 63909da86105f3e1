package rs

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// DefaultMaxTime is how long an instance may take to prepare for an
// update when the request does not say.
const DefaultMaxTime = 2 * time.Second

// update is a live update in progress: one per service at a time. The old
// instance stays the primary until the commit; the new one is incoming.
// Its step is the incoming instance's phase: spawning or spawned (waiting
// for its hello), hello (the old one is asked to prepare), initing (the
// state was handed over; the new one's init decides).
type update struct {
	svc     *service
	old     *instance
	new     *instance
	spec    Spec // the service's spec (defaults applied) with the new binary
	state   int
	maxTime time.Duration
	begin   time.Time
	// When the old instance was asked to prepare, and reported ready: with
	// begin and the commit they split the update into start, prepare and
	// the new instance's init (the last two are the pause clients see).
	prepareAt, readyAt time.Time
	reply              chan<- control.Reply
	prog               chan<- string
	pending            map[string]*os.File // fd-store entries from the new instance, kept until commit
	discard            bool                // commit even if the new instance leaves the state untaken
	t                  timers              // tUpdate

	// replace: the service's protocol has no live update (every type but
	// sef): the new instance starts beside the old one, fresh, and
	// replaces it once ready; the old one is then stopped gracefully.
	// No state moves. statusText is what the new one said meanwhile.
	replace    bool
	statusText string

	// grp: the group update this is a member of (group.go); nil for a
	// service updated alone. A member's reply and progress are its
	// group's; held is the old instance's state and fds from its
	// lu-ready until every member is ready; inited, its new instance's
	// init succeeded and it waits for the others'.
	grp       *group
	heldNames []string
	heldFiles []*os.File
	inited    bool

	// base: the old instance streams a pre-copy base (precopy.go);
	// baseDoneAt is when it said it was done, baseBytes its size.
	base       bool
	baseDoneAt time.Time
	baseBytes  uint64
}

func (u *update) timerSlots() *timers { return &u.t }

// startUpdate handles `service update`: spawn the new binary first, then
// (on its hello) ask the old instance to prepare.
func (s *Server) startUpdate(ev evRequest) {
	if len(ev.req.Group) > 0 {
		s.startGroup(ev)
		return
	}
	svc, spec, state, maxTime, err := s.updateArgs(ev.req.Label, ev.req)
	if err != nil {
		fail(ev.reply, err)
		return
	}
	s.beginUpdate(svc, spec, state, maxTime, ev.req.DiscardState, ev.reply, ev.prog)
}

// updateArgs checks that label's service may be updated as req asks, and
// says to what: its spec with the new binary, the state and maxtime.
func (s *Server) updateArgs(label string, req control.Request) (*service, Spec, int, time.Duration, error) {
	svc, ok := s.services[label]
	if !ok {
		return nil, Spec{}, 0, 0, fmt.Errorf("%w %q", control.ErrUnknown, label)
	}
	if svc.update != nil {
		return nil, Spec{}, 0, 0, fmt.Errorf("%s: an update is already in progress: %w", label, control.ErrBusy)
	}
	if st := svc.state(); st != control.StateRunning {
		return nil, Spec{}, 0, 0, control.Errorf(control.CodeRefused, "%s is %s: only a running service can be updated", label, st)
	}
	spec := svc.spec
	if req.Binary != "" {
		spec.Binary = req.Binary
	}
	state := req.State
	if state == 0 {
		state = 1
	}
	if state < 0 || state > control.MaxState {
		return nil, Spec{}, 0, 0, control.Errorf(control.CodeInvalid, "state %d: out of range (1 to %d)", state, control.MaxState)
	}
	maxTime := req.MaxTime
	if maxTime == 0 {
		maxTime = DefaultMaxTime
	}
	if maxTime < 0 {
		return nil, Spec{}, 0, 0, control.Errorf(control.CodeInvalid, "maxtime %v: must be positive", maxTime)
	}
	if err := validateSpec(spec); err != nil {
		return nil, Spec{}, 0, 0, control.Errorf(control.CodeInvalid, "update %s: %w (nothing changed)", label, err)
	}
	return svc, spec, state, maxTime, nil
}

// beginUpdate starts the update of running svc to spec (checked): the
// new instance is spawned; reply gets the commit or the rollback.
func (s *Server) beginUpdate(svc *service, spec Spec, state int, maxTime time.Duration, discard bool,
	reply chan<- control.Reply, prog chan<- string) {
	s.launchUpdate(newUpdate(svc, spec, state, maxTime, discard, reply, prog))
}

func newUpdate(svc *service, spec Spec, state int, maxTime time.Duration, discard bool,
	reply chan<- control.Reply, prog chan<- string) *update {
	return &update{svc: svc, old: svc.primary, spec: spec, state: state, maxTime: maxTime,
		begin: time.Now(), reply: reply, prog: prog, pending: map[string]*os.File{},
		discard: discard, replace: spec.Type != TypeSef}
}

// launchUpdate puts u in its service and spawns its new instance.
func (s *Server) launchUpdate(u *update) {
	svc, spec := u.svc, u.spec
	s.dropStandby(svc) // it runs the old binary; a new one follows the update
	svc.update = u
	if u.replace {
		u.progress(fmt.Sprintf("no state transfer (type %s): a new instance starts beside the old one, which serves until the new one is ready (init_timeout %v)",
			spec.Type, spec.InitTimeout))
	}
	// The new instance's init waits until the old one's state is ready;
	// until then it does exec and runtime start-up, nothing more.
	u.new = s.spawnInstance(svc, roleIncoming, spec)
	s.arm(u, tUpdate, spec.InitTimeout)
}

func (u *update) progress(p string) {
	if u.grp != nil {
		p = u.svc.spec.Label + ": " + p // whose step, among the group's
	}
	select {
	case u.prog <- p:
	default: // a slow client loses progress lines, never blocks the loop
	}
}

// updateSpawned: the new instance's process runs.
func (s *Server) updateSpawned(u *update) {
	s.log.Info("update: new instance started", "label", u.svc.spec.Label, "pid", u.new.pid(), "binary", u.spec.Binary)
	s.emit(control.Event{Label: u.svc.spec.Label, Event: EventUpdateStarted, Pid: u.new.pid(), Detail: u.spec.Binary})
	u.progress(fmt.Sprintf("new instance started: pid %d (%s)", u.new.pid(), u.spec.Binary))
	if u.replace {
		// Nothing to wait for from the old one: the new one's own start
		// (its init deadline) decides.
		s.disarm(u, tUpdate)
		u.prepareAt, u.readyAt = time.Now(), time.Now()
		s.giveInit(u.new, initRestart, nil, nil)
	}
}

// updateTimer: a step of the update took too long.
func (s *Server) updateTimer(u *update) {
	switch u.new.phase {
	case phaseSpawning, phaseSpawned:
		s.rollback(u, fmt.Sprintf("new instance did not start within %v", u.spec.InitTimeout))
	case phaseHello:
		if u.base && u.baseDoneAt.IsZero() {
			s.rollback(u, fmt.Sprintf("pre-copy base not streamed within %v", baseTime(u.maxTime)))
			return
		}
		s.rollback(u, fmt.Sprintf("prepare timed out after %v (state %d not reached)", u.maxTime, u.state))
	}
}

// updateHello: the new instance is up to where it needs the state.
func (s *Server) updateHello(u *update) {
	if u.replace {
		return // it was given its start at once (updateSpawned)
	}
	if u.grp != nil {
		s.groupHello(u)
		return
	}
	s.askPrepare(u)
}

// askPrepare asks u's old instance to prepare, within maxtime, after
// a pre-copy base where both instances can stream one (prepareOld).
func (s *Server) askPrepare(u *update) {
	if err := s.prepareOld(u); err != nil {
		s.rollback(u, "cannot ask the old instance to prepare: "+err.Error())
		return
	}
	u.prepareAt = time.Now()
	if u.base {
		// maxtime bounds the pause, so it starts once the base is out.
		s.arm(u, tUpdate, baseTime(u.maxTime))
		u.progress(fmt.Sprintf("preparing: state %d, maxtime %v from the end of the pre-copy base, which the old instance streams to the new one while it serves (at most %v)",
			u.state, u.maxTime, baseTime(u.maxTime)))
		return
	}
	s.arm(u, tUpdate, u.maxTime)
	u.progress(fmt.Sprintf("preparing: state %d, maxtime %v", u.state, u.maxTime))
}

// stateReady: the old instance reached the state and handed over its
// state and fds (files, ours to close once they are on their way).
func (s *Server) stateReady(u *update, names []string, files []*os.File) {
	if u.grp != nil {
		s.groupReady(u, names, files)
		return
	}
	defer s.closeHeld(u.svc, files...)
	u.readyAt = time.Now()
	s.disarm(u, tUpdate) // from here the new instance's own init deadline rules
	what := "state"
	if u.base {
		what = fmt.Sprintf("the delta since the %s base", byteSize(u.baseBytes))
	}
	u.progress(fmt.Sprintf("ready: old instance quiescent after %v, handing over %s and %d fds",
		time.Since(u.begin).Round(time.Microsecond), what, len(files)-1))
	lu := make([]string, len(names))
	for i, n := range names {
		lu[i] = "lu:" + n
	}
	s.giveInit(u.new, initUpdate, lu, files)
}

// notTaken: why the update must roll back although the new instance's
// init succeeded, from what it left untaken; "" when it may commit. A new
// binary that never reads the old one's state would lose it for good.
func (u *update) notTaken(left []string) string {
	if u.discard {
		return ""
	}
	for _, w := range left {
		if w == leftState {
			return "new instance did not take the state (use --discard-state to drop it)"
		}
	}
	if len(left) > 0 {
		return "new instance did not take the fds it was handed (use --discard-state to drop them)"
	}
	return ""
}

// commit: the new instance runs; the old one is stopped.
func (s *Server) commit(u *update) {
	if g := u.grp; g != nil && !g.committing {
		s.groupInited(u)
		return
	}
	svc := u.svc
	s.disarm(u, tUpdate)
	svc.update = nil
	old := u.old
	svc.spec = u.spec
	var replaced []*os.File
	for name, f := range u.pending {
		if prev, ok := svc.fdstore[name]; ok {
			replaced = append(replaced, prev)
		}
		svc.fdstore[name] = f
	}
	s.closeHeld(svc, replaced...)
	old.role = roleRetired
	u.new.role = rolePrimary
	svc.primary = u.new
	if u.replace {
		svc.statusText = u.statusText
	}
	s.ready(u.new)
	s.stopInstance(old)
	now := time.Now()
	gap := now.Sub(u.begin).Round(time.Microsecond)
	prep := u.prepareAt
	if u.base {
		prep = u.baseDoneAt // the base streamed while the old one served
	}
	s.log.Info("update committed", "label", svc.spec.Label, "old_pid", old.pid(), "new_pid", u.new.pid(), "took", gap,
		"start", u.prepareAt.Sub(u.begin).Round(time.Microsecond),
		"base", prep.Sub(u.prepareAt).Round(time.Microsecond), "base_bytes", u.baseBytes,
		"prepare", u.readyAt.Sub(prep).Round(time.Microsecond),
		"init", now.Sub(u.readyAt).Round(time.Microsecond))
	u.progress(fmt.Sprintf("committed: pid %d replaces pid %d", u.new.pid(), old.pid()))
	s.emit(control.Event{Label: svc.spec.Label, Event: EventUpdateCommitted, Pid: u.new.pid(),
		Detail: fmt.Sprintf("pid %d replaces pid %d in %v", u.new.pid(), old.pid(), gap)})
	msg := fmt.Sprintf("%s updated: pid %d -> %d in %v", svc.spec.Label, old.pid(), u.new.pid(), gap)
	if u.replace {
		msg += fmt.Sprintf("; no state transfer (type %s): the new instance started fresh, the old one is stopped gracefully", u.spec.Type)
	}
	if u.grp == nil { // a group answers for its members
		answer(u.reply, control.Reply{Message: msg})
	}
}

// rollback: the new instance is killed, the old one resumes untouched.
func (s *Server) rollback(u *update, why string) {
	if u.grp != nil {
		s.groupRollback(u.grp, u, why)
		return
	}
	s.undo(u, why)
	svc := u.svc
	if u.replace && svc.primary == u.old && u.old.phase == phaseRunning {
		why += fmt.Sprintf("; the new instance was stopped, pid %d serves on", u.old.pid())
	}
	answer(u.reply, control.Failure(fmt.Errorf("update %s rolled back: %s", svc.spec.Label, why)))
}

// undo ends u: its new instance is killed, what it held is closed and
// the old instance resumes untouched. why is the rollback's reason.
func (s *Server) undo(u *update, why string) {
	svc := u.svc
	s.disarm(u, tUpdate)
	svc.update = nil
	u.new.role = roleRetired // its end is expected, not a crash
	s.dropInstance(u.new)
	s.closeHeld(svc, slices.Collect(maps.Values(u.pending))...)
	s.closeHeld(svc, u.heldFiles...)
	u.heldFiles = nil
	if u.old.phase < phaseGone {
		if err := u.old.drv.cancel(); err != nil {
			s.sendFailed(u.old, err)
		}
	}
	if svc.primary == u.old && u.old.phase == phaseRunning {
		s.ensureStandby(svc)
	}
	s.log.Warn("update rolled back", "label", svc.spec.Label, "reason", why, "pid", u.old.pid())
	s.emit(control.Event{Label: svc.spec.Label, Event: EventUpdateRollback, Pid: u.old.pid(), Reason: why})
	u.progress("rolled back: " + why)
}
