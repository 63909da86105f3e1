package rs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// maxStoredFDs bounds a service's fd store.
const maxStoredFDs = 64

// eofGrace: a channel that closes is usually a process that died; its
// exit, which says how it died, follows within microseconds. A process
// still alive this long after closing its channel is faulty.
const eofGrace = 100 * time.Millisecond

// instance is one process of a service. Its fields belong to the loop.
// The server's Mux reads its channel; one goroutine (wait) bridges its
// process's exit to the loop and ends with it.
type instance struct {
	s    *Server
	svc  *service
	id   uint64
	proc *proc.Process
	conn *msg.Conn

	readDone chan struct{} // closed when the channel's last event is posted

	hello        bool // the service said hello
	running      bool // init succeeded
	luAsked      bool // asked to prepare for an update, no verdict sent yet
	luCancelled  bool // lu-cancel sent: one crossing lu-ready is expected
	runningSince time.Time
	stopping     bool   // rs asked it to stop
	standby      bool   // a warm standby, not yet given its init
	exited       bool   // reaped and closed
	replaced     bool   // died and its standby took over before the reap
	fault        string // why rs killed it, for last_exit

	pingSeq   uint64
	pingOut   bool
	pingGroup *pingGroup // the group that pings it; nil when not pinged
	pingSlot  int        // its slot in pingGroup
	pingAt    time.Time  // when the outstanding ping was sent, by the injected clock
	pingSent  time.Time  // the same by the real clock, for the round trip
	timers    [instanceTimers]Timer
}

// startInstance spawns svc's binary and sends init, with the fd store
// attached.
func startInstance(s *Server, svc *service, id uint64, typ msg.InitType) (*instance, error) {
	inst, err := spawnInstance(s, svc, svc.spec, id)
	if err != nil {
		return nil, err
	}
	if err := inst.sendInit(typ, nil, nil); err != nil {
		inst.sendFailed(err)
	}
	return inst, nil
}

// spawnInstance starts spec's binary with a fresh channel and the
// goroutines that serve it; init is sent separately.
func spawnInstance(s *Server, svc *service, spec Spec, id uint64) (*instance, error) {
	if err := checkBinary(spec.Binary); err != nil {
		return nil, err
	}
	mine, theirs, err := msg.Pair()
	if err != nil {
		return nil, err
	}
	p, err := proc.Start(proc.Spec{
		Path:    spec.Binary,
		Args:    spec.Args,
		Env:     append(s.env[:len(s.env):len(s.env)], "RS_LABEL="+spec.Label),
		Channel: theirs,
		Limits:  spec.limits(),
	})
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, err
	}
	conn, err := msg.NewConn(mine)
	if err != nil {
		p.Kill()
		<-p.Done()
		return nil, err
	}
	inst := &instance{s: s, svc: svc, id: id, proc: p, conn: conn, readDone: make(chan struct{})}
	// Stamped packets: a ping's round trip then leaves out the time its
	// pong waited for rs to read it, which at a thousand services is rs's
	// own queueing, not the service's answer.
	err = conn.EnableTimestamps()
	var mux *msg.Mux
	if err == nil {
		mux, err = s.reader()
	}
	if err == nil {
		err = mux.Add(conn, inst)
	}
	if err != nil {
		conn.Close()
		p.Kill()
		<-p.Done()
		return nil, err
	}
	go inst.wait()
	return inst, nil
}

// sendInit sends init with the fd store and extra (named) fds attached,
// and arms the init deadline.
func (inst *instance) sendInit(typ msg.InitType, extraNames []string, extra []*os.File) error {
	svc := inst.svc
	names := make([]string, 0, len(svc.fdstore)+len(extraNames))
	for name := range svc.fdstore {
		names = append(names, name)
	}
	sort.Strings(names)
	files := make([]*os.File, 0, cap(names))
	for _, n := range names {
		files = append(files, svc.fdstore[n])
	}
	names = append(names, extraNames...)
	files = append(files, extra...)
	err := inst.conn.TrySend(&msg.Message{
		Kind:     msg.KindInit,
		Version:  msg.ProtocolVersion,
		InitType: typ,
		Label:    svc.spec.Label,
		Restarts: uint32(svc.restarts),
		Names:    names,
	}, files...)
	if err != nil {
		return err
	}
	inst.arm(timerInit, svc.spec.InitTimeout, 0)
	return nil
}

func checkBinary(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, errors.Unwrap(err))
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("binary %s: not an executable file", path)
	}
	return nil
}

// wait is the bridge from the process's one waiter to the loop. The exit
// is posted after every packet the process sent before it died (its end
// of the channel closes with it), so an init-result followed by a crash
// reads as exactly that. The bound covers a channel end that something
// else still holds open.
func (inst *instance) wait() {
	<-inst.proc.Done()
	t := time.NewTimer(readDrainBound)
	select {
	case <-inst.readDone:
	case <-t.C:
	}
	t.Stop()
	inst.s.post(evExit{inst: inst, exit: inst.proc.Exit()})
}

// readDrainBound bounds how long an exit waits for the channel to drain.
const readDrainBound = time.Second

func (inst *instance) arm(kind timerKind, d time.Duration, seq uint64) {
	stopTimer(&inst.timers[kind])
	s := inst.s
	inst.timers[kind] = s.clock.AfterFunc(d, func() {
		s.post(evTimer{inst: inst, kind: kind, seq: seq})
	})
}

// close releases what the instance holds once its process is gone. The
// reader ends on the closed channel.
func (inst *instance) close() {
	inst.exited = true
	inst.s.pingLeave(inst)
	for i := range inst.timers {
		stopTimer(&inst.timers[i])
	}
	inst.conn.Close()
}

func (inst *instance) label() string { return inst.svc.spec.Label }

// current: the instance is its service's, or the one an update is
// starting, and has not been reaped.
func (inst *instance) current() bool {
	if inst.exited {
		return false
	}
	u := inst.svc.update
	return inst.svc.inst == inst || inst.svc.standby == inst || u != nil && u.new == inst
}

// faulty kills the instance's group; the exit that follows carries reason
// into last_exit. Only the first reason counts.
func (inst *instance) faulty(reason string, err error) {
	if inst.fault != "" || inst.exited {
		return
	}
	if err != nil {
		reason = reason + ": " + err.Error()
	}
	if inst.stopping {
		// Whatever it does while stopping, the stop sequence ends it.
		inst.proc.Kill()
		return
	}
	inst.fault = reason
	inst.s.pingLeave(inst)
	inst.s.log.Warn("faulty, killing", "label", inst.label(), "pid", inst.proc.Pid(), "reason", reason)
	inst.proc.Kill()
}

// stop sends the stop message and starts the bounded stop sequence in a
// goroutine that ends with the process.
func (inst *instance) stop() {
	inst.stopping = true
	inst.s.pingLeave(inst)
	for i := range inst.timers {
		stopTimer(&inst.timers[i])
	}
	_ = inst.conn.TrySend(&msg.Message{Kind: msg.KindStop})
	grace := inst.svc.spec.StopGrace
	go inst.proc.Stop(nil, grace)
}

// sendFailed: a full channel means the service does not read it (faulty);
// a broken one is judged like a closed one.
func (inst *instance) sendFailed(err error) {
	if errors.Is(err, msg.ErrWouldBlock) {
		inst.faulty("faulty", errors.New("does not read its channel"))
		return
	}
	if errors.Is(err, syscall.EPIPE) {
		err = io.EOF
	}
	inst.channelFailed(err)
}

func (inst *instance) channelFailed(err error) {
	// A closed or reset channel (a process that dies with unread packets
	// resets it) is judged after eofGrace; bad packets are faults now.
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		if inst.stopping {
			return
		}
		if inst.s.takeOverEarly(inst) {
			return
		}
		// Pings cannot be answered now; the closed channel is judged
		// instead, after the grace that lets a dying process's exit win.
		inst.s.pingLeave(inst)
		inst.arm(timerEOF, eofGrace, 0)
		return
	}
	inst.faulty("faulty", err)
}

// handle checks a packet against the instance's state: anything out of
// sequence makes the instance faulty.
func (inst *instance) handle(m msg.Message, files []*os.File, at time.Time) {
	if !m.Kind.FromService() {
		msg.CloseFiles(files)
		inst.faulty("faulty", fmt.Errorf("sent %s, which only rs sends", m.Kind))
		return
	}
	u := inst.svc.update
	isNew := u != nil && u.new == inst
	if !inst.hello && m.Kind != msg.KindHello {
		msg.CloseFiles(files)
		inst.faulty("faulty", fmt.Errorf("sent %s before hello", m.Kind))
		return
	}
	if inst.standby && m.Kind != msg.KindHello {
		msg.CloseFiles(files)
		inst.faulty("faulty", fmt.Errorf("standby sent %s before its init", m.Kind))
		return
	}
	switch m.Kind {
	case msg.KindHello:
		if inst.hello || m.Version != msg.ProtocolVersion {
			inst.faulty("faulty", fmt.Errorf("hello out of sequence or protocol version %d (rs speaks %d)", m.Version, msg.ProtocolVersion))
			return
		}
		inst.hello = true
		if isNew {
			inst.s.onHello(u)
		}
	case msg.KindFDStore:
		if isNew {
			// Kept aside: it replaces the stored fd only if the update commits.
			if old, ok := u.pending[m.Names[0]]; ok {
				old.Close()
			}
			u.pending[m.Names[0]] = files[0]
			return
		}
		inst.storeFD(m.Names[0], files[0])
	case msg.KindInitResult:
		if inst.running {
			inst.faulty("faulty", errors.New("second init-result"))
			return
		}
		stopTimer(&inst.timers[timerInit])
		if isNew {
			inst.s.onNewInit(u, m.Err)
			return
		}
		if m.Err != "" {
			inst.faulty("init-failed", errors.New(m.Err))
			return
		}
		inst.ready()
	case msg.KindPong:
		if !inst.pingOut || m.Seq != inst.pingSeq {
			inst.faulty("faulty", fmt.Errorf("pong %d out of sequence (expected %d)", m.Seq, inst.pingSeq))
			return
		}
		inst.pingOut = false
		stopTimer(&inst.timers[timerPingDeadline])
		// A measurement, not a schedule: the real clock, not the injected
		// one, up to when the service sent the pong (the kernel's stamp),
		// not when rs got to it. A wall clock stepped back in between
		// leaves the last figure.
		if rtt := at.Sub(inst.pingSent); rtt > 0 {
			inst.svc.rtt = rtt
		}
	case msg.KindLUReady:
		switch {
		case u != nil && u.old == inst && u.phase == phasePrepare:
			inst.s.onReady(u, m, files)
		case inst.luCancelled:
			// It got ready just as rs cancelled; the cancel resumes it.
			inst.luCancelled = false
			msg.CloseFiles(files)
		default:
			msg.CloseFiles(files)
			inst.faulty("faulty", errors.New("unexpected lu-ready"))
		}
	default:
		msg.CloseFiles(files)
		inst.faulty("faulty", fmt.Errorf("unexpected %s", m.Kind))
	}
}

func (inst *instance) storeFD(name string, f *os.File) {
	store := inst.svc.fdstore
	if old, ok := store[name]; ok {
		old.Close()
	} else if len(store) >= maxStoredFDs {
		f.Close()
		inst.faulty("faulty", fmt.Errorf("fd store full (%d)", maxStoredFDs))
		return
	}
	store[name] = f
	inst.s.log.Debug("fd stored", "label", inst.label(), "name", name)
}

// ready: init succeeded; the instance runs and is pinged.
func (inst *instance) ready() {
	svc := inst.svc
	inst.running = true
	inst.runningSince = inst.s.clock.Now()
	svc.state = control.StateRunning
	svc.started = true
	inst.s.log.Info("ready", "label", inst.label(), "pid", inst.proc.Pid())
	inst.s.pingJoin(inst)
	inst.s.replyUp(svc, control.Reply{Message: fmt.Sprintf("%s running, pid %d", inst.label(), inst.proc.Pid())})
	inst.s.startWaiting()
	inst.s.ensureStandby(svc)
}
