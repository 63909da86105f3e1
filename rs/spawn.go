package rs

import (
	"errors"
	"fmt"
	"os"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/logs"
)

// What could block stays off the loop: starting a process (stat, cgroup
// mkdir and limits, fork, exec, prlimit) happens in a goroutine per
// spawn, and closing fds a service handed over (a socket with SO_LINGER
// set waits out its linger time in close) in a goroutine per batch.

// startProcess starts inst's process off the loop, in a goroutine that
// posts evSpawned and ends. The process's own waiter (package proc) posts
// evReaped once it has reaped the process, never before evSpawned.
func (s *Server) startProcess(inst *instance) {
	spec := inst.spec
	env := s.env
	if inst.svc.logFiles.Stdout == nil {
		s.setLog(inst.svc)
	}
	// The goroutine's own copies: the log writer may close its own
	// (a new log mode) while this start is under way; and of the
	// listeners the service holds.
	out, dupErr := inst.svc.logFiles.Dup()
	held, err := dupListeners(inst.svc.listeners)
	if dupErr == nil {
		dupErr = err
	}
	fresh := len(inst.svc.listeners) == 0 && len(spec.Listen) > 0
	// A notify service gets its fd store back as systemd hands it: after
	// the listeners, named in LISTEN_FDNAMES.
	var stored []heldListener
	if spec.Type == TypeNotify && len(inst.svc.fdstore) > 0 && dupErr == nil {
		names, files := storeNames(inst.svc.fdstore)
		for i := range names {
			stored = append(stored, heldListener{name: names[i], f: files[i]})
		}
		stored, dupErr = dupListeners(stored)
	}
	go func() {
		if spec.Pids > 0 && proc.Containment().Pids == "" {
			s.log.Warn("pids limit not enforced: rs has no pids controller", "label", spec.Label, "pids", spec.Pids)
		}
		// made: sockets made now (the first spawn), this goroutine's
		// until the loop adopts them with evSpawned; held: copies of those
		// the service holds, this spawn's own.
		var made []heldListener
		posted := make(chan struct{})
		exited := func(exit proc.Exit) {
			<-posted
			s.post(evReaped{inst: inst, exit: exit})
		}
		var (
			p   *proc.Process
			drv driver
		)
		err := dupErr
		pass := held
		if err == nil && fresh {
			made, err = s.makeListeners(spec)
			pass = made
		}
		pass = append(pass[:len(pass):len(pass)], stored...)
		if err == nil {
			switch spec.Type {
			case TypeSimple:
				p, drv, err = startSimple(spec, env, pass, out, s.logsErr, exited)
			case TypeNotify:
				p, drv, err = startNotify(spec, env, pass, out, s.logsErr, s.notifyDir, exited)
			default:
				p, drv, err = startSef(spec, env, pass, out, s.logsErr, exited)
			}
		}
		out.Close()
		for _, l := range append(held, stored...) {
			l.f.Close()
		}
		if err != nil {
			drv = nil // not a typed nil: there is no driver
		}
		s.post(evSpawned{inst: inst, proc: p, drv: drv, err: err, listeners: made})
		close(posted)
	}()
}

// makeListeners makes the sockets of spec's listen, owned by its user.
func (s *Server) makeListeners(spec Spec) ([]heldListener, error) {
	cred, err := credential(spec)
	if err != nil {
		return nil, err
	}
	ls, err := openListeners(spec, cred)
	if err == nil {
		s.log.Info("listening for the service", "label", spec.Label, "listen", spec.Listen)
	}
	return ls, err
}

// startSpec is what every type's start begins with: the checks, and
// the proc.Spec of the process (launch) with out as its stdout and
// stderr.
func startSpec(spec Spec, env []string, listeners []heldListener, out logs.Files, logsErr error, exited func(proc.Exit)) (proc.Spec, error) {
	if out.Stdout == nil || out.Stderr == nil {
		return proc.Spec{}, fmt.Errorf("no stdout and stderr for the service: %w", logsErr)
	}
	if err := checkBinary(spec.Binary); err != nil {
		return proc.Spec{}, err
	}
	ps, err := launch(spec, env, listeners)
	if err != nil {
		return proc.Spec{}, err
	}
	ps.Stdout, ps.Stderr, ps.Exited = out.Stdout, out.Stderr, exited
	return ps, nil
}

// startSef starts spec's binary as a sef service: the listeners at fd
// 3, 4, ..., its channel after them; its stdout and stderr are out's
// (never rs's own).
func startSef(spec Spec, env []string, listeners []heldListener, out logs.Files, logsErr error, exited func(proc.Exit)) (*proc.Process, *sefDriver, error) {
	ps, err := startSpec(spec, env, listeners, out, logsErr, exited)
	if err != nil {
		return nil, nil, err
	}
	drv, child, chanEnv, err := newSefDriver(proc.FirstFD + len(ps.Files))
	if err != nil {
		return nil, nil, err
	}
	ps.Env = append(ps.Env, chanEnv)
	ps.Files = append(ps.Files, child)
	p, err := proc.Start(ps)
	child.Close()
	if err != nil {
		drv.close()
		return nil, nil, err
	}
	drv.proc = p
	return p, drv, nil
}

// startNotify starts spec's binary as a notify service: its notify
// socket is made in dir and named by NOTIFY_SOCKET; it gets no channel.
func startNotify(spec Spec, env []string, listeners []heldListener, out logs.Files, logsErr error, dir string, exited func(proc.Exit)) (*proc.Process, *notifyDriver, error) {
	ps, err := startSpec(spec, env, listeners, out, logsErr, exited)
	if err != nil {
		return nil, nil, err
	}
	drv, notifyEnvs, err := newNotifyDriver(dir, spec)
	if err != nil {
		return nil, nil, err
	}
	ps.Env = append(ps.Env, notifyEnvs...)
	if spec.Period > 0 {
		ps.PidEnv = append(ps.PidEnv, "WATCHDOG_PID")
	}
	p, err := proc.Start(ps)
	if err != nil {
		drv.close()
		return nil, nil, err
	}
	drv.proc = p
	return p, drv, nil
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

// closeHeld is closeFiles for fds of svc: until they are closed they
// count in its fd budget (a socket with SO_LINGER set can take its linger
// time to close, and a service replacing such sockets in a loop must not
// pile them up in rs).
func (s *Server) closeHeld(svc *service, files ...*os.File) {
	if len(files) == 0 {
		return
	}
	n := int64(len(files))
	s.closing.Add(n)
	if svc != nil {
		svc.closing.Add(n)
	}
	go func() {
		for _, f := range files {
			f.Close()
			s.closing.Add(-1)
			if svc != nil {
				svc.closing.Add(-1)
			}
		}
	}()
}
