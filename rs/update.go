package rs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
)

// DefaultMaxTime is how long an instance may take to prepare for an
// update when the request does not say.
const DefaultMaxTime = 2 * time.Second

// Update phases.
type updatePhase int

const (
	phaseHello   updatePhase = iota // new instance spawned, waiting for its hello
	phasePrepare                    // old instance asked to prepare
	phaseInit                       // state handed to the new instance, waiting for its init
)

// update is a live update in progress: one per service at a time. The
// old instance stays svc.inst until the commit.
type update struct {
	svc     *service
	old     *instance
	new     *instance
	spec    Spec // the service's spec (defaults applied) with the new binary
	state   int
	maxTime time.Duration
	phase   updatePhase
	timer   Timer
	begin   time.Time
	// When the old instance was asked to prepare, and reported ready: with
	// begin and the commit they split the update into start, prepare and
	// the new instance's init (the last two are the pause clients see).
	prepareAt, readyAt time.Time
	reply              chan<- control.Reply
	prog               chan<- string
	pending            map[string]*os.File // fd-store entries from the new instance, kept until commit
}

// startUpdate handles `service update`: spawn the new binary first, then
// (on its hello) ask the old instance to prepare.
func (s *Server) startUpdate(req control.Request, ev evRequest) {
	svc, ok := s.services[req.Label]
	if !ok {
		fail(ev.reply, fmt.Errorf("%w %q", control.ErrUnknown, req.Label))
		return
	}
	if svc.update != nil {
		fail(ev.reply, fmt.Errorf("%s: an update is already in progress: %w", req.Label, control.ErrBusy))
		return
	}
	if svc.state != control.StateRunning || svc.inst == nil || !svc.inst.running {
		fail(ev.reply, fmt.Errorf("%s is %s: only a running service can be updated", req.Label, svc.state))
		return
	}
	spec := svc.spec
	if req.Binary != "" {
		if !filepath.IsAbs(req.Binary) {
			fail(ev.reply, fmt.Errorf("binary %q: path must be absolute", req.Binary))
			return
		}
		spec.Binary = req.Binary
	}
	state := req.State
	if state == 0 {
		state = 1
	}
	if state < 0 {
		fail(ev.reply, fmt.Errorf("state %d: must be positive", state))
		return
	}
	maxTime := req.MaxTime
	if maxTime == 0 {
		maxTime = DefaultMaxTime
	}
	if maxTime < 0 {
		fail(ev.reply, fmt.Errorf("maxtime %v: must be positive", maxTime))
		return
	}
	if err := checkBinary(spec.Binary); err != nil {
		fail(ev.reply, fmt.Errorf("update %s: %w (nothing changed)", req.Label, err))
		return
	}
	s.dropStandby(svc) // it runs the old binary; a new one follows the update
	u := &update{svc: svc, old: svc.inst, spec: spec, state: state, maxTime: maxTime,
		begin: time.Now(), reply: ev.reply, prog: ev.prog, pending: map[string]*os.File{}}
	s.nextID++
	// The new instance's init waits until the old one's state is ready;
	// until then it has done exec and runtime start-up, nothing more.
	newInst, err := spawnInstance(s, svc, spec, s.nextID)
	if err != nil {
		fail(ev.reply, fmt.Errorf("update %s: %w (nothing changed)", req.Label, err))
		return
	}
	u.new = newInst
	svc.update = u
	svc.state = control.StateUpdating
	u.arm(s, spec.InitTimeout)
	s.log.Info("update: new instance started", "label", req.Label, "pid", newInst.proc.Pid(), "binary", spec.Binary)
	u.progress(fmt.Sprintf("new instance started: pid %d (%s)", newInst.proc.Pid(), spec.Binary))
}

func (u *update) progress(p string) {
	select {
	case u.prog <- p:
	default: // a slow client loses progress lines, never blocks the loop
	}
}

func (u *update) arm(s *Server, d time.Duration) {
	stopTimer(&u.timer)
	phase := u.phase
	u.timer = s.clock.AfterFunc(d, func() {
		s.post(evUpdateTimer{u: u, phase: phase})
	})
}

type evUpdateTimer struct {
	u     *update
	phase updatePhase
}

// updateTimer: a phase of the update took too long.
func (s *Server) updateTimer(ev evUpdateTimer) {
	u := ev.u
	if u.svc.update != u || u.phase != ev.phase {
		return
	}
	switch u.phase {
	case phaseHello:
		s.rollback(u, fmt.Sprintf("new instance did not start within %v", u.spec.InitTimeout))
	case phasePrepare:
		s.rollback(u, fmt.Sprintf("prepare timed out after %v (state %d not reached)", u.maxTime, u.state))
	}
}

// onHello: the new instance is up to where it needs the state.
func (s *Server) onHello(u *update) {
	if u.phase != phaseHello {
		return
	}
	u.phase = phasePrepare
	err := u.old.conn.TrySend(&msg.Message{Kind: msg.KindLUPrepare, State: uint32(u.state), MaxTime: int64(u.maxTime)})
	if err != nil {
		s.rollback(u, "cannot ask the old instance to prepare: "+err.Error())
		return
	}
	u.old.luAsked = true
	u.prepareAt = time.Now()
	u.arm(s, u.maxTime)
	u.progress(fmt.Sprintf("preparing: state %d, maxtime %v", u.state, u.maxTime))
}

// onReady: the old instance reached the state and handed over its state
// and fds (or refused). files are ours to close.
func (s *Server) onReady(u *update, m msg.Message, files []*os.File) {
	defer msg.CloseFiles(files)
	if m.Err != "" {
		u.old.luAsked = false // it resumed by itself
		s.rollback(u, "refused by the old instance: "+m.Err)
		return
	}
	if len(files) == 0 || m.Names[0] != "state" {
		u.old.faulty("faulty", errors.New("lu-ready without its state"))
		return
	}
	u.phase = phaseInit
	u.readyAt = time.Now()
	stopTimer(&u.timer) // from here the new instance's own init deadline rules
	u.progress(fmt.Sprintf("ready: old instance quiescent after %v, handing over state and %d fds",
		time.Since(u.begin).Round(time.Microsecond), len(files)-1))
	names := make([]string, len(m.Names))
	for i, n := range m.Names {
		names[i] = "lu:" + n
	}
	if err := u.new.sendInit(msg.InitLiveUpdate, names, files); err != nil {
		s.rollback(u, "cannot hand the state to the new instance: "+err.Error())
	}
}

// onNewInit: the new instance's init result decides.
func (s *Server) onNewInit(u *update, initErr string) {
	if u.phase != phaseInit {
		u.new.faulty("faulty", errors.New("init-result before its init"))
		return
	}
	if initErr != "" {
		s.rollback(u, "new instance init failed: "+initErr)
		return
	}
	s.commit(u)
}

// commit: the new instance runs; the old one is stopped.
func (s *Server) commit(u *update) {
	svc := u.svc
	stopTimer(&u.timer)
	svc.update = nil
	old := u.old
	svc.spec = u.spec
	for name, f := range u.pending {
		if prev, ok := svc.fdstore[name]; ok {
			prev.Close()
		}
		svc.fdstore[name] = f
	}
	svc.inst = u.new
	u.new.ready()
	old.stop()
	now := time.Now()
	gap := now.Sub(u.begin).Round(time.Microsecond)
	s.log.Info("update committed", "label", svc.spec.Label, "old_pid", old.proc.Pid(), "new_pid", u.new.proc.Pid(), "took", gap,
		"start", u.prepareAt.Sub(u.begin).Round(time.Microsecond),
		"prepare", u.readyAt.Sub(u.prepareAt).Round(time.Microsecond),
		"init", now.Sub(u.readyAt).Round(time.Microsecond))
	u.progress(fmt.Sprintf("committed: pid %d replaces pid %d", u.new.proc.Pid(), old.proc.Pid()))
	u.reply <- control.Reply{Done: true, Message: fmt.Sprintf("%s updated: pid %d -> %d in %v", svc.spec.Label, old.proc.Pid(), u.new.proc.Pid(), gap)}
}

// rollback: the new instance is killed, the old one resumes untouched.
func (s *Server) rollback(u *update, why string) {
	svc := u.svc
	stopTimer(&u.timer)
	svc.update = nil
	u.new.stopping = true // its exit is expected, not a crash
	u.new.proc.Kill()
	for _, f := range u.pending {
		f.Close()
	}
	if u.old.luAsked && !u.old.exited {
		u.old.luAsked = false
		u.old.luCancelled = true
		if err := u.old.conn.TrySend(&msg.Message{Kind: msg.KindLUCancel}); err != nil {
			u.old.sendFailed(err)
		}
	}
	if svc.inst == u.old && !u.old.exited {
		svc.state = control.StateRunning
		s.ensureStandby(svc)
	}
	s.log.Warn("update rolled back", "label", svc.spec.Label, "reason", why, "pid", u.old.proc.Pid())
	u.progress("rolled back: " + why)
	u.reply <- control.Reply{Done: true, Err: fmt.Sprintf("update %s rolled back: %s", svc.spec.Label, why)}
}
