package rs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// Adopt takes over the table an old rs handed over with its exec in
// place (selfupdate.go): every service as it was, every running
// instance as it runs (same pid, its channel, its pings, its log pipes),
// no restart. Call it after New and before Run, and before the orphan
// reaper starts (proc.Adopt). An instance that is no child of rs any
// more (it ended in the exec's window and was reaped) is started again
// as a crash would be. rollback is $RS_SELF_ROLLBACK: the new rs this
// table went to gave up for that reason, and this is the old binary
// again. It returns how many instances it adopted.
func (s *Server) Adopt(t *Table, rollback string) (int, error) {
	if t.Version != TableVersion {
		return 0, fmt.Errorf("%w: version %d", ErrTableVersion, t.Version)
	}
	if !t.Started.IsZero() {
		s.started = t.Started
	}
	for cur := notifySeq.Load(); cur < t.NotifySeq && !notifySeq.CompareAndSwap(cur, t.NotifySeq); cur = notifySeq.Load() {
	}
	adopted := 0
	for _, ts := range t.Services {
		label := ts.Spec.Label
		if _, ok := s.services[label]; ok || label == "" {
			return adopted, fmt.Errorf("table: service %q twice", label)
		}
		svc := s.add(ts.Spec)
		svc.failed, svc.waiting, svc.ranOnce, svc.stopWant = ts.Failed, ts.Waiting, ts.RanOnce, ts.StopWant
		svc.fails, svc.history, svc.wantStandby, svc.restarts = ts.Fails, ts.History, ts.WantStandby, ts.Restarts
		svc.lastExit, svc.statusText, svc.rtt = ts.LastExit, ts.StatusText, ts.RTT
		for _, f := range ts.FDStore {
			svc.fdstore[f.Name] = adoptFile(f.FD, f.Name)
		}
		for _, f := range ts.Listeners {
			svc.listeners = append(svc.listeners, heldListener{name: f.Name, f: adoptFile(f.FD, f.Name)})
		}
		if l := ts.Log; l != nil {
			if s.logs == nil {
				return adopted, fmt.Errorf("%s: no log writer for its pipes: %w", label, s.logsErr)
			}
			files, err := s.logs.Adopt(label, svc.spec.logConfig(), *l)
			if err != nil {
				return adopted, err
			}
			svc.logFiles = files
		}
		if ts.Primary == nil {
			continue
		}
		if err := s.adoptInstance(svc, ts.Primary); err != nil {
			s.log.Warn("update-self: an instance was not adopted; it starts again", "label", label, "pid", ts.Primary.Proc.Pid, "err", err)
			svc.lastExit = "lost across update-self: " + err.Error()
			svc.waiting = true
			continue
		}
		adopted++
	}
	msg := fmt.Sprintf("rs updated: pid %d, %d services adopted (%s)", os.Getpid(), adopted, t.NewPath)
	reply := control.Reply{Message: msg}
	if rollback != "" {
		reply = control.Failure(control.Errorf(control.CodeFailed, "update-self rolled back: %s: %s", t.NewPath, rollback))
		msg = "update-self rolled back: " + rollback
	}
	s.selfOutcome = &selfOutcome{token: t.Token, reply: reply}
	s.log.Info(msg, "services", len(t.Services), "instances", adopted, "why", t.Why, "from", t.OldPath)
	s.post(evAdopted{})
	return adopted, nil
}

// adoptInstance makes the running primary of svc from ti.
func (s *Server) adoptInstance(svc *service, ti *tInstance) error {
	inst := &instance{svc: svc, spec: svc.spec, role: rolePrimary, phase: phaseRunning,
		runningSince: ti.RunningSince, pingSeq: ti.PingSeq, pingOut: ti.PingOut}
	var (
		drv    driver
		attach func() error
	)
	closeFDs := func() {}
	switch svc.spec.Type {
	case TypeSef:
		if ti.Chan < 0 {
			return errors.New("no channel in the table")
		}
		conn, err := msg.NewConn(adoptFile(ti.Chan, "channel"))
		if err == nil {
			err = conn.EnableTimestamps()
		}
		if err != nil {
			return fmt.Errorf("channel: %w", err)
		}
		d := &sefDriver{conn: conn, inst: inst, hello: true, initSent: true, initResult: true,
			pingSeq: ti.PingSeq, pingOut: ti.PingOut, luCancelled: ti.LUCancelled}
		drv, closeFDs = d, d.close
		attach = func() error {
			d.proc = inst.proc
			if s.mux == nil {
				return s.muxErr
			}
			return s.mux.Add(d.conn, d)
		}
	case TypeNotify:
		if ti.NotifyFD < 0 {
			return errors.New("no notify socket in the table")
		}
		f := adoptFile(ti.NotifyFD, ti.Notify)
		c, err := net.FileConn(f) // a dup
		f.Close()
		if err != nil {
			return fmt.Errorf("notify socket: %w", err)
		}
		d := &notifyDriver{path: ti.Notify, conn: c.(*net.UnixConn), spec: svc.spec, adopted: true, ready: true}
		drv, closeFDs = d, d.close
		attach = func() error { return d.attach(s, inst) }
	case TypeSimple:
		d, err := newSimpleDriver(svc.spec, checkLaunchOf(svc.spec.Label, simpleLaunchSpec(svc.spec, s.env)))
		if err != nil {
			return err
		}
		d.adopted = true
		drv, closeFDs = d, d.close
		attach = func() error {
			d.proc = inst.proc
			return d.attach(s, inst)
		}
	default:
		return fmt.Errorf("type %q", svc.spec.Type)
	}
	// The waiter may post its reaping before the loop runs; the loop
	// takes it after evAdopted (the channel keeps order).
	p, err := proc.Adopt(ti.Proc, func(exit proc.Exit) { s.post(evReaped{inst: inst, exit: exit}) })
	if err != nil {
		closeFDs()
		return err
	}
	inst.proc, inst.drv, inst.cgroup = p, drv, p.Cgroup
	s.live[inst] = struct{}{}
	svc.instances++
	svc.primary = inst
	if err := attach(); err != nil {
		// Adopted but deaf: a fault, as for a fresh spawn.
		s.post(evSignal{inst: inst, sig: signal{kind: sigFault, reason: "update-self", err: err}})
	}
	return nil
}

// adopted: on the loop, the table is in place: the running instances
// join the pings (a ping out at the exec waits for its pong as it
// would have), and what waits to start starts.
func (s *Server) adopted() {
	now := s.clock.Now()
	for inst := range s.live {
		if inst.phase != phaseRunning || inst.reason != "" || inst.pingGroup != nil {
			continue
		}
		if _, ok := inst.drv.(*sefDriver); !ok {
			inst.pingOut = false // the protocol's own pace answers again
		}
		if inst.pingOut {
			inst.pingAt, inst.pingSent = now, time.Now()
			if d, p := inst.spec.pingDeadline(), inst.spec.pingPeriod(); d < p {
				s.arm(inst, tPing, d)
			}
		}
		s.pingJoin(inst)
		s.emit(control.Event{Label: inst.label(), Event: EventAdopted, Pid: inst.pid()})
	}
	for _, svc := range s.services {
		if svc.logFiles.Stdout != nil && svc.instances == 0 {
			s.releaseLog(svc)
		}
		if svc.failed && svc.spec.FailedRetry > 0 {
			s.arm(svc, tRetry, svc.spec.FailedRetry) // its timer did not cross the exec
		}
		if svc.primary != nil {
			s.ensureStandby(svc)
		}
	}
	s.startWaiting()
}
