package rs

import (
	"fmt"
	"strconv"
	"time"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/logs"
)

// Failure hooks (config on_failure, on_exit). The loop decides: on_exit
// at the end of an unexpected exit of a service's primary, once the
// policy said what follows (RS_STATE is the state after the exit), and
// on_failure when the service enters failed. It hands the job to a
// goroutine of its own, which starts the hook (startHook), waits for it
// within hook_timeout, kills its process group and cgroup past that,
// closes the dups of the service's log pipes it gave the hook as fds 1
// and 2, and posts evHookDone. Nothing of it runs on the loop but the
// decision, the dup (one fcntl each) and the bookkeeping.
//
// One hook of a service runs at a time. One more may wait behind it (the
// last one due); a hook due while one runs and another waits is dropped
// and logged, except that an on_failure takes the place of a waiting
// on_exit: a crash loop cannot pile hooks up, and never hides its
// failure. A service's log pipes stay while a hook of it runs or waits.
// Hooks never delay the service: its reincarnation is decided and begun
// before the hook is even started. At shutdown no hook is started, a
// waiting one is dropped, and Run waits for the running ones, which
// their bound ends.

// Hook kinds, as their config keys.
const (
	hookFailure = "on_failure"
	hookExit    = "on_exit"
)

// hookJob is one run of a hook as the loop decided it: the service's
// spec then (argv, user, env, workdir) and what the hook is told of it.
type hookJob struct {
	kind string
	argv []string
	spec Spec
	vars []string // RS_REASON, RS_RESTARTS, RS_STATE
}

// hookState is a service's hooks, owned by the loop.
type hookState struct {
	running *hookJob
	queued  *hookJob // due while running ran; at most one
	// inExit: primaryGone is deciding; a failure it leads to runs its
	// hook after on_exit.
	inExit bool
}

// evHookDone: a hook of svc has ended (or could not start); its
// goroutine has closed its fds.
type evHookDone struct{ svc *service }

func (evHookDone) isEvent() {}

// hook: the hook of kind is due for svc. It never blocks.
func (s *Server) hook(svc *service, kind string) {
	argv := svc.spec.OnExit
	if kind == hookFailure {
		argv = svc.spec.OnFailure
	}
	if len(argv) == 0 {
		return
	}
	label := svc.spec.Label
	if s.shutdown != nil {
		s.log.Info("hook not run: rs is shutting down", "label", label, "hook", kind)
		return
	}
	job := &hookJob{kind: kind, argv: argv, spec: svc.spec, vars: []string{
		"RS_REASON=" + svc.lastExit,
		"RS_RESTARTS=" + strconv.Itoa(svc.restarts),
		"RS_STATE=" + svc.state(),
	}}
	h := &svc.hooks
	switch {
	case h.running == nil:
		s.runHook(svc, job)
	case h.queued == nil:
		h.queued = job
	case kind == hookFailure && h.queued.kind == hookExit:
		s.log.Warn("hook dropped: one runs, and on_failure takes the place of the one waiting", "label", label,
			"hook", h.queued.kind, "running", h.running.kind)
		h.queued = job
	default:
		s.log.Warn("hook dropped: one runs and another waits", "label", label, "hook", kind,
			"running", h.running.kind, "reason", svc.lastExit)
	}
}

// runHook hands job to a goroutine of its own, with its own dups of the
// service's log pipes.
func (s *Server) runHook(svc *service, job *hookJob) {
	if svc.logFiles.Stdout == nil {
		s.setLog(svc)
	}
	out, dupErr := svc.logFiles.Dup()
	if dupErr == nil && out.Stdout == nil {
		dupErr = fmt.Errorf("no stdout and stderr for the hook (%v)", s.logsErr)
	}
	svc.hooks.running = job
	s.hooksRunning++
	s.hookWG.Add(1)
	go func() {
		defer s.hookWG.Done()
		if dupErr != nil {
			s.log.Error("hook not run", "label", job.spec.Label, "hook", job.kind, "err", dupErr)
		} else {
			s.execHook(job, out)
			out.Close()
		}
		s.post(evHookDone{svc})
	}()
}

// hookDone: a hook of svc ended; the one waiting runs now.
func (s *Server) hookDone(svc *service) {
	h := &svc.hooks
	h.running = nil
	s.hooksRunning--
	current := s.services[svc.spec.Label] == svc
	if s.logs != nil && current && svc.logFiles.Stdout != nil && svc.instances == 0 {
		s.logs.Ended(svc.spec.Label) // a last line without its newline is written
	}
	if next := h.queued; next != nil {
		h.queued = nil
		if s.shutdown == nil && current {
			s.runHook(svc, next)
			return
		}
		s.log.Info("hook not run: rs is shutting down", "label", svc.spec.Label, "hook", next.kind)
	}
	switch {
	case current:
		s.releaseLog(svc)
	case s.logs != nil && s.services[svc.spec.Label] == nil:
		// svc was removed while its hook ran (forget left the pipes to
		// it): its last lines are written, then the pipes go. A service
		// added again under the label meanwhile got these same pipes
		// (logs.Writer.Add), so they are its now and stay.
		s.logs.Remove(svc.spec.Label)
	}
}

// execHook runs one hook to its end, within its bound, off the loop: as
// the service's processes start (user, group, env_file, env, workdir,
// umask, limits), with out as its stdout and stderr.
func (s *Server) execHook(job *hookJob, out logs.Files) {
	lg := s.log.With("label", job.spec.Label, "hook", job.kind)
	bin := job.argv[0]
	if err := checkBinary(bin); err != nil {
		lg.Error("hook not run", "err", err)
		return
	}
	ps, err := launch(job.spec, s.env, nil)
	if err != nil {
		lg.Error("hook not run", "binary", bin, "err", err)
		return
	}
	ps.Path, ps.Args = bin, job.argv[1:]
	ps.Env = append(ps.Env, job.vars...) // reserved names: not in ps.Env before
	ps.Name = job.spec.Label + ".hook"
	ps.Stdout, ps.Stderr = out.Stdout, out.Stderr
	bound := job.spec.HookTimeout
	if bound <= 0 {
		bound = DefaultHookTimeout
	}
	began := time.Now()
	p, err := startHook(ps)
	if err != nil {
		lg.Error("hook not run", "binary", bin, "err", err)
		return
	}
	lg.Info("hook started", "pid", p.Pid(), "binary", bin)
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-p.Done():
	case <-t.C:
		p.Kill()
		<-p.Done()
		lg.Warn("hook killed: it ran past hook_timeout", "pid", p.Pid(), "hook_timeout", bound)
		return
	}
	took := time.Since(began).Round(time.Microsecond)
	if exit := p.Exit(); !exit.Success() {
		lg.Warn("hook failed", "pid", p.Pid(), "exit", exit.String(), "took", took)
		return
	}
	lg.Info("hook done", "pid", p.Pid(), "took", took)
}

// startHook is where every hook's process is started: a child of rs in
// a process group (and cgroup) of its own, through package proc like
// every service process.
func startHook(ps proc.Spec) (*proc.Process, error) {
	return proc.Start(ps)
}
