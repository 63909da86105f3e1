package rs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/rs/logs"
)

// update-self: rs execs a new binary of itself in place (rs/doc.go,
// "Updating rs itself"). The steps, each off the loop but the two
// looks at the table:
//
//  1. the loop checks nothing is under way that cannot be carried
//     (selfBlocker) and makes a first table;
//  2. the connection's goroutine writes it to a memfd and runs the new
//     binary on it, `rs --check-table FD`, bounded by selfCheckTime: a
//     binary that cannot read this table's version, or does not run,
//     fails here and nothing changed;
//  3. the loop freezes: it asks the Mux, every notify reader and the
//     log writer to stop reading once what they read is delivered, and
//     sends no ping; when all have said so it checks again and makes the
//     table the exec carries;
//  4. the connection's goroutine writes it to a memfd and execs the new
//     binary on the spawner thread (proc.Exec), every fd the table
//     names kept open. If the exec fails the loop thaws.
//
// The new rs adopts every service (Adopt); if it cannot, it execs the
// old binary (from an fd of it, $RS_SELF_OLD) with the same table.

// selfCheckTime bounds the new binary's --check-table run, and
// selfFreezeTime the freeze.
const (
	selfCheckTime  = 10 * time.Second
	selfFreezeTime = 3 * time.Second
)

// The self-update's events.
type (
	// evSelf: a step of update-self for the loop (op), answered on reply.
	evSelf struct {
		op      selfOp
		gen     uint64 // selfThaw: the freeze to end
		token   string
		why     string
		newPath string
		peer    *control.Peer // who asked; nil: rs itself
		reply   chan selfReply
	}
	// evSelfPaused: one of the readers stopped for the freeze gen (logs:
	// the log writer, with its pipes).
	evSelfPaused struct {
		gen     uint64
		fromLog bool
		logs    map[string]logs.Held
		err     error
	}
	// evAdopted: the adopted table is in place; its instances join the
	// pings.
	evAdopted struct{}
)

func (evSelf) isEvent()       {}
func (evSelfPaused) isEvent() {}
func (evAdopted) isEvent()    {}

type selfOp uint8

const (
	selfSnapshot selfOp = iota // a first table, for the check
	selfFreeze                 // freeze and make the table to carry
	selfThaw                   // the exec did not happen
	selfResult                 // what came of an update-self (token)
)

type selfReply struct {
	table *Table
	reply control.Reply // selfResult
	err   error
}

// selfState is a freeze under way (the loop's).
type selfState struct {
	gen   uint64
	wait  int // readers still to stop
	err   error
	logs  map[string]logs.Held
	ev    evSelf
	taken bool // the table went to the exec
}

// selfOutcome is what came of the last update-self here, for the
// client that asked, which reconnects after the exec (selfResult).
type selfOutcome struct {
	token string
	reply control.Reply
}

func (s *Server) selfEvent(ev evSelf) {
	switch ev.op {
	case selfSnapshot:
		if ev.peer != nil {
			if err := s.refused(control.OpUpdateSelf, *ev.peer); err != nil {
				ev.reply <- selfReply{err: err}
				return
			}
		}
		if err := s.selfBlocker(); err != nil {
			ev.reply <- selfReply{err: err}
			return
		}
		ev.reply <- selfReply{table: s.snapshot(ev, nil)}
	case selfFreeze:
		if err := s.selfBlocker(); err != nil {
			ev.reply <- selfReply{err: err}
			return
		}
		st := &selfState{gen: ev.gen, ev: ev, wait: 1}
		s.self = st
		gen := st.gen
		s.mux.Pause(func() { s.post(evSelfPaused{gen: gen}) })
		if s.logs != nil {
			st.wait++
			s.logs.Freeze(func(h map[string]logs.Held, err error) {
				go s.post(evSelfPaused{gen: gen, fromLog: true, logs: h, err: err})
			})
		}
		for inst := range s.live {
			if d, ok := inst.drv.(*notifyDriver); ok {
				st.wait++
				d.pauseRead(func() { s.post(evSelfPaused{gen: gen}) })
			}
		}
	case selfThaw:
		if s.self != nil && s.self.gen == ev.gen {
			s.thaw()
		}
	case selfResult:
		if o := s.selfOutcome; o != nil && o.token == ev.token {
			ev.reply <- selfReply{reply: o.reply}
			return
		}
		ev.reply <- selfReply{err: control.Errorf(control.CodeUnknown, "no update-self %s here", ev.token)}
	}
}

func (s *Server) selfPaused(ev evSelfPaused) {
	st := s.self
	if st == nil || st.gen != ev.gen || st.taken {
		return
	}
	if ev.err != nil && st.err == nil {
		st.err = ev.err
	}
	if ev.fromLog {
		st.logs = ev.logs
	}
	if st.wait--; st.wait > 0 {
		return
	}
	err := st.err
	if err == nil {
		s.self = nil // selfBlocker looks at the rest
		err = s.selfBlocker()
		s.self = st
	}
	if err != nil {
		s.thaw()
		st.ev.reply <- selfReply{err: err}
		return
	}
	st.taken = true
	st.ev.reply <- selfReply{table: s.snapshot(st.ev, st.logs)}
}

// thaw ends the freeze: the exec did not happen (or the freeze did not
// complete).
func (s *Server) thaw() {
	s.self = nil
	s.mux.Resume()
	if s.logs != nil {
		s.logs.Thaw()
	}
	for inst := range s.live {
		if d, ok := inst.drv.(*notifyDriver); ok {
			d.resumeRead()
		}
	}
}

// selfBlocker says why the table cannot be carried across an exec now,
// nil if it can. rs refuses rather than carry half of something under
// way: a live update, a standby, an instance starting or stopping, a
// command waiting on a service, a hook, a removal, a shutdown.
func (s *Server) selfBlocker() error {
	busy := func(f string, a ...any) error {
		return control.Errorf(control.CodeBusy, "update-self refused: "+f+"; nothing changed", a...)
	}
	switch {
	case s.self != nil:
		return busy("an update-self is under way")
	case s.shutdown != nil:
		return control.ErrShutdown
	case s.mux == nil:
		return busy("rs has no channel reader (%v)", s.muxErr)
	case len(s.removing) > 0:
		return busy("a service is being removed")
	case s.downsPending > 0 || s.stopsPending:
		return busy("a stop is under way")
	case s.hooksRunning > 0:
		return busy("a hook runs")
	}
	primaries := 0
	for _, label := range s.order {
		svc := s.services[label]
		if svc == nil {
			continue
		}
		switch {
		case svc.update != nil:
			return busy("%s: a live update is under way", label)
		case svc.standby != nil:
			return busy("%s: has a standby (service unclone it first)", label)
		case svc.restartWant || len(svc.upWaiters) > 0 || len(svc.downWaiters) > 0 || len(svc.restartWaiters) > 0 || len(svc.cloneWaiters) > 0:
			return busy("%s: a command waits on it", label)
		case len(svc.paused) > 0:
			return busy("%s: its listeners are paused (failed or down); take it up or remove it first", label)
		case armed(svc, tBackoff):
			return busy("%s: in backoff", label)
		}
		p := svc.primary
		if p == nil {
			continue
		}
		primaries++
		switch {
		case p.reason != "":
			return busy("%s: being killed (%s)", label, p.reason)
		case p.phase != phaseRunning || p.selfStop:
			return busy("%s: %s", label, svc.state())
		case p.reloading:
			return busy("%s: reloading", label)
		}
		if d, ok := p.drv.(*notifyDriver); ok && d.mainPid.Load() != 0 {
			return busy("%s: its MAINPID= is not carried across update-self", label)
		}
	}
	if len(s.live) != primaries {
		return busy("an instance is ending")
	}
	return nil
}

// snapshot is the table as it stands, with the log writer's pipes
// (nil: none, for the check). On the loop; no I/O.
func (s *Server) snapshot(ev evSelf, pipes map[string]logs.Held) *Table {
	t := &Table{Version: TableVersion, Token: ev.token, Why: ev.why, OldPath: s.exePath, NewPath: ev.newPath,
		Started: s.started, Carry: map[string]int{}, NotifySeq: notifySeq.Load()}
	for name, fd := range s.carry {
		t.Carry[name] = fd
	}
	for _, label := range s.order {
		svc := s.services[label]
		if svc == nil {
			continue
		}
		ts := tService{Spec: svc.spec, Failed: svc.failed, Waiting: svc.waiting, RanOnce: svc.ranOnce, StopWant: svc.stopWant,
			Fails: svc.fails, History: svc.history, WantStandby: svc.wantStandby, Restarts: svc.restarts,
			LastExit: svc.lastExit, StatusText: svc.statusText, RTT: svc.rtt}
		names, files := storeNames(svc.fdstore)
		for i, n := range names {
			ts.FDStore = append(ts.FDStore, tFD{Name: n, FD: rawFD(files[i])})
		}
		for _, l := range svc.listeners {
			ts.Listeners = append(ts.Listeners, tFD{Name: l.name, FD: rawFD(l.f)})
		}
		if h, ok := pipes[label]; ok && svc.logFiles.Stdout != nil {
			ts.Log = &h
		}
		if p := svc.primary; p != nil {
			ti := &tInstance{Proc: p.proc.Held(), RunningSince: p.runningSince, PingSeq: p.pingSeq, PingOut: p.pingOut, Chan: -1, NotifyFD: -1}
			switch d := p.drv.(type) {
			case *sefDriver:
				ti.Chan = d.conn.FD()
				ti.LUCancelled = d.luCancelled
			case *notifyDriver:
				ti.Notify = d.path
				if rc, err := d.conn.SyscallConn(); err == nil {
					rc.Control(func(u uintptr) { ti.NotifyFD = int(u) })
				}
			}
			ts.Primary = ti
		}
		t.Services = append(t.Services, ts)
	}
	return t
}

// ask posts a step to the loop and waits for its answer, bounded.
func (s *Server) ask(ev evSelf, d time.Duration) (selfReply, error) {
	ev.reply = make(chan selfReply, 1)
	s.post(ev)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ev.reply:
		return r, r.err
	case <-s.done:
		return selfReply{}, control.ErrShutdown
	case <-t.C:
		return selfReply{}, control.Errorf(control.CodeBusy, "update-self: rs's loop did not answer within %v; nothing changed", d)
	}
}

// handleUpdateSelf is update-self, on the connection's goroutine. On
// success it does not return: the process is the new rs, and the client
// asks it what came of it (OpUpdateSelfResult, with the same token).
func (s *Server) handleUpdateSelf(req control.Request, peer control.Peer, progress func(string)) control.Reply {
	if req.Op == control.OpUpdateSelfResult {
		r, err := s.ask(evSelf{op: selfResult, token: req.Token}, 5*time.Second)
		if err != nil {
			return control.Failure(err)
		}
		return r.reply
	}
	bin := req.Binary
	if bin == "" {
		bin = s.exePath
	}
	if err := checkBinary(bin); err != nil {
		return control.Failure(control.Errorf(control.CodeInvalid, "update-self: %w; nothing changed", err))
	}
	token := req.Token
	if token == "" {
		token = newToken()
	}
	return control.Failure(s.updateSelf(bin, token, "update-self", &peer, progress))
}

// updateSelf execs bin in place with the table (steps 1 to 4 above),
// for peer (nil: rs's own re-exec after a panic, which skips the check
// of its own binary). It returns only when rs goes on as it was, with
// why.
func (s *Server) updateSelf(bin, token, why string, peer *control.Peer, progress func(string)) error {
	step := evSelf{op: selfSnapshot, token: token, why: why, newPath: bin, peer: peer}
	r, err := s.ask(step, 5*time.Second)
	if err != nil {
		return err
	}
	if peer != nil {
		progress("checking " + bin + " --check-table")
		if err := checkNew(bin, r.table); err != nil {
			s.log.Warn("update-self: the new binary failed its check; nothing changed", "binary", bin, "err", err)
			return control.Errorf(control.CodeFailed, "update-self rolled back: %s failed --check-table: %w; nothing changed", bin, err)
		}
	}
	step.op, step.gen = selfFreeze, s.selfGen.Add(1)
	r, err = s.ask(step, selfFreezeTime)
	if err != nil {
		s.post(evSelf{op: selfThaw, gen: step.gen})
		return err
	}
	err = s.execSelf(bin, r.table)
	s.post(evSelf{op: selfThaw, gen: step.gen})
	s.log.Error("update-self: exec failed; rs goes on as it was", "binary", bin, "err", err)
	return control.Errorf(control.CodeFailed, "update-self rolled back: %w", err)
}

func newToken() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkNew runs bin --check-table on t, off the loop, bounded.
func checkNew(bin string, t *Table) error {
	f, err := writeTable(t)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), selfCheckTime)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--check-table", "3")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limited{&out, 4096}, &limited{&out, 4096}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := proc.StartCmd(cmd); err != nil {
		return err
	}
	err = proc.WaitCmd(cmd)
	if err != nil {
		line := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(line, '\n'); i >= 0 {
			line = line[i+1:]
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %v", selfCheckTime)
		}
		if line != "" {
			return fmt.Errorf("%w: %s", err, line)
		}
		return err
	}
	return nil
}

// limited keeps the first n bytes written to it.
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// execSelf writes t and execs bin in place with it. It returns only if
// the exec failed.
func (s *Server) execSelf(bin string, t *Table) error {
	f, err := writeTable(t)
	if err != nil {
		return err
	}
	defer f.Close()
	tfd := rawFD(f)
	keep := append(t.fds(), tfd)
	base := s.execEnv
	if base == nil {
		base = os.Environ()
	}
	env := selfEnv(base, tfd, -1, "")
	if s.exe != nil {
		efd := rawFD(s.exe)
		keep = append(keep, efd)
		env = selfEnv(base, tfd, efd, "")
	}
	argv := append([]string{bin}, s.args...)
	s.log.Info("update-self: exec", "binary", bin, "services", len(t.Services), "why", t.Why)
	s.flushOwnLog()
	return proc.Exec(bin, argv, env, keep)
}

// selfEnv is env with the exec's own variables set (an fd < 0: unset).
func selfEnv(env []string, table, old int, rollback string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k != EnvTable && k != EnvOldExe && k != EnvRollback {
			out = append(out, kv)
		}
	}
	if table >= 0 {
		out = append(out, EnvTable+"="+strconv.Itoa(table))
	}
	if old >= 0 {
		out = append(out, EnvOldExe+"="+strconv.Itoa(old))
	}
	if rollback != "" {
		out = append(out, EnvRollback+"="+rollback)
	}
	return out
}

// flushOwnLog gives rs's own log a moment to be written before the
// exec ends its queue.
func (s *Server) flushOwnLog() {
	if s.flushLog != nil {
		s.flushLog()
	}
}

// Rollback is what a new rs that cannot take the table (why) does: it
// execs the old binary, an fd of which crossed the exec (old, from
// $RS_SELF_OLD), with the same table (the memfd tableFD); the old rs
// adopts it and tells the client why. With t (it was read) the fds it
// names are kept; without, every fd this process has open, since the
// table's cannot be told apart. again: this is a rollback already, and
// there is nothing to go back to. It returns only if there is no exec;
// the services die with this process then.
func Rollback(why string, args []string, tableFD, old string, again bool, t *Table) error {
	if old == "" || tableFD == "" {
		return fmt.Errorf("update-self: no old binary to go back to (%s)", why)
	}
	if again {
		return fmt.Errorf("update-self: the old binary could not take the table either: %s", why)
	}
	oldFD, err1 := strconv.Atoi(old)
	tfd, err2 := strconv.Atoi(tableFD)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("update-self: bad $%s or $%s (%s)", EnvOldExe, EnvTable, why)
	}
	var keep []int
	if t != nil {
		keep = append(t.fds(), tfd, oldFD)
	} else {
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				keep = append(keep, fd)
			}
		}
	}
	path := "/proc/self/fd/" + old
	env := selfEnv(os.Environ(), tfd, oldFD, strings.ReplaceAll(why, "\n", " "))
	return proc.Exec(path, append([]string{path}, args...), env, keep)
}
