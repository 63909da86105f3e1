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
	env := append(s.env[:len(s.env):len(s.env)], "RS_LABEL="+spec.Label)
	if inst.svc.logFiles.Stdout == nil {
		s.setLog(inst.svc)
	}
	// The goroutine's own copies: the log writer may close its own
	// (a new log mode) while this start is under way.
	out, dupErr := inst.svc.logFiles.Dup()
	go func() {
		if spec.Pids > 0 && proc.Containment().Pids == "" {
			s.log.Warn("pids limit not enforced: rs has no pids controller", "label", spec.Label, "pids", spec.Pids)
		}
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
		if err == nil {
			switch spec.Type {
			case TypeSimple:
				p, drv, err = startSimple(spec, env, out, s.logsErr, exited)
			case TypeNotify:
				p, drv, err = startNotify(spec, env, out, s.logsErr, s.notifyDir, exited)
			default:
				p, drv, err = startSef(spec, env, out, s.logsErr, exited)
			}
			out.Close()
		}
		if err != nil {
			drv = nil // not a typed nil: there is no driver
		}
		s.post(evSpawned{inst: inst, proc: p, drv: drv, err: err})
		close(posted)
	}()
}

// startSef starts spec's binary as a sef service: its channel is the
// first of its files, its stdout and stderr are out's (never rs's own).
func startSef(spec Spec, env []string, out logs.Files, logsErr error, exited func(proc.Exit)) (*proc.Process, *sefDriver, error) {
	if out.Stdout == nil || out.Stderr == nil {
		return nil, nil, fmt.Errorf("no stdout and stderr for the service: %w", logsErr)
	}
	if err := checkBinary(spec.Binary); err != nil {
		return nil, nil, err
	}
	drv, child, chanEnv, err := newSefDriver()
	if err != nil {
		return nil, nil, err
	}
	p, err := proc.Start(proc.Spec{
		Path:   spec.Binary,
		Args:   spec.Args,
		Env:    append(env, chanEnv),
		Files:  []*os.File{child},
		Stdout: out.Stdout,
		Stderr: out.Stderr,
		Limits: spec.limits(),
		Name:   spec.Label,
		Memory: spec.Memory,
		Pids:   spec.Pids,
		Exited: exited,
	})
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
func startNotify(spec Spec, env []string, out logs.Files, logsErr error, dir string, exited func(proc.Exit)) (*proc.Process, *notifyDriver, error) {
	if out.Stdout == nil || out.Stderr == nil {
		return nil, nil, fmt.Errorf("no stdout and stderr for the service: %w", logsErr)
	}
	if err := checkBinary(spec.Binary); err != nil {
		return nil, nil, err
	}
	drv, notifyEnvs, err := newNotifyDriver(dir, spec)
	if err != nil {
		return nil, nil, err
	}
	p, err := proc.Start(proc.Spec{
		Path:   spec.Binary,
		Args:   spec.Args,
		Env:    append(notifyEnv(env), notifyEnvs...),
		Stdout: out.Stdout,
		Stderr: out.Stderr,
		Limits: spec.limits(),
		Name:   spec.Label,
		Memory: spec.Memory,
		Pids:   spec.Pids,
		Exited: exited,
	})
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

// closeFiles closes fds that came from a service, off the loop, in one
// goroutine that ends when the last close returns.
func (s *Server) closeFiles(files ...*os.File) { s.closeHeld(nil, files...) }

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
